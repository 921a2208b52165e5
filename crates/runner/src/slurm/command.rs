//! The Slurm runner's pure half: the `sbatch` arguments and batch script for a run, and the
//! reading of `squeue`. No process is started here, so all of it is unit-tested.

use crate::{Exit, RunSpec, RunStatus};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

use liftoff_types::slurm::OPTIONS;

/// Options allowed in `extra` (as `--flag` or `--flag=value`). Everything that could change
/// who runs the job, where its output goes or how liftoff finds it is left out.
const EXTRA_ALLOWED: &[&str] = &[
    "--exclusive",
    "--hold",
    "--nice",
    "--requeue",
    "--no-requeue",
    "--signal",
    "--begin",
    "--deadline",
    "--licenses",
    "--wckey",
    "--mail-type",
    "--mail-user",
    "--priority",
    "--threads-per-core",
    "--hint",
    "--switches",
    "--tmp",
    "--overcommit",
    "--oversubscribe",
    "--gpus-per-task",
    "--gpus-per-node",
    "--cpus-per-gpu",
    "--mem-per-gpu",
];

/// The job name that carries the run id (how jobs are matched to runs).
pub fn job_name(spec_run: &str) -> String {
    format!("liftoff-{spec_run}")
}

/// The run id in a job name made by [`job_name`].
pub fn run_of_job_name(name: &str) -> Option<&str> {
    name.strip_prefix("liftoff-")
}

/// Turns a queue's resource args into `sbatch` options; every problem is named by key.
pub fn resource_options(args: &Value) -> Result<Vec<String>, Vec<String>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let Some(map) = args.as_object() else {
        if args.is_null() {
            return Ok(out);
        }
        return Err(vec!["resource_args: must be an object".into()]);
    };
    for (key, value) in map {
        if key == "extra" {
            match extra_options(value) {
                Ok(flags) => out.extend(flags),
                Err(p) => problems.extend(p),
            }
            continue;
        }
        if key == "gpus" {
            match value.as_u64() {
                Some(n) => out.push(format!("--gres=gpu:{n}")),
                None => problems.push("resource_args.gpus: must be a whole number".into()),
            }
            continue;
        }
        let Some((_, flag)) = OPTIONS.iter().find(|(k, _)| k == key) else {
            let known: Vec<&str> = OPTIONS.iter().map(|(k, _)| *k).collect();
            problems.push(format!(
                "resource_args.{key}: not a Slurm option liftoff passes on (known: {}, gpus, extra)",
                known.join(", ")
            ));
            continue;
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                problems.push(format!("resource_args.{key}: must be a string or a number"));
                continue;
            }
        };
        if text.is_empty() || text.chars().any(|c| c.is_control()) {
            problems.push(format!(
                "resource_args.{key}: must be non-empty, without control characters"
            ));
            continue;
        }
        out.push(format!("{flag}={text}"));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn extra_options(value: &Value) -> Result<Vec<String>, Vec<String>> {
    let Some(list) = value.as_array() else {
        return Err(vec![
            "resource_args.extra: must be a list of sbatch flags".into()
        ]);
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, flag) in list.iter().enumerate() {
        let Some(flag) = flag.as_str() else {
            problems.push(format!("resource_args.extra[{i}]: must be a string"));
            continue;
        };
        let name = flag.split('=').next().unwrap_or("");
        if flag.chars().any(|c| c.is_control()) || !EXTRA_ALLOWED.contains(&name) {
            problems.push(format!(
                "resource_args.extra[{i}]: {flag:?} is not an allowed sbatch flag (allowed: {})",
                EXTRA_ALLOWED.join(", ")
            ));
            continue;
        }
        out.push(flag.to_string());
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The full `sbatch` argument list for a run whose batch script is at `script`.
pub fn sbatch_args(spec: &RunSpec, label: &str, script: &Path) -> Result<Vec<String>, String> {
    let resources = resource_options(&spec.resource_args).map_err(|p| p.join("; "))?;
    let mut args = vec![
        "--parsable".to_string(),
        format!("--job-name={}", job_name(spec.run_id.as_str())),
        format!("--comment={label}"),
        format!("--output={}", spec.output.display()),
        "--open-mode=append".to_string(),
        format!("--chdir={}", spec.workdir.display()),
        // The job gets sbatch's environment, which the runner sets to the run's alone.
        // (`NONE` and `NIL` would make slurmd load a login environment for every job, which
        // costs seconds per job and brings in variables the run did not ask for.)
        "--export=ALL".to_string(),
    ];
    args.extend(resources);
    args.push(script.display().to_string());
    Ok(args)
}

/// The batch script: the argv exec'd, so the job's exit code is the run's. The environment
/// is not in it (it holds the run's token): the runner gives it to `sbatch` instead.
pub fn batch_script(spec: &RunSpec) -> String {
    let mut s = String::from("#!/bin/sh\n");
    s.push_str(&format!("# liftoff run {}\n", spec.run_id));
    s.push_str(&format!(
        "cd {} || exit 1\n",
        quote(&spec.workdir.display().to_string())
    ));
    let argv: Vec<String> = spec.argv.iter().map(|a| quote(a)).collect();
    s.push_str(&format!("exec {}\n", argv.join(" ")));
    s
}

/// Whether `k` can be an environment variable's name.
pub fn is_env_name(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// POSIX shell single-quoting.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One job as `squeue` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: u64,
    pub name: String,
    pub comment: String,
    pub state: String,
    pub reason: String,
    pub exit: Option<Exit>,
}

/// The `squeue` arguments that print [`parse_squeue`]'s format: every state (a finished job
/// stays visible for `MinJobAge`), no header, `|`-ended columns, the reason last (it may hold
/// spaces). `jobs` narrows it to those ids; `None` lists the calling user's jobs.
pub fn squeue_args(jobs: Option<&[u64]>) -> Vec<String> {
    let mut args = vec![
        "--noheader".to_string(),
        "--states=all".to_string(),
        "--Format=JobID:30|,State:30|,exit_code:16|,Name:200|,Comment:200|,Reason:200|".to_string(),
    ];
    match jobs {
        Some(ids) => {
            let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
            args.push(format!("--jobs={}", ids.join(",")));
        }
        None => args.push("--me".to_string()),
    }
    args
}

/// Reads the output of `squeue` run with [`squeue_args`]. Lines that do not parse (another
/// tool's job with a `|` in its name) are skipped.
pub fn parse_squeue(text: &str) -> Vec<Job> {
    text.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('|').map(str::trim).collect();
            if cols.len() < 6 {
                return None;
            }
            let comment = match cols[4] {
                "(null)" => "",
                c => c,
            };
            Some(Job {
                id: cols[0].parse().ok()?,
                state: cols[1].to_string(),
                exit: exit_of(cols[2]),
                name: cols[3].to_string(),
                comment: comment.to_string(),
                reason: cols[5].to_string(),
            })
        })
        .collect()
}

/// Slurm 22.05 prints the wait status (`768` = exit 3); later ones `CODE:SIGNAL`.
fn exit_of(text: &str) -> Option<Exit> {
    if let Some((code, signal)) = text.split_once(':') {
        let (code, signal): (i32, i32) = (code.parse().ok()?, signal.parse().ok()?);
        return Some(if signal != 0 {
            Exit {
                code: 128 + signal,
                signal: Some(signal),
            }
        } else {
            Exit { code, signal: None }
        });
    }
    let status: i32 = text.parse().ok()?;
    let signal = status & 0x7f;
    Some(if signal != 0 {
        Exit {
            code: 128 + signal,
            signal: Some(signal),
        }
    } else {
        Exit {
            code: (status >> 8) & 0xff,
            signal: None,
        }
    })
}

/// What a job's Slurm state means for its run.
pub fn status_of(job: &Job) -> RunStatus {
    let reason = || (!job.reason.is_empty() && job.reason != "None").then(|| job.reason.clone());
    match job.state.as_str() {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" | "SUSPENDED" | "STOPPED" | "SIGNALING" => RunStatus::Starting(reason()),
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "RESIZING" => RunStatus::Running,
        "COMPLETED" => RunStatus::Exited(job.exit.unwrap_or(Exit {
            code: 0,
            signal: None,
        })),
        "FAILED" => RunStatus::Exited(job.exit.unwrap_or(Exit {
            code: 1,
            signal: None,
        })),
        "CANCELLED" => RunStatus::Exited(match job.exit {
            Some(e) if e.signal.is_some() || e.code != 0 => e,
            _ => Exit {
                code: 128 + 15,
                signal: Some(15),
            },
        }),
        "PREEMPTED" => RunStatus::Preempted(format!("Slurm preempted job {}", job.id)),
        "TIMEOUT" => RunStatus::Failed {
            message: format!("Slurm job {} reached its time limit", job.id),
            exit: job.exit,
        },
        "OUT_OF_MEMORY" => RunStatus::Failed {
            message: format!("Slurm job {} ran out of memory", job.id),
            exit: job.exit,
        },
        "NODE_FAIL" | "BOOT_FAIL" | "DEADLINE" | "SPECIAL_EXIT" => RunStatus::Failed {
            message: format!("Slurm job {} ended {}", job.id, job.state),
            exit: job.exit,
        },
        other => RunStatus::Failed {
            message: format!("Slurm job {} is in an unknown state {other:?}", job.id),
            exit: job.exit,
        },
    }
}

/// Jobs by id.
pub fn by_id(jobs: Vec<Job>) -> HashMap<u64, Job> {
    jobs.into_iter().map(|j| (j.id, j)).collect()
}

/// Whether an `sbatch`/`scancel` error is worth retrying (the controller was unreachable or
/// busy) rather than a refusal of the job.
pub fn is_transient(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "socket timed out",
        "unable to contact slurm controller",
        "connection refused",
        "slurm_receive_msg",
        "resource temporarily unavailable",
        "try again",
    ]
    .iter()
    .any(|p| s.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn spec(args: Value) -> RunSpec {
        RunSpec {
            attempt_of: None,
            run_id: "r1".parse().unwrap(),
            argv: vec!["python3".into(), "it's.py".into()],
            env: crate::RunEnv {
                base: Default::default(),
                own: BTreeMap::from([
                    ("A".to_string(), "x y".to_string()),
                    ("bad name".to_string(), "z".to_string()),
                ]),
            },
            workdir: PathBuf::from("/w/r1/work"),
            output: PathBuf::from("/w/r1/output.log"),
            resource_args: args,
            concurrency: None,
            image: None,
        }
    }

    #[test]
    fn resource_args_map_to_sbatch_options() {
        let args = json!({"partition": "gpu", "time": "1:00:00", "cpus": 4, "mem": "8G",
            "gpus": 2, "account": "lab", "qos": "high", "extra": ["--exclusive", "--nice=10"]});
        let got = sbatch_args(&spec(args), "liftoff:a1", Path::new("/w/r1/job.sbatch")).unwrap();
        for want in [
            "--parsable",
            "--job-name=liftoff-r1",
            "--comment=liftoff:a1",
            "--output=/w/r1/output.log",
            "--chdir=/w/r1/work",
            "--export=ALL",
            "--partition=gpu",
            "--time=1:00:00",
            "--cpus-per-task=4",
            "--mem=8G",
            "--gres=gpu:2",
            "--account=lab",
            "--qos=high",
            "--exclusive",
            "--nice=10",
        ] {
            assert!(
                got.contains(&want.to_string()),
                "{want} missing from {got:?}"
            );
        }
        assert_eq!(got.last().unwrap(), "/w/r1/job.sbatch");
    }

    #[test]
    fn bad_resource_args_are_each_named() {
        let args = json!({"partiton": "gpu", "cpus": [1], "gpus": "two",
            "extra": ["--uid=0", "--output=/etc/x", 3], "time": "1\n#SBATCH --uid=0"});
        let problems = resource_options(&args).unwrap_err();
        let all = problems.join("\n");
        for want in [
            "resource_args.partiton",
            "resource_args.cpus",
            "resource_args.gpus",
            "resource_args.extra[0]",
            "resource_args.extra[1]",
            "resource_args.extra[2]",
            "resource_args.time",
        ] {
            assert!(all.contains(want), "{want} not named in {all}");
        }
        assert_eq!(problems.len(), 7, "{all}");
        assert!(resource_options(&json!("x")).is_err());
        assert_eq!(
            resource_options(&Value::Null).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_script_execs_the_argv_quoted_and_holds_no_env() {
        let script = batch_script(&spec(json!({})));
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(!script.contains("x y"), "the run's env stays off the disk");
        assert!(script.contains("cd '/w/r1/work' || exit 1\n"));
        assert!(
            script.ends_with("exec 'python3' 'it'\\''s.py'\n"),
            "{script}"
        );
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("A_1") && is_env_name("_x"));
        assert!(!is_env_name("1A") && !is_env_name("bad name") && !is_env_name(""));
    }

    #[test]
    fn squeue_lines_of_slurm_22_and_later() {
        let text = "7    |FAILED   |768   |liftoff-r7  |liftoff:a |NonZeroExitCode |\n\
                    8    |CANCELLED|15    |x           |(null)    |None            |\n\
                    9    |PENDING  |0     |liftoff-r9  |liftoff:a |ReqNodeNotAvail, UnavailableNodes:n1 |\n\
                    10   |FAILED   |2:0   |liftoff-r10 |liftoff:a |NonZeroExitCode |\n\
                    bad line\n";
        let jobs = parse_squeue(text);
        assert_eq!(jobs.len(), 4);
        assert_eq!(run_of_job_name(&jobs[0].name), Some("r7"));
        assert_eq!(jobs[0].comment, "liftoff:a");
        assert_eq!(jobs[1].comment, "");
        assert_eq!(
            status_of(&jobs[0]),
            RunStatus::Exited(Exit {
                code: 3,
                signal: None
            })
        );
        assert_eq!(
            status_of(&jobs[1]),
            RunStatus::Exited(Exit {
                code: 143,
                signal: Some(15)
            })
        );
        assert_eq!(
            status_of(&jobs[2]),
            RunStatus::Starting(Some("ReqNodeNotAvail, UnavailableNodes:n1".into()))
        );
        assert_eq!(
            status_of(&jobs[3]),
            RunStatus::Exited(Exit {
                code: 2,
                signal: None
            })
        );
    }

    #[test]
    fn squeue_is_asked_about_given_jobs_or_the_users_own() {
        let args = squeue_args(Some(&[3, 5]));
        assert!(args.contains(&"--jobs=3,5".to_string()));
        assert!(args.contains(&"--states=all".to_string()));
        assert!(squeue_args(None).contains(&"--me".to_string()));
    }

    #[test]
    fn slurm_states_map_to_run_states() {
        let job = |state: &str| Job {
            id: 1,
            name: String::new(),
            comment: String::new(),
            state: state.into(),
            reason: "Priority".into(),
            exit: None,
        };
        assert_eq!(status_of(&job("RUNNING")), RunStatus::Running);
        assert_eq!(status_of(&job("COMPLETING")), RunStatus::Running);
        assert_eq!(
            status_of(&job("REQUEUED")),
            RunStatus::Starting(Some("Priority".into()))
        );
        assert!(matches!(
            status_of(&job("PREEMPTED")),
            RunStatus::Preempted(_)
        ));
        assert!(
            matches!(status_of(&job("TIMEOUT")), RunStatus::Failed { message, .. } if message.contains("time limit"))
        );
        assert!(matches!(
            status_of(&job("NODE_FAIL")),
            RunStatus::Failed { .. }
        ));
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(is_transient(
            "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
        ));
        assert!(!is_transient(
            "sbatch: error: invalid partition specified: gpu"
        ));
    }
}
