use super::*;
use serde_json::json;

fn fields(problems: &[ArgProblem]) -> Vec<&str> {
    problems.iter().map(|p| p.field.as_str()).collect()
}

fn message_at<'a>(problems: &'a [ArgProblem], field: &str) -> &'a str {
    let found = problems.iter().find(|p| p.field == field);
    &found
        .unwrap_or_else(|| panic!("no problem at {field}: {problems:?}"))
        .message
}

fn one_problem(args: Value) -> ArgProblem {
    let problems = check(&args, false);
    assert_eq!(problems.len(), 1, "{args}: {problems:?}");
    problems.into_iter().next().unwrap()
}

#[test]
fn the_wandb_example_parses_to_engine_numbers() {
    let args = json!({"gpus": "all", "env": ["A=1", "B=2"], "shm-size": "8g",
        "memory": "16g", "cpus": 1.5, "ulimit": ["nofile=1024:2048"]});
    let parsed = parse(&args).unwrap();
    assert_eq!(parsed.gpus, Some(Gpus::All));
    assert_eq!(
        parsed.env,
        [("A".into(), "1".into()), ("B".into(), "2".into())]
    );
    assert_eq!(parsed.shm_size, Some(8 << 30));
    assert_eq!(parsed.memory, Some(16 << 30));
    assert_eq!(parsed.nano_cpus, Some(1_500_000_000));
    let nofile = Ulimit {
        name: "nofile".into(),
        soft: 1024,
        hard: 2048,
    };
    assert_eq!(parsed.ulimits, [nofile]);
}

#[test]
fn sandbox_escapes_are_refused_each_at_its_field() {
    let args = json!({"volume": "/:/host", "privileged": true, "network": "host",
        "cap-add": "SYS_ADMIN", "device": "/dev/kvm"});
    let problems = check(&args, false);
    let mut got = fields(&problems);
    got.sort_unstable();
    let want = ["cap-add", "device", "network", "privileged", "volume"]
        .map(|k| format!("resource_args.{k}"));
    assert_eq!(got, want);
    for p in &problems {
        assert!(p.message.contains("is refused"), "{p}");
        assert!(p.message.contains(ALLOWED), "{p}");
    }
    assert!(parse(&args).is_err());
}

#[test]
fn unknown_and_unsupported_flags_are_refused_too() {
    let problems = check(
        &json!({"user": "root", "rm": true, "cpu-rt-runtime": 1}),
        false,
    );
    assert_eq!(problems.len(), 3);
    assert!(message_at(&problems, "resource_args.rm").contains("allow-list"));
    assert!(message_at(&problems, "resource_args.cpu-rt-runtime").contains("does not pass"));
}

#[test]
fn a_placeholder_passes_only_in_a_template() {
    let args = json!({"memory": "{{mem}}", "env": ["A={{a}}", "{{pair}}"],
        "command": ["python", "{{script}}"]});
    assert_eq!(check(&args, true), []);
    let problems = check(&args, false);
    assert_eq!(
        fields(&problems),
        ["resource_args.env[1]", "resource_args.memory"]
    );
    // Keys are still checked in a template.
    let problems = check(&json!({"volume": "{{path}}"}), true);
    assert_eq!(fields(&problems), ["resource_args.volume"]);
}

#[test]
fn a_bare_env_name_is_refused_as_a_leak() {
    let problem = one_problem(json!({"env": ["A=1", "WANDB_API_KEY"]}));
    assert_eq!(problem.field, "resource_args.env[1]");
    assert!(problem.message.contains("leak"), "{problem}");
    let problem = one_problem(json!({"e": "=x"}));
    assert_eq!(problem.field, "resource_args.e");
}

#[test]
fn sizes_follow_docker_syntax() {
    for (text, bytes) in [
        ("1.5g", 1_610_612_736),
        ("512m", 512 << 20),
        ("100k", 102_400),
        ("1024", 1024),
        ("16GB", 16 << 30),
        ("2kb", 2048),
        ("3MiB", 3 << 20),
        ("7b", 7),
        ("1 t", 1 << 40),
    ] {
        assert_eq!(parse_size(text), Some(bytes), "{text}");
    }
    for bad in [
        "",
        "g",
        "1.5.3g",
        "1x",
        "1i",
        ".5g",
        "5.g",
        "99999999999p",
        "1gg",
    ] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
    let parsed = parse(&json!({"shm-size": 1024, "memory-reservation": "1.5g"})).unwrap();
    assert_eq!(parsed.shm_size, Some(1024));
    assert_eq!(parsed.memory_reservation, Some(1_610_612_736));
}

#[test]
fn every_problem_is_reported_naming_the_key_as_written_and_the_value() {
    let args = json!({"--memory": "-1g", "shm_size": "lots", "cpus": 0, "pids-limit": -2,
        "ulimit": ["nofile=2048:1024", "bogus=1"]});
    let problems = check(&args, false);
    assert_eq!(problems.len(), 6, "{problems:?}");
    assert!(message_at(&problems, "resource_args.--memory").contains("\"-1g\" is negative"));
    assert!(message_at(&problems, "resource_args.shm_size").contains("\"lots\""));
    assert!(message_at(&problems, "resource_args.cpus").contains("0 is out of range"));
    assert!(message_at(&problems, "resource_args.pids-limit").contains("-2"));
    assert!(message_at(&problems, "resource_args.ulimit[0]").contains("above the hard"));
    assert!(message_at(&problems, "resource_args.ulimit[1]").contains("\"bogus\""));
}

#[test]
fn dashes_underscores_and_short_forms_name_the_same_flags() {
    let args = json!({"-m": "1g", "--shm_size": "64m", "e": "A=1", "w": "/work",
        "pids_limit": "100", "memory-swap": -1, "cpuset-cpus": 0});
    let parsed = parse(&args).unwrap();
    assert_eq!(parsed.memory, Some(1 << 30));
    assert_eq!(parsed.shm_size, Some(64 << 20));
    assert_eq!(parsed.env, [("A".into(), "1".into())]);
    assert_eq!(parsed.workdir.as_deref(), Some("/work"));
    assert_eq!(parsed.pids_limit, Some(100));
    assert_eq!(parsed.memory_swap, Some(-1));
    assert_eq!(parsed.cpuset_cpus.as_deref(), Some("0"));
}

#[test]
fn true_needs_a_value_and_false_means_not_given() {
    let problem = one_problem(json!({"gpus": true}));
    assert!(problem.message.contains("needs a value"), "{problem}");
    let parsed = parse(&json!({"gpus": false, "memory": null})).unwrap();
    assert_eq!(parsed, ContainerArgs::default());
}

#[test]
fn only_env_ulimit_and_command_take_lists() {
    let problem = one_problem(json!({"memory": ["1g", "2g"]}));
    assert!(problem.message.contains("not a list"), "{problem}");
    let parsed = parse(&json!({"ulimit": "nproc=64", "command": ["echo", "a b"]})).unwrap();
    assert_eq!(
        parsed.ulimits,
        [Ulimit {
            name: "nproc".into(),
            soft: 64,
            hard: 64
        }]
    );
    assert_eq!(parsed.command, Some(vec!["echo".into(), "a b".into()]));
}

#[test]
fn gpus_take_every_docker_form() {
    let gpus_of = |v: Value| parse(&json!({ "gpus": v })).map(|a| a.gpus.unwrap());
    let devices = Gpus::Devices(vec!["0".into(), "1".into()]);
    assert_eq!(gpus_of(json!("all")), Ok(Gpus::All));
    assert_eq!(gpus_of(json!(2)), Ok(Gpus::Count(2)));
    assert_eq!(gpus_of(json!("2")), Ok(Gpus::Count(2)));
    assert_eq!(gpus_of(json!("device=0,1")), Ok(devices.clone()));
    assert_eq!(gpus_of(json!("\"device=0,1\"")), Ok(devices));
    assert!(gpus_of(json!(0)).is_err());
    assert!(gpus_of(json!("device=0,,1")).is_err());
    assert!(gpus_of(json!("some")).is_err());
}

#[test]
fn a_command_string_splits_like_a_shell() {
    let words = split_command(r#"python train.py --msg 'hello world' "a b"c"#).unwrap();
    assert_eq!(
        words,
        ["python", "train.py", "--msg", "hello world", "a bc"]
    );
    assert_eq!(split_command("run ''").unwrap(), ["run", ""]);
    assert!(split_command("echo 'oops").is_err());
    assert!(split_command("   ").is_err());
}

#[test]
fn args_that_are_not_an_object_are_one_problem_and_null_is_none() {
    assert_eq!(parse(&Value::Null), Ok(ContainerArgs::default()));
    assert_eq!(parse(&json!({})), Ok(ContainerArgs::default()));
    let problem = one_problem(json!(["gpus", "all"]));
    assert_eq!(problem.field, "resource_args");
}

#[test]
fn control_characters_are_refused_anywhere() {
    let args = json!({"name": "a\u{0}b", "env": ["A=x\ny"], "command": ["ls", "\t"]});
    let problems = check(&args, false);
    assert_eq!(
        fields(&problems),
        [
            "resource_args.command[1]",
            "resource_args.env[0]",
            "resource_args.name"
        ]
    );
    let problem = one_problem(json!({"na\nme": "x"}));
    assert_eq!(problem.field, "resource_args.na\\nme");
}

#[test]
fn a_flag_given_twice_is_refused_but_env_lists_merge() {
    let problem = one_problem(json!({"m": "1g", "memory": "2g"}));
    assert!(problem.message.contains("same flag"), "{problem}");
    let parsed = parse(&json!({"e": "A=1", "env": ["B=2"]})).unwrap();
    assert_eq!(parsed.env.len(), 2);
    let problem = one_problem(json!({"e": "A=1", "env": ["A=2"]}));
    assert_eq!(problem.field, "resource_args.env[0]");
}

#[test]
fn names_and_paths_follow_docker_rules() {
    assert!(parse(&json!({"name": "run-1.a_b", "platform": "linux/arm64/v8"})).is_ok());
    for args in [
        json!({"name": "-run"}),
        json!({"name": "a"}),
        json!({"name": "x".repeat(129)}),
        json!({"workdir": "work"}),
        json!({"platform": "linux//amd64"}),
        json!({"cpuset-mems": "0-1;2"}),
    ] {
        one_problem(args);
    }
}

#[test]
fn combinations_docker_refuses_are_caught_early() {
    let problem = one_problem(json!({"cpus": 2, "cpu-quota": 50000}));
    assert_eq!(problem.field, "resource_args.cpu-quota");
    let problem = one_problem(json!({"memory-swap": "2g"}));
    assert!(problem.message.contains("needs memory"), "{problem}");
    let problem = one_problem(json!({"m": "2g", "memory-swap": "1g"}));
    assert_eq!(problem.field, "resource_args.memory-swap");
    let problem = one_problem(json!({"m": "1g", "memory-reservation": "2g"}));
    assert_eq!(problem.field, "resource_args.memory-reservation");
    assert!(
        parse(&json!({"cpu-period": 100000, "cpu-quota": 50000, "m": "1g",
        "memory-swap": "2g", "memory-swappiness": 10, "cpu-shares": 512}))
        .is_ok()
    );
}
