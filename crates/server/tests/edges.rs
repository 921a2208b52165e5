//! The edges of the API: which scope may call which route, what bad input gets back, and
//! that bad input writes nothing.

mod common;

use common::TestServer;
use liftoff_store::Store as _;
use liftoff_types::api::ErrorBody;
use liftoff_types::{NewAgent, NewQueue, Scope};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Who may call each route: `A`dmin, `U`ser, a`G`ent, the `R`un's own token, or `*`
/// (anyone, no token needed).
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/healthz", "*"),
    ("GET", "/api/v1/openapi.json", "*"),
    ("POST", "/api/v1/queues", "A"),
    ("GET", "/api/v1/queues", "AUG"),
    ("GET", "/api/v1/queues/q", "AUG"),
    ("DELETE", "/api/v1/queues/nope", "A"),
    ("POST", "/api/v1/queues/q/items", "AU"),
    ("GET", "/api/v1/items", "AUG"),
    ("GET", "/api/v1/items/1", "AUG"),
    ("GET", "/api/v1/items/1/files/x", "AUG"),
    ("POST", "/api/v1/items/999/cancel", "AU"),
    ("POST", "/api/v1/items/999/ack", "AG"),
    ("POST", "/api/v1/items/999/fail", "AG"),
    ("POST", "/api/v1/items/999/warn", "AG"),
    ("POST", "/api/v1/items/999/release", "AG"),
    ("POST", "/api/v1/agents", "AG"),
    ("GET", "/api/v1/agents", "AUG"),
    ("GET", "/api/v1/agents/1", "AUG"),
    ("POST", "/api/v1/agents/1/heartbeat", "AG"),
    ("POST", "/api/v1/agents/1/lease", "AG"),
    ("GET", "/api/v1/runs", "AUG"),
    ("GET", "/api/v1/runs/r1", "AUGR"),
    ("GET", "/api/v1/runs/r1/logs", "AUGR"),
    ("POST", "/api/v1/runs/r1/logs?fence=1&offset=0", "AG"),
    ("POST", "/api/v1/agents/1/stop", "A"),
    ("POST", "/api/v1/agents/1/acks", "AG"),
    ("POST", "/api/v1/agents/1/reports", "AG"),
    ("POST", "/api/v1/runs/r1/stop", "AUG"),
    ("POST", "/api/v1/runs/r1/metrics", "AGR"),
    ("GET", "/api/v1/runs/r1/metrics", "AUGR"),
    (
        "PUT",
        "/api/v1/artifacts/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "AU",
    ),
    (
        "GET",
        "/api/v1/artifacts/sha256:0000000000000000000000000000000000000000000000000000000000000000",
        "AUG",
    ),
    ("POST", "/api/v1/jobs/j/versions", "AU"),
    ("GET", "/api/v1/jobs", "AUG"),
    ("GET", "/api/v1/jobs/j", "AUG"),
    ("GET", "/api/v1/jobs/j/versions/latest", "AUG"),
    ("POST", "/api/v1/sweeps", "AU"),
    ("GET", "/api/v1/sweeps", "AUG"),
    ("GET", "/api/v1/sweeps/nope", "AUG"),
    ("POST", "/api/v1/sweeps/nope/state", "AUG"),
    ("POST", "/api/v1/sweeps/nope/runs", "AG"),
    ("POST", "/api/v1/runs/r1/state", "AG"),
    ("POST", "/api/v1/tokens", "A"),
    ("GET", "/api/v1/tokens", "A"),
    ("DELETE", "/api/v1/tokens/999", "A"),
];

/// A body that is valid for the route, so only auth decides between allowed and not.
fn body_for(path: &str) -> Value {
    match path {
        p if p.ends_with("/sweeps/nope/state") => json!({"state": "paused"}),
        "/api/v1/queues" => json!({"name": format!("n{}", rand_suffix())}),
        "/api/v1/queues/q/items" => json!({"overrides": {"entry_point": ["true"]}}),
        p if p.ends_with("/ack") => json!({"fence": 1, "run_id": "r9"}),
        p if p.ends_with("/fail") => json!({"fence": 1, "message": "m", "phase": "run"}),
        p if p.ends_with("/warn") => json!({"fence": 1, "message": "m"}),
        p if p.ends_with("/release") => json!({"fence": 1}),
        "/api/v1/agents" => json!({"hostname": "h", "queues": ["q"]}),
        p if p.ends_with("/heartbeat") => json!({"status": "polling"}),
        p if p.ends_with("/lease") => json!({"queues": ["empty"], "wait_ms": 0}),
        p if p.ends_with("/state") => json!({"fence": 1, "state": "running"}),
        p if p.ends_with("/acks") => json!({"acks": []}),
        p if p.ends_with("/reports") => json!({"reports": []}),
        "/api/v1/tokens" => json!({"name": "t", "scope": "user"}),
        "/api/v1/sweeps" => json!({"queue": "q", "config":
            {"program": "train.py", "method": "random", "parameters": {"x": {"min": 0.0, "max": 1.0}}}}),
        "/api/v1/jobs/j/versions" => json!({"kind": "image", "source": {"image": "python:3.11"},
            "entrypoint": ["python"]}),
        p if p.ends_with("/metrics") => json!({"records": [{"step": 1, "loss": 0.5}]}),
        p if p.ends_with("/sweeps/nope/runs") => {
            json!({"index": 0, "spec": {"overrides": {"entry_point": ["true"]}}})
        }
        _ => json!({}),
    }
}

/// A lease of up to `max` items of queue `q`, at once.
fn lease_of_q(max: u32) -> liftoff_types::api::LeaseRequest {
    liftoff_types::api::LeaseRequest {
        queues: vec!["q".into()],
        max,
        wait_ms: 0,
        lease_ms: 60_000,
        runs: true,
        schedulers: true,
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

async fn call(
    t: &TestServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> StatusCode {
    let http = reqwest::Client::new();
    let mut req = http.request(Method::from_bytes(method.as_bytes()).unwrap(), t.url(path));
    if let Some(auth) = auth {
        req = req.header("Authorization", auth);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_by_every_scope() {
    let t = TestServer::start().await;
    t.admin.create_queue(&NewQueue::named("q")).await.unwrap();
    t.admin
        .create_queue(&NewQueue::named("empty"))
        .await
        .unwrap();
    let agent = t
        .agent
        .register_agent(&NewAgent::on("test", &["q"]))
        .await
        .unwrap();
    // A live run "r1", for the run-scoped token.
    t.user
        .enqueue(
            "q",
            &liftoff_types::LaunchSpec::command(vec!["true".into()]),
        )
        .await
        .unwrap();
    let lease = t
        .agent
        .lease(agent.id, &lease_of_q(1))
        .await
        .unwrap()
        .leases
        .remove(0);
    let ack = liftoff_types::api::AckRequest {
        fence: lease.fence,
        run_id: "r1".parse().unwrap(),
        handle: json!({}),
        state: None,
    };
    let run_token = t.agent.ack(lease.item.id, &ack).await.unwrap().run_token;
    let mut failures = Vec::new();
    for (method, path, who) in ROUTES {
        let body = (*method == "POST").then(|| body_for(path));
        let callers: [(&str, Option<String>, Option<char>); 7] = [
            ("no token", None, None),
            ("unknown token", Some("Bearer lft_0000".into()), None),
            (
                "not bearer",
                Some(format!("Basic {}", t.token(Scope::Admin))),
                None,
            ),
            (
                "admin",
                Some(format!("Bearer {}", t.token(Scope::Admin))),
                Some('A'),
            ),
            (
                "user",
                Some(format!("Bearer {}", t.token(Scope::User))),
                Some('U'),
            ),
            (
                "agent",
                Some(format!("Bearer {}", t.token(Scope::Agent))),
                Some('G'),
            ),
            ("run r1", Some(format!("Bearer {run_token}")), Some('R')),
        ];
        for (name, auth, letter) in callers {
            let status = call(&t, method, path, auth.as_deref(), body.clone()).await;
            let ok = match (*who == "*", letter) {
                (true, _) => status.is_success(),
                (false, None) => status == StatusCode::UNAUTHORIZED,
                (false, Some(l)) if who.contains(l) => {
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
                }
                (false, Some(_)) => status == StatusCode::FORBIDDEN,
            };
            if !ok {
                failures.push(format!("{method} {path} as {name}: {status}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "scope matrix broken:\n{}",
        failures.join("\n")
    );
}

/// A run token is signed, not stored: it works for its run while the run is live, on any
/// server of the store (one restarted, or a replica), and a forged or re-aimed one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tokens_are_signed_for_their_run_and_end_with_it() {
    let t = TestServer::start().await;
    t.admin.create_queue(&NewQueue::named("q")).await.unwrap();
    let agent = t
        .agent
        .register_agent(&NewAgent::on("test", &["q"]))
        .await
        .unwrap();
    let spec = liftoff_types::LaunchSpec::command(vec!["true".into()]);
    for _ in 0..2 {
        t.user.enqueue("q", &spec).await.unwrap();
    }
    let leases = t
        .agent
        .lease(agent.id, &lease_of_q(2))
        .await
        .unwrap()
        .leases;
    let mut tokens = Vec::new();
    for (lease, run) in leases.iter().zip(["r1", "r2"]) {
        let ack = liftoff_types::api::AckRequest {
            fence: lease.fence,
            run_id: run.parse().unwrap(),
            handle: json!({}),
            state: None,
        };
        let first = t.agent.ack(lease.item.id, &ack).await.unwrap().run_token;
        let again = t.agent.ack(lease.item.id, &ack).await.unwrap().run_token;
        assert_eq!(first, again, "an ack sent again gets the same token");
        tokens.push(first);
    }
    let r1: liftoff_types::RunId = "r1".parse().unwrap();
    let as_run = |token: &str| liftoff_client::Client::new(&t.server.url(), Some(token.into()));
    assert_eq!(
        as_run(&tokens[0]).unwrap().get_run(&r1).await.unwrap().id,
        r1
    );
    assert_eq!(
        t.store
            .list_tokens()
            .await
            .unwrap()
            .iter()
            .filter(|i| i.scope == Scope::Run)
            .count(),
        0,
        "no run token is stored"
    );
    // Forged: a changed MAC, r1's MAC on r2, a token cut short, one of another key.
    let mut changed = tokens[0].clone();
    let last = if changed.ends_with('0') { "1" } else { "0" };
    changed.replace_range(changed.len() - 1.., last);
    let mac = tokens[0].rsplit('.').next().unwrap();
    let item2 = tokens[1].split('.').nth(1).unwrap();
    let aimed = format!("lfr_r2.{item2}.{mac}");
    let short = tokens[0][..tokens[0].len() - 2].to_string();
    let other = TestServer::start().await;
    let foreign = other.server.state.auth.run_token(&r1, leases[0].item.id);
    for forged in [
        changed,
        aimed,
        short,
        foreign,
        "lfr_r1".into(),
        "lfr_..".into(),
    ] {
        let err = call(
            &t,
            "GET",
            "/api/v1/runs/r1",
            Some(&format!("Bearer {forged}")),
            None,
        )
        .await;
        assert_eq!(err, StatusCode::UNAUTHORIZED, "{forged} was taken");
    }
    // A second server of the same store (a restart, a replica) takes it.
    let second = liftoff_server::start(
        liftoff_server::ServerConfig::local("127.0.0.1:0".parse().unwrap()),
        t.store.clone(),
    )
    .await
    .unwrap();
    let on_second = liftoff_client::Client::new(&second.url(), Some(tokens[0].clone())).unwrap();
    assert_eq!(on_second.get_run(&r1).await.unwrap().id, r1);
    // The run ends: its token stops working at once, on every server.
    let end = liftoff_types::RunUpdate {
        fence: leases[0].fence,
        state: liftoff_types::RunState::Finished,
        exit_code: Some(0),
        message: None,
        handle: None,
        started_at_ms: None,
        not_started: false,
    };
    t.agent.update_run(&r1, &end).await.unwrap();
    let err = as_run(&tokens[0]).unwrap().get_run(&r1).await.unwrap_err();
    assert!(err.to_string().contains("run r1 has ended"), "{err}");
    assert!(on_second.get_run(&r1).await.is_err());
    let r2: liftoff_types::RunId = "r2".parse().unwrap();
    assert!(
        as_run(&tokens[1]).unwrap().get_run(&r2).await.is_ok(),
        "the other run's token still works"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_scopes_are_explained() {
    let t = TestServer::start().await;
    let err = t
        .user
        .create_queue(&NewQueue::named("x"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert!(err.to_string().contains("admin"), "{err}");
}

struct Bad {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<String>,
    content_type: &'static str,
    status: u16,
    /// A field path the error must name, when there is one.
    field: Option<&'static str>,
    rule: Option<&'static str>,
}

fn bad(
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
) -> Bad {
    Bad {
        what,
        method,
        path,
        body: Some(body.to_string()),
        content_type: "application/json",
        status,
        field: None,
        rule: None,
    }
}

impl Bad {
    fn field(mut self, field: &'static str) -> Bad {
        self.field = Some(field);
        self
    }
    fn rule(mut self, rule: &'static str) -> Bad {
        self.rule = Some(rule);
        self
    }
    fn raw(mut self, body: &str, content_type: &'static str) -> Bad {
        self.body = Some(body.to_string());
        self.content_type = content_type;
        self
    }
}

fn bad_inputs() -> Vec<Bad> {
    let cmd = json!({"overrides": {"entry_point": ["true"]}});
    let with_vars =
        |vars: Value| json!({"overrides": {"entry_point": ["true"]}, "template_variables": vars});
    vec![
        bad("malformed JSON", "POST", "/api/v1/queues/gpu/items", json!(null), 400).raw("{\"overrides\": ", "application/json"),
        bad("not JSON at all", "POST", "/api/v1/queues/gpu/items", json!(null), 415).raw("overrides=1", "text/plain"),
        bad("a string where a list belongs", "POST", "/api/v1/queues/gpu/items", json!({"overrides": {"entry_point": "true"}}), 422).field("overrides.entry_point"),
        bad("a number where a string belongs", "POST", "/api/v1/queues/gpu/items", json!({"job": 5}), 422).field("job"),
        bad("an unknown key", "POST", "/api/v1/queues/gpu/items", json!({"jobb": "x"}), 422),
        bad("nothing to run", "POST", "/api/v1/queues/gpu/items", json!({}), 422).field("spec"),
        bad("a bad priority", "POST", "/api/v1/queues/gpu/items", json!({"overrides": {"entry_point": ["true"]}, "priority": "urgent"}), 422).field("priority"),
        bad("an unknown queue", "POST", "/api/v1/queues/nope/items", cmd.clone(), 404),
        bad("a variable above its maximum", "POST", "/api/v1/queues/gpu/items", with_vars(json!({"gpus": 9})), 422).field("template_variables.gpus").rule("maximum"),
        bad("a variable below its minimum", "POST", "/api/v1/queues/gpu/items", with_vars(json!({"gpus": -1})), 422).field("template_variables.gpus").rule("minimum"),
        bad("a variable of the wrong type", "POST", "/api/v1/queues/gpu/items", with_vars(json!({"gpus": "four"})), 422).field("template_variables.gpus").rule("type"),
        bad("a variable not in its enum", "POST", "/api/v1/queues/gpu/items", with_vars(json!({"partition": "cpu"})), 422).field("template_variables.partition").rule("enum"),
        bad("an unknown variable", "POST", "/api/v1/queues/gpu/items", with_vars(json!({"colour": "red"})), 422).field("template_variables.colour").rule("unknown"),
        bad("a resource the queue does not run", "POST", "/api/v1/queues/gpu/items", json!({"overrides": {"entry_point": ["true"]}, "resource": "slurm"}), 422).field("resource"),
        bad("a body over the limit", "POST", "/api/v1/queues/gpu/items", json!({"overrides": {"entry_point": ["x".repeat(100_000)]}}), 413),
        bad("a bad queue name", "POST", "/api/v1/queues", json!({"name": "Bad Name"}), 422).field("name"),
        bad("a default outside its own bounds", "POST", "/api/v1/queues", json!({"name": "v", "template_variables": {"g": {"type": "integer", "default": 20, "maximum": 8}}}), 422).field("template_variables.g.default"),
        bad("a template using an undefined variable", "POST", "/api/v1/queues", json!({"name": "v", "config": {"a": "{{nope}}"}}), 422).field("config"),
        bad("a non-numeric item id", "GET", "/api/v1/items/abc", json!(null), 400),
        bad("a bad state filter", "GET", "/api/v1/items?state=bogus", json!(null), 400),
        bad("a bad limit", "GET", "/api/v1/items?limit=lots", json!(null), 400),
        bad("lease max 0", "POST", "/api/v1/agents/1/lease", json!({"queues": ["gpu"], "max": 0}), 422).field("max"),
        bad("a lease wait too long", "POST", "/api/v1/agents/1/lease", json!({"queues": ["gpu"], "wait_ms": 1_000_000_000u64}), 422).field("wait_ms"),
        bad("max_jobs below -1", "POST", "/api/v1/agents", json!({"hostname": "h", "queues": ["gpu"], "max_jobs": -5}), 422).field("max_jobs"),
        bad("max_jobs as a string", "POST", "/api/v1/agents", json!({"hostname": "h", "queues": ["gpu"], "max_jobs": "two"}), 422).field("max_jobs"),
        bad("an empty registration", "POST", "/api/v1/agents", json!({}), 422).field("queues"),
        bad("a registration without a host", "POST", "/api/v1/agents", json!({"queues": ["gpu"]}), 422).field("hostname"),
        bad("a registration as a list", "POST", "/api/v1/agents", json!([]), 422).field("body"),
        bad("a file name that climbs", "POST", "/api/v1/items/1/fail", json!({"fence": 1, "message": "m", "phase": "run", "files": [{"name": "../x", "content": ""}]}), 422).field("files[0].name"),
        bad("an unknown phase", "POST", "/api/v1/items/1/fail", json!({"fence": 1, "message": "m", "phase": "lunch"}), 422).field("phase"),
        bad("a run id with a slash", "POST", "/api/v1/items/1/ack", json!({"fence": 1, "run_id": "a/b"}), 422).field("run_id"),
        bad("an unknown route", "GET", "/api/v1/nothing", json!(null), 404),
        bad("a wrong method", "PUT", "/api/v1/queues", json!(null), 405),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_writes_nothing() {
    let t = TestServer::start().await;
    let gpu: NewQueue = serde_json::from_value(json!({
        "name": "gpu",
        "config": {"gres": "gpu:{{gpus}}", "partition": "{{partition}}"},
        "template_variables": {
            "gpus": {"type": "integer", "default": 1, "minimum": 0, "maximum": 8},
            "partition": {"type": "string", "enum": ["debug", "long"], "default": "debug"}
        }
    }))
    .unwrap();
    t.admin.create_queue(&gpu).await.unwrap();
    let admin = format!("Bearer {}", t.token(Scope::Admin));
    let http = reqwest::Client::new();
    let mut failures = Vec::new();
    for case in bad_inputs() {
        let mut req = http
            .request(
                Method::from_bytes(case.method.as_bytes()).unwrap(),
                t.url(case.path),
            )
            .header("Authorization", &admin);
        if case.method != "GET" {
            if let Some(body) = &case.body {
                req = req
                    .header("Content-Type", case.content_type)
                    .body(body.clone());
            }
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let Ok(body) = serde_json::from_str::<ErrorBody>(&text) else {
            failures.push(format!("{}: not the JSON error shape: {text}", case.what));
            continue;
        };
        if status != case.status {
            failures.push(format!(
                "{}: {status} instead of {} ({})",
                case.what, case.status, body.error.message
            ));
        }
        if let Some(field) = case.field {
            let named = body.error.fields.iter().any(|f| f.field == field);
            if !named
                || !body
                    .error
                    .message
                    .contains(field.split('.').next_back().unwrap())
            {
                failures.push(format!("{}: does not name {field}: {text}", case.what));
            }
        }
        if let Some(rule) = case.rule {
            if !body
                .error
                .fields
                .iter()
                .any(|f| f.rule.as_deref() == Some(rule))
            {
                failures.push(format!("{}: does not name rule {rule}: {text}", case.what));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad input handled wrongly:\n{}",
        failures.join("\n")
    );

    // Nothing those requests tried to write was written.
    let queues: Vec<String> = t
        .admin
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(queues, ["gpu"]);
    let depth = t.admin.get_queue("gpu").await.unwrap().depth.unwrap();
    assert_eq!(depth, Default::default());
    assert!(t
        .admin
        .list_items(&Default::default())
        .await
        .unwrap()
        .is_empty());
    assert!(t.admin.list_agents().await.unwrap().is_empty());
    assert!(t
        .admin
        .list_runs(&Default::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(t.admin.list_tokens().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_auth_is_refused_beyond_loopback() {
    let mut config = liftoff_server::ServerConfig::local("0.0.0.0:0".parse().unwrap());
    config.auth = false;
    let dir = tempfile::tempdir().unwrap();
    let store =
        std::sync::Arc::new(liftoff_store::SqliteStore::open(&dir.path().join("x.db")).unwrap());
    let err = liftoff_server::start(config.clone(), store.clone())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("without auth"), "{err}");
    config.bind = "127.0.0.1:0".parse().unwrap();
    let server = liftoff_server::start(config, store)
        .await
        .expect("loopback may run without auth");
    let queues = reqwest::get(format!("{}/api/v1/queues", server.url()))
        .await
        .unwrap();
    assert_eq!(queues.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let t = TestServer::start().await;
    let doc: Value = reqwest::get(t.url("/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path, _) in ROUTES {
        let path = path.split('?').next().unwrap();
        let templated = path
            .replace("/queues/q/", "/queues/{name}/")
            .replace("/queues/q", "/queues/{name}")
            .replace("/queues/nope", "/queues/{name}")
            .replace("/items/1/files/x", "/items/{id}/files/{name}")
            .replace("/items/999/", "/items/{id}/")
            .replace("/items/1", "/items/{id}")
            .replace("/agents/1", "/agents/{id}")
            .replace("/runs/r1", "/runs/{id}")
            .replace("/tokens/999", "/tokens/{id}")
            .replace("/sweeps/nope", "/sweeps/{id}")
            .replace("/jobs/j/versions/latest", "/jobs/{name}/versions/{version}")
            .replace("/jobs/j", "/jobs/{name}")
            .replace(
                "/artifacts/sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "/artifacts/{digest}",
            );
        let op = paths
            .get(&templated)
            .and_then(|p| p.get(method.to_lowercase()));
        assert!(
            op.is_some(),
            "{method} {templated} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["LaunchSpec"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_past_their_limit_are_refused_and_keep_nothing() {
    let artifacts = tempfile::tempdir().unwrap();
    let mut config = liftoff_server::ServerConfig::local("127.0.0.1:0".parse().unwrap());
    config.body_limit = 4 * 1024;
    config.artifacts = Some(artifacts.path().to_path_buf());
    // Larger than other bodies may be, smaller than this upload.
    config.artifact_limit = 64 * 1024;
    let t = TestServer::with_config(config).await;
    let big = vec![7u8; 100 * 1024];
    let digest = format!("sha256:{}", liftoff_artifacts_digest(&big));
    let e = t.user.upload_artifact(&digest, big).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(413), "{e}");
    // Past the general body limit but within the archive limit: taken.
    let fits = vec![8u8; 16 * 1024];
    let digest = format!("sha256:{}", liftoff_artifacts_digest(&fits));
    assert!(t.user.upload_artifact(&digest, fits.clone()).await.unwrap());
    assert!(
        !t.user.upload_artifact(&digest, fits).await.unwrap(),
        "kept once"
    );
    let mut files = 0;
    let mut stack = vec![artifacts.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
            }
        }
    }
    assert_eq!(files, 1, "only the upload that fit is kept");
    // A job naming an archive never uploaded is refused.
    let job = json!({"kind": "code", "source": {"digest": format!("sha256:{}", "a".repeat(64))},
        "entrypoint": ["python3", "x.py"]});
    let status = call(
        &t,
        "POST",
        "/api/v1/jobs/j/versions",
        Some(&format!("Bearer {}", t.token(Scope::User))),
        Some(job),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

fn liftoff_artifacts_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
