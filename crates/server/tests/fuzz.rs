//! Fuzzed inputs, as a hostile or clumsy client sends them: mutated bodies to every JSON
//! route of a real server on a loopback port (launch specs, queue configs with templates and
//! container resource args, retry policies, job versions with input schemas, sweep configs,
//! agent registrations, heartbeats, leases, acks, reports, run states, metrics, tokens),
//! mutated query strings and path segments, sweep files as YAML text, and code archives.
//!
//! Every case must be answered, never with a 5xx or a dropped connection, within 5 s and
//! 256 MB; a refusal comes in the one error shape, and a 422 names a field for each problem.
//! `LIFTOFF_FUZZ_CASES` sets the cases per harness; the long run is in `docs/fuzzing.md`.

mod common;
mod fuzz_support;

use common::TestServer;
use fuzz_support::{
    apply, cases, frame, framing, hostile_string, junk, mutation, Peak, CASE_MEMORY,
};
use liftoff_types::api::{ErrorBody, LeaseRequest};
use liftoff_types::{NewAgent, NewQueue, Scope};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What the routes' paths and seeds refer to: made once, before the cases.
struct Fixtures {
    item: i64,
    fence: i64,
    run: String,
    agent: i64,
    sweep: String,
}

async fn fixtures(t: &TestServer) -> Fixtures {
    let tpl: NewQueue = serde_json::from_value(json!({
        "name": "tpl",
        "config": {"gres": "gpu:{{gpus}}", "partition": "{{partition}}"},
        "template_variables": {
            "gpus": {"type": "integer", "default": 1, "minimum": 0, "maximum": 8},
            "partition": {"type": "string", "enum": ["debug", "long"], "default": "debug"}
        }
    }))
    .unwrap();
    t.admin.create_queue(&tpl).await.unwrap();
    t.admin.create_queue(&NewQueue::named("q")).await.unwrap();
    let boxed: NewQueue =
        serde_json::from_value(json!({"name": "box", "resource": "container"})).unwrap();
    t.admin.create_queue(&boxed).await.unwrap();
    let spec: liftoff_types::LaunchSpec =
        serde_json::from_value(json!({"overrides": {"entry_point": ["true"]}})).unwrap();
    for _ in 0..3 {
        t.user.enqueue("q", &spec).await.unwrap();
    }
    let agent = t
        .agent
        .register_agent(&NewAgent::on("fuzz", &["q", "tpl", "box"]))
        .await
        .unwrap();
    let lease = LeaseRequest {
        queues: vec!["q".into()],
        max: 1,
        wait_ms: 0,
        lease_ms: 600_000,
        runs: true,
        schedulers: true,
    };
    let leased = t.agent.lease(agent.id, &lease).await.unwrap();
    let lease = &leased.leases[0];
    let run = "fuzzrun1".to_string();
    let ack = serde_json::from_value(json!({"fence": lease.fence, "run_id": run})).unwrap();
    t.agent.ack(lease.item.id, &ack).await.unwrap();
    let sweep = serde_json::from_value(json!({"queue": "q", "config": {
        "program": "train.py", "method": "random",
        "parameters": {"x": {"min": 0.0, "max": 1.0}}}}))
    .unwrap();
    let sweep = t.user.create_sweep(&sweep).await.unwrap();
    Fixtures {
        item: lease.item.id.0,
        fence: lease.fence,
        run,
        agent: agent.id.0,
        sweep: sweep.id.to_string(),
    }
}

/// Every POST route with a JSON body, each with a valid body to mutate.
fn routes(f: &Fixtures) -> Vec<(String, Value)> {
    let (item, fence, run, agent, sweep) = (f.item, f.fence, &f.run, f.agent, &f.sweep);
    let retry = json!({"preempted": 5, "lost": 2, "start-timeout": 1, "build": 1,
        "exit-code": {"max": 2, "codes": [137, 1]}, "max": 6, "backoff": 10});
    let spec = json!({
        "name": "fz", "priority": "high", "cwd": "/tmp", "env": {"A": "b"},
        "retry": {"preempted": 3, "backoff": 5},
        "overrides": {"entry_point": ["python", "train.py"], "args": ["--x", "1"],
            "run_config": {"lr": 0.1, "layers": [1, 2]}},
        "resource_args": {"local-process": {}}
    });
    let sweep_config = json!({
        "program": "train.py", "method": "grid",
        "metric": {"name": "loss", "goal": "minimize"},
        "parameters": {"lr": {"values": [0.1, 0.01]}, "seed": {"min": 1, "max": 4},
            "opt": {"parameters": {"beta": {"value": 0.9}}}},
        "early_terminate": {"type": "hyperband", "min_iter": 3, "eta": 3},
        "run_cap": 10, "command": ["${env}", "python", "${program}", "${args}"]
    });
    vec![
        (
            "/api/v1/queues".into(),
            json!({"name": "fz", "resource": "container",
                "config": {"memory": "{{mem}}", "gpus": "all", "env": ["A=1"]},
                "template_variables": {
                    "mem": {"type": "string", "default": "1g", "enum": ["1g", "2g"]},
                    "n": {"type": "integer", "default": 1, "minimum": 0, "maximum": 8}},
                "prioritization": true, "max_attempts": 3, "requeue_lost": true,
                "max_concurrency": 4, "retry": retry}),
        ),
        ("/api/v1/queues/q/items".into(), spec),
        (
            "/api/v1/queues/tpl/items".into(),
            json!({"overrides": {"entry_point": ["true"]},
                "template_variables": {"gpus": 2, "partition": "long"}}),
        ),
        (
            "/api/v1/queues/box/items".into(),
            json!({"docker": {"docker_image": "busybox"}, "overrides": {"entry_point": ["true"]},
                "resource_args": {"local-container": {"memory": "64m", "cpus": 1,
                    "env": ["A=1"], "shm-size": "1g", "ulimit": "nofile=1024"}}}),
        ),
        (
            format!("/api/v1/items/{item}/ack"),
            json!({"fence": fence, "run_id": "fz1"}),
        ),
        (
            format!("/api/v1/items/{item}/fail"),
            json!({"fence": fence, "message": "m", "phase": "run", "cause": "exit-code"}),
        ),
        (
            format!("/api/v1/items/{item}/warn"),
            json!({"fence": fence, "message": "m"}),
        ),
        (
            format!("/api/v1/items/{item}/release"),
            json!({"fence": fence}),
        ),
        (format!("/api/v1/items/{item}/cancel"), json!({})),
        (
            "/api/v1/agents".into(),
            json!({"hostname": "h", "queues": ["q"], "max_jobs": 4, "max_schedulers": 1,
                "version": "0.1"}),
        ),
        (
            format!("/api/v1/agents/{agent}/heartbeat"),
            json!({"status": "polling", "in_flight": [item], "running_jobs": 1,
                "running_schedulers": 0, "wait_ms": 0}),
        ),
        (
            format!("/api/v1/agents/{agent}/lease"),
            json!({"queues": ["q", "tpl"], "max": 2, "wait_ms": 0, "lease_ms": 60000,
                "runs": true, "schedulers": true}),
        ),
        (
            format!("/api/v1/agents/{agent}/acks"),
            json!({"acks": [{"item_id": item, "ack": {"fence": fence, "run_id": "fz2"}}]}),
        ),
        (
            format!("/api/v1/agents/{agent}/reports"),
            json!({"reports": [{"run_id": run, "update":
                {"fence": fence, "state": "running", "handle": {"pid": 1}}}]}),
        ),
        (
            format!("/api/v1/runs/{run}/state"),
            json!({"fence": fence, "state": "finished", "exit_code": 0, "message": "m",
                "handle": {"pid": 1}}),
        ),
        (
            format!("/api/v1/runs/{run}/metrics"),
            json!({"records": [{"step": 1, "loss": 0.5}, {"step": 2, "acc": 0.9}]}),
        ),
        (format!("/api/v1/runs/{run}/stop"), json!({})),
        (
            "/api/v1/jobs/j/versions".into(),
            json!({"kind": "image", "source": {"image": "python:3.11"},
                "entrypoint": ["python", "t.py"], "default_config": {"lr": 0.1},
                "input_schema": {"type": "object", "required": ["lr"],
                    "properties": {"lr": {"type": "number", "minimum": 0, "maximum": 1},
                        "name": {"type": "string", "enum": ["a", "b"]}}}}),
        ),
        // A launch of that job: its config checked against the job's schema.
        (
            "/api/v1/queues/box/items".into(),
            json!({"job": "j:latest", "overrides": {"run_config": {"lr": 0.5, "name": "a"}}}),
        ),
        (
            "/api/v1/sweeps".into(),
            json!({"queue": "q", "config": sweep_config}),
        ),
        (
            format!("/api/v1/sweeps/{sweep}/state"),
            json!({"state": "paused"}),
        ),
        (
            format!("/api/v1/sweeps/{sweep}/runs"),
            json!({"index": 0, "spec": {"overrides": {"entry_point": ["true"]}}}),
        ),
        (
            "/api/v1/tokens".into(),
            json!({"name": "t", "scope": "user"}),
        ),
        (
            "/api/v1/prune".into(),
            json!({"older_than_s": 86400, "dry_run": true}),
        ),
    ]
}

/// The GET routes whose query strings and path segments are fuzzed.
fn lookups(f: &Fixtures) -> Vec<(String, Value)> {
    vec![
        (
            "/api/v1/items".into(),
            json!({"state": "pending", "queue": "q", "limit": 10, "after": 0, "job": "j:v1"}),
        ),
        (
            "/api/v1/runs".into(),
            json!({"state": "running", "queue": "q", "limit": 10, "sweep": f.sweep}),
        ),
        (
            format!("/api/v1/runs/{}/logs", f.run),
            json!({"offset": 0, "fence": f.fence}),
        ),
        ("/api/v1/items/{junk}".into(), json!({})),
        ("/api/v1/runs/{junk}".into(), json!({})),
        ("/api/v1/sweeps/{junk}".into(), json!({})),
        ("/api/v1/jobs/{junk}/versions/latest".into(), json!({})),
    ]
}

/// A long-poll asked for is answered within its wait: the fuzz keeps waits short (a wait
/// above the maximum stays, to be refused).
fn tame(mut body: Value) -> Value {
    if let Some(wait) = body.get_mut("wait_ms") {
        if wait
            .as_u64()
            .is_some_and(|ms| ms <= liftoff_types::api::MAX_WAIT_MS)
        {
            *wait = json!(0);
        }
    }
    body
}

/// The answer is an answer: not a 5xx, in the error shape when refused, a field named for
/// each problem of a 422.
fn judge(what: &str, status: u16, text: &str) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "{what}: {status} {text}");
    if status >= 400 {
        let body: ErrorBody = serde_json::from_str(text).map_err(|e| {
            TestCaseError::fail(format!("{what}: not the error shape ({e}): {text}"))
        })?;
        prop_assert!(!body.error.message.is_empty(), "{what}: no message");
        if status == 422 {
            prop_assert!(
                !body.error.fields.is_empty(),
                "{what}: a 422 naming nothing: {text}"
            );
            for f in &body.error.fields {
                prop_assert!(
                    !f.field.is_empty(),
                    "{what}: a problem with no field: {text}"
                );
            }
        }
    }
    Ok(())
}

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    })
}

#[test]
fn every_json_route_answers_mutated_bodies_with_a_clear_refusal_or_success() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(TestServer::start());
    let f = rt.block_on(fixtures(&t));
    let routes = routes(&f);
    let admin = format!("Bearer {}", t.token(Scope::Admin));
    let http = reqwest::Client::new();
    // Each seed is taken as it is (or, once its state moved on, refused as a conflict), so
    // the mutations start from deep inside each parser.
    for (path, seed) in &routes {
        let (status, text) = rt.block_on(async {
            let resp = http
                .post(t.url(path))
                .header("Authorization", &admin)
                .json(seed)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        });
        assert!(
            status < 300 || status == 409,
            "{path}: seed refused: {status} {text}"
        );
    }
    let strategy = (
        0..routes.len(),
        prop::collection::vec(mutation(), 0..4),
        framing(),
    );
    runner(400)
        .run(&strategy, |(pick, mutations, framing)| {
            let (path, seed) = &routes[pick];
            let doc = tame(apply(seed, &mutations));
            let body = frame(&doc, &framing);
            let base = Peak::reset();
            let began = Instant::now();
            let (status, text) = rt.block_on(async {
                let resp = http
                    .post(t.url(path))
                    .header("Authorization", &admin)
                    .header("Content-Type", "application/json")
                    .timeout(Duration::from_secs(10))
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{path}: no answer: {e}")))?;
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                Ok::<_, TestCaseError>((status, text))
            })?;
            let took = began.elapsed();
            prop_assert!(took < Duration::from_secs(5), "{path}: took {took:?}");
            let grew = Peak::bytes().saturating_sub(base);
            prop_assert!(grew < CASE_MEMORY, "{path}: allocated {grew} bytes");
            judge(path, status, &text)
        })
        .unwrap();
    // The server is whole afterwards: it answers, and its queues are all there.
    let queues = rt.block_on(t.admin.list_queues()).unwrap();
    for name in ["q", "tpl", "box"] {
        assert!(queues.iter().any(|q| q.name == name), "queue {name} gone");
    }
}

#[test]
fn query_strings_and_path_segments_are_checked_not_trusted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(TestServer::start());
    let f = rt.block_on(fixtures(&t));
    let lookups = lookups(&f);
    let admin = format!("Bearer {}", t.token(Scope::Admin));
    let http = reqwest::Client::new();
    let strategy = (
        0..lookups.len(),
        prop::collection::vec(mutation(), 0..4),
        junk(),
    );
    runner(200)
        .run(&strategy, |(pick, mutations, segment)| {
            let (path, seed) = &lookups[pick];
            let query = apply(seed, &mutations);
            // Short enough for a URL a client builds (a long one is the client's refusal).
            let text_of = |v: &Value| -> String {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                text.chars().take(300).collect()
            };
            let segment = url_segment(&text_of(&segment));
            let path = path.replace("{junk}", &segment);
            let pairs: Vec<(String, String)> = match &query {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| (k.chars().take(300).collect(), text_of(v)))
                    .collect(),
                other => vec![("q".into(), text_of(other))],
            };
            let (status, text) = rt.block_on(async {
                let resp = http
                    .get(t.url(&path))
                    .query(&pairs)
                    .header("Authorization", &admin)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{path}: no answer: {e}")))?;
                let status = resp.status().as_u16();
                Ok::<_, TestCaseError>((status, resp.text().await.unwrap_or_default()))
            })?;
            // A path segment that is not a route's (a '/' in it) is a plain 404.
            judge(&path, status, &text)
        })
        .unwrap();
}

/// A string as one percent-encoded path segment.
fn url_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn sweep_files_as_text_parse_or_name_each_problem() {
    // The CLI reads sweep files as YAML; the server parses the document they become.
    let seed = "program: train.py\nmethod: bayes\nmetric:\n  name: loss\n  goal: minimize\n\
                parameters:\n  lr:\n    distribution: log_uniform_values\n    min: 0.0001\n    \
                max: 0.1\n  batch:\n    values: [16, 32, 64]\n  layers:\n    min: 1\n    max: 4\n\
                early_terminate:\n  type: hyperband\n  min_iter: 3\nrun_cap: 20\n";
    let strategy = (
        prop::collection::vec((any::<usize>(), any::<u8>(), 0usize..3), 0..6),
        prop::collection::vec(mutation(), 0..4),
    );
    runner(2000)
        .run(&strategy, |(edits, mutations)| {
            // Bytes changed, dropped or doubled in the text; then the document mutated.
            let mut text = seed.as_bytes().to_vec();
            for (at, byte, how) in edits {
                let at = at % text.len();
                match how {
                    0 => text[at] = byte,
                    1 => {
                        text.remove(at);
                    }
                    _ => {
                        let dup = text[at..].to_vec();
                        text.extend_from_slice(&dup);
                    }
                }
            }
            let Ok(doc) = serde_norway::from_slice::<Value>(&text) else {
                return Ok(());
            };
            let doc = apply(&doc, &mutations);
            let base = Peak::reset();
            let began = Instant::now();
            let parsed = liftoff_sweep::SweepConfig::parse(&doc);
            prop_assert!(began.elapsed() < Duration::from_secs(2));
            prop_assert!(Peak::bytes().saturating_sub(base) < CASE_MEMORY);
            if let Err(problems) = parsed {
                prop_assert!(!problems.is_empty());
                for p in &problems {
                    // "path: what is wrong"
                    prop_assert!(
                        p.split_once(": ").is_some_and(|(at, _)| !at.is_empty()),
                        "{p}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_code_archives_unpack_whole_or_not_at_all_and_never_outside() {
    use std::io::Write;
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("pkg")).unwrap();
    std::fs::write(src.path().join("train.py"), "print('hi')\n".repeat(40)).unwrap();
    std::fs::write(src.path().join("pkg/data.txt"), "x".repeat(3000)).unwrap();
    std::fs::write(src.path().join("requirements.txt"), "numpy\n").unwrap();
    let packed = liftoff_artifacts::pack_dir(src.path()).unwrap().bytes;
    let work = tempfile::tempdir().unwrap();
    let limits = liftoff_artifacts::Limits {
        max_bytes: 1 << 20,
        max_file: 256 << 10,
        max_entries: 100,
    };
    let strategy = prop::collection::vec((any::<usize>(), any::<u8>(), 0usize..3), 1..8);
    let n = std::sync::atomic::AtomicU64::new(0);
    runner(1000)
        .run(&strategy, |edits| {
            let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut bytes = packed.clone();
            for (at, byte, how) in edits {
                let at = at % bytes.len();
                match how {
                    0 => bytes[at] = byte,
                    1 => bytes.truncate(at.max(1)),
                    _ => bytes[at] ^= 1 << (byte % 8),
                }
            }
            let case = work.path().join(format!("c{n}"));
            let dest = case.join("out");
            std::fs::create_dir_all(&case).unwrap();
            let began = Instant::now();
            let result = liftoff_artifacts::unpack(&bytes[..], &dest, limits);
            prop_assert!(began.elapsed() < Duration::from_secs(5));
            // Nothing beside the target, whatever happened.
            let beside: Vec<_> = std::fs::read_dir(&case)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n != "out")
                .collect();
            prop_assert!(beside.is_empty(), "{beside:?}");
            match result {
                Ok(()) => {
                    let total: u64 = walk(&dest);
                    prop_assert!(total <= limits.max_bytes, "{total} bytes unpacked");
                }
                Err(e) => {
                    prop_assert!(!dest.exists(), "a refused archive left {}", dest.display());
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            std::fs::remove_dir_all(&case).unwrap();
            Ok(())
        })
        .unwrap();
    let _ = std::io::stderr().flush();
}

/// The bytes of the files under `dir`, never following a link.
fn walk(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        if meta.is_dir() {
            total += walk(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// The dashboard's pages and forms, with a real session: mutated path segments and queries
/// to every page (and the event stream), mutated login and launch forms and action posts.
/// Every case is answered (never a 5xx) within 5 s, an action's refusal says why, and the
/// server's queues are whole afterwards.
#[test]
fn dashboard_pages_and_forms_answer_mutated_input_without_a_server_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let t = rt.block_on(TestServer::start());
    let f = rt.block_on(fixtures(&t));
    let admin = t.token(Scope::Admin).to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (cookie, csrf) = rt.block_on(async {
        let job = json!({"kind": "image", "source": {"image": "python:3.11"},
            "entrypoint": ["python", "t.py"],
            "input_schema": {"type": "object", "properties": {"lr": {"type": "number", "maximum": 1}}}});
        let made = http
            .post(t.url("/api/v1/jobs/web/versions"))
            .bearer_auth(&admin)
            .json(&job)
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success());
        let login = http
            .post(t.url("/login"))
            .form(&[("token", admin.as_str()), ("next", "/")])
            .send()
            .await
            .unwrap();
        let cookie = login.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let page = http
            .get(t.url("/jobs/web"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = page.find("name=\"csrf\" value=\"").unwrap() + 19;
        let csrf = page[at..].split('"').next().unwrap().to_string();
        (cookie, csrf)
    });
    let (item, run, sweep) = (f.item, f.run.clone(), f.sweep.clone());
    let gets: Vec<(String, Value)> = vec![
        ("/".into(), json!({})),
        ("/queues/{junk}".into(), json!({})),
        ("/items/{junk}".into(), json!({})),
        (format!("/items/{item}/output"), json!({"before": 100})),
        ("/items/{junk}/files/{junk}".into(), json!({})),
        ("/runs/{junk}".into(), json!({})),
        ("/sweeps/{junk}".into(), json!({})),
        ("/jobs/{junk}".into(), json!({})),
        ("/login".into(), json!({"next": "/queues/q"})),
        ("/assets/{junk}".into(), json!({})),
        (
            "/events".into(),
            json!({"page": format!("/items/{item}"), "item": item, "run": run, "offset": 0}),
        ),
        // A page path as the browser sends it, with raw text (a `%` before it) in a name.
        ("/events".into(), json!({"page": "/queues/%{junk}"})),
        ("/events".into(), json!({"page": "/jobs/{junk}"})),
    ];
    let posts: Vec<(String, Value)> = vec![
        ("/login".into(), json!({"token": "lft_0", "next": "/"})),
        (
            "/jobs/web".into(),
            json!({"csrf": csrf, "queue": "box", "version": "0", "cfg.lr": "0.5"}),
        ),
        (format!("/items/{item}/cancel"), json!({"csrf": csrf})),
        (format!("/items/{item}/rerun"), json!({"csrf": csrf})),
        (format!("/items/{item}/stop"), json!({"csrf": csrf})),
        (
            format!("/sweeps/{sweep}/state"),
            json!({"csrf": csrf, "state": "paused"}),
        ),
    ];
    let text_of = |v: &Value| -> String {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        text.chars().take(300).collect()
    };
    let pairs_of = |v: &Value| -> Vec<(String, String)> {
        match v {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| (k.chars().take(300).collect(), text_of(v)))
                .collect(),
            other => vec![("q".into(), text_of(other))],
        }
    };
    let strategy = (
        0..gets.len() + posts.len(),
        prop::collection::vec(mutation(), 0..4),
        hostile_string(),
    );
    runner(300)
        .run(&strategy, |(pick, mutations, segment)| {
            let began = Instant::now();
            let (what, status, text) = rt.block_on(async {
                let request = if pick < gets.len() {
                    let (path, seed) = &gets[pick];
                    let raw: String = segment.chars().take(300).collect();
                    let path = path.replace("{junk}", &url_segment(&raw));
                    // In a query value the junk goes in raw: `page` is a path as text.
                    let pairs: Vec<(String, String)> = pairs_of(&apply(seed, &mutations))
                        .into_iter()
                        .map(|(k, v)| (k, v.replace("{junk}", &raw)))
                        .collect();
                    http.get(t.url(&path)).query(&pairs)
                } else {
                    let (path, seed) = &posts[pick - gets.len()];
                    http.post(t.url(path))
                        .form(&pairs_of(&apply(seed, &mutations)))
                };
                let mut resp = request
                    .header("cookie", &cookie)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("case {pick}: no answer: {e}")))?;
                let status = resp.status().as_u16();
                let what = resp.url().path().to_string();
                // An event stream stays open: its first event (the page, or why there is
                // none) is the answer; a stream that breaks first is a failure.
                let stream = resp
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
                let text = if stream {
                    let first = tokio::time::timeout(Duration::from_secs(4), resp.chunk()).await;
                    match first {
                        Ok(Ok(Some(event))) => String::from_utf8_lossy(&event).into_owned(),
                        other => {
                            return Err(TestCaseError::fail(format!(
                                "{what}: the event stream broke before its first event: {other:?}"
                            )))
                        }
                    }
                } else {
                    resp.text().await.unwrap_or_default()
                };
                Ok::<_, TestCaseError>((what, status, text))
            })?;
            let took = began.elapsed();
            prop_assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
            prop_assert!(status < 500, "{what}: {status} {text}");
            if status >= 400 && text.contains("<html") {
                prop_assert!(
                    text.contains("role=\"alert\""),
                    "{what}: a refusal saying nothing: {text}"
                );
            }
            Ok(())
        })
        .unwrap();
    let queues = rt.block_on(t.admin.list_queues()).unwrap();
    for name in ["q", "tpl", "box"] {
        assert!(queues.iter().any(|q| q.name == name), "queue {name} gone");
    }
}
