//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver), against
//! the real server binary: logging in, a run appearing on the overview and its output
//! followed live, a stop pressed in the page, a queue nobody serves, a sweep's chart, what a
//! read-only token sees and may do, and a launch form refused by the job's schema.
//! Screenshots of each page go to `target/dashboard-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the test script installs them); without
//! them the tests are skipped, except under `CI=true`, where they fail.

mod common;

use common::{ok, wait_async, ServerProcess};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use liftoff_types::{ItemState, LaunchSpec, NewQueue, RunState};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Time for a page to show a change pushed by the server (the target is a second; this
/// allows for a loaded machine).
const LIVE: Duration = Duration::from_secs(10);

/// A chromedriver of our own and one browser session on it; both end on drop.
struct Session {
    driver: Child,
    browser: Option<Browser>,
    _profile: tempfile::TempDir,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Session {
    fn b(&self) -> &Browser {
        self.browser.as_ref().unwrap()
    }

    async fn close(mut self) {
        if let Some(b) = self.browser.take() {
            let _ = b.close().await;
        }
    }
}

/// A browser, or `None` (skipped) when Chromium is not installed outside CI.
async fn browser() -> Option<Session> {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium or chromedriver missing ({CHROMIUM}, {CHROMEDRIVER}): \
             apt-get install chromium chromium-driver"
        );
        eprintln!("skipped: no {CHROMIUM} or {CHROMEDRIVER}");
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.path().display())],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut session = Session {
        driver,
        browser: None,
        _profile: profile,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(b) => {
                session.browser = Some(b);
                return Some(session);
            }
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot start Chromium: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn shots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(b: &Browser, name: &str) {
    let png = b.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

async fn text(b: &Browser, css: &str) -> String {
    match b.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn exists(b: &Browser, css: &str) -> bool {
    !b.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Waits until the element at `css` holds `want`.
async fn wait_text(b: &Browser, css: &str, want: &str) {
    let deadline = tokio::time::Instant::now() + LIVE;
    loop {
        let got = text(b, css).await;
        if got.contains(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {want:?} in {css}; it shows: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log_in(b: &Browser, url: &str, token: &str) {
    b.goto(&format!("{url}/")).await.unwrap();
    let here = b.current_url().await.unwrap();
    assert_eq!(
        here.path(),
        "/login",
        "a page without a session asks to log in"
    );
    screenshot(b, "login").await;
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.find(Locator::Css("section.login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(b, "h1", "Queues").await;
}

fn token(server: &ServerProcess) -> String {
    server.client_file()["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_logs_in_sees_a_run_appear_follows_its_output_and_stops_it() {
    let Some(session) = browser().await else {
        return;
    };
    let b = session.b();
    let server = ServerProcess::start_with(&["up", "--bind", "127.0.0.1:0"]);
    let url = server.url();
    let client = server.client();

    // A wrong token is refused on the login page, and nothing opens.
    b.goto(&format!("{url}/login")).await.unwrap();
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys("lft_0000")
        .await
        .unwrap();
    b.find(Locator::Css("section.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(b, "p.error", "unknown or revoked").await;

    log_in(b, &url, &token(&server)).await;
    wait_text(b, "tr[data-queue=default]", "default").await;
    // The session cookie is out of scripts' reach.
    let cookies = b.execute("return document.cookie", vec![]).await.unwrap();
    assert_eq!(cookies, serde_json::json!(""), "HttpOnly");

    // A run launched elsewhere appears on the open overview without a reload.
    let spec = LaunchSpec::command(vec![
        "sh".into(),
        "-c".into(),
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done".into(),
    ]);
    let item = client.enqueue("default", &spec).await.unwrap();
    wait_text(b, &format!("tr[data-item='{}']", item.id), "tick").await;
    screenshot(b, "overview").await;

    // Its page follows the output as it is written.
    b.goto(&format!("{url}/items/{}", item.id)).await.unwrap();
    wait_text(b, "#log", "tick 3").await;
    let before = text(b, "#log").await;
    wait_text(b, "#log", &format!("tick {}", before.lines().count() + 5)).await;
    let shown = text(b, "#log").await;
    let ticks: Vec<&str> = shown.lines().filter(|l| l.starts_with("tick")).collect();
    for (n, line) in ticks.iter().enumerate() {
        assert_eq!(
            *line,
            format!("tick {}", n + 1),
            "every line once, in order: {shown}"
        );
    }
    screenshot(b, "run").await;

    // Stop, pressed in the page, stops the run; the page shows it.
    b.find(Locator::Css("form[action$='/stop'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(b, "#live h1", "stopped").await;
    let run = client
        .get_run(
            client
                .get_item(item.id)
                .await
                .unwrap()
                .run_id
                .as_ref()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Stopped);
    assert!(
        !exists(b, "form[action$='/stop']").await,
        "no stop button on an ended run"
    );
    screenshot(b, "run-stopped").await;

    // The agents page lists the `up` agent with its slots.
    b.goto(&format!("{url}/agents")).await.unwrap();
    wait_text(b, "table.agents", "default").await;
    screenshot(b, "agents").await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_no_agent_serves_says_so_and_why_its_items_wait() {
    let Some(session) = browser().await else {
        return;
    };
    let b = session.b();
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("gpu")).await.unwrap();
    let item = client
        .enqueue("gpu", &LaunchSpec::command(vec!["true".into()]))
        .await
        .unwrap();
    let reason = client
        .get_item(item.id)
        .await
        .unwrap()
        .pending_reason
        .unwrap();
    log_in(b, &server.url(), &token(&server)).await;
    wait_text(
        b,
        "tr[data-queue=gpu] .warning",
        "no agent serves this queue",
    )
    .await;
    b.goto(&format!("{}/queues/gpu", server.url()))
        .await
        .unwrap();
    wait_text(b, "p.warning", "no agent serves this queue").await;
    // The same reason the API and CLI give, with the item's place in line.
    // (its `commands` shown as code).
    let shown = reason.replace('`', "");
    wait_text(b, &format!("tr[data-item='{}'] .reason", item.id), &shown).await;
    assert!(exists(b, &format!("tr[data-item='{}'] .reason code", item.id)).await);
    assert_eq!(
        text(b, &format!("tr[data-item='{}'] td.num", item.id)).await,
        "next"
    );
    screenshot(b, "queue").await;

    // Nothing changes, so nothing is pushed again: the page's live part stays the same
    // nodes (a reader's selection or open fold survives) while its ages count up.
    b.execute(
        "document.querySelector('#live table.pending').dataset.mark = 'kept'",
        vec![],
    )
    .await
    .unwrap();
    let age = format!("tr[data-item='{}'] time.ago", item.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let shown = text(b, &age).await;
        let secs: u64 = shown.split(' ').next().unwrap_or("").parse().unwrap_or(0);
        if secs >= 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "age shows {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        exists(b, "#live table.pending[data-mark=kept]").await,
        "the live part was replaced though nothing changed"
    );
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_sees_no_actions_and_its_posts_are_refused() {
    let Some(session) = browser().await else {
        return;
    };
    let b = session.b();
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let item = client
        .enqueue("q", &LaunchSpec::command(vec!["true".into()]))
        .await
        .unwrap();
    let read = ok(&server.run(&["token", "create", "--scope", "read", "--name", "viewer"]));
    let url = server.url();
    log_in(b, &url, read.trim()).await;
    b.goto(&format!("{url}/items/{}", item.id)).await.unwrap();
    wait_text(b, "#live h1", "pending").await;
    assert!(
        !exists(b, "#live form").await,
        "no action buttons for a read token"
    );
    b.goto(&format!("{url}/queues/q")).await.unwrap();
    wait_text(b, "table.pending", "true").await;
    assert!(!exists(b, "form[action$='/cancel']").await);
    screenshot(b, "read-only").await;

    // A post made by hand from the page, with the page's own CSRF value, is refused by the
    // token's scope; one without it by the CSRF check. The item is untouched.
    let status = |body: &str| {
        format!(
            "const f = document.querySelector('form.logout input[name=csrf]').value;
             return fetch('/items/{}/cancel', {{method: 'POST',
               headers: {{'Content-Type': 'application/x-www-form-urlencoded'}},
               body: {body}}}).then(r => r.status);",
            item.id
        )
    };
    let with_csrf = b
        .execute(&status("'csrf=' + encodeURIComponent(f)"), vec![])
        .await
        .unwrap();
    assert_eq!(
        with_csrf,
        serde_json::json!(403),
        "a read token may not cancel"
    );
    let without = b.execute(&status("'csrf=forged'"), vec![]).await.unwrap();
    assert_eq!(without, serde_json::json!(403));
    assert_eq!(
        client.get_item(item.id).await.unwrap().state,
        ItemState::Pending
    );

    // A cross-site form post carrying the session cookie (as a browser without SameSite
    // would send it) is refused too.
    let cookie = b.get_named_cookie("liftoff_session").await.unwrap();
    let admin_page = reqwest::Client::new()
        .post(format!("{url}/items/{}/cancel", item.id))
        .header("Cookie", format!("liftoff_session={}", cookie.value()))
        .header("Origin", "http://evil.example")
        .form(&[("csrf", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(admin_page.status(), 403);
    assert_eq!(
        client.get_item(item.id).await.unwrap().state,
        ItemState::Pending
    );

    // Revoking the token ends the session.
    let tokens = client.list_tokens().await.unwrap();
    let viewer = tokens.iter().find(|t| t.name == "viewer").unwrap();
    client.delete_token(viewer.id).await.unwrap();
    wait_async(
        "the revoked session to end",
        Duration::from_secs(15),
        || async {
            b.goto(&format!("{url}/queues/q")).await.unwrap();
            b.current_url().await.unwrap().path() == "/login"
        },
    )
    .await;
    session.close().await;
}

const OBJECTIVE: &str = r#"
import argparse, json, os
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
with open(os.environ["LIFTOFF_METRICS_FILE"], "a") as m:
    m.write(json.dumps({"step": 1, "f": (a.x - 3) ** 2}) + "\n")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_page_draws_a_point_per_finished_run_and_the_best() {
    let Some(session) = browser().await else {
        return;
    };
    let b = session.b();
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    std::fs::write(dir.join("objective.py"), OBJECTIVE).unwrap();
    let sweep_file = dir.join("sweep.yaml");
    std::fs::write(
        &sweep_file,
        format!(
            "program: {}\nmethod: grid\nmetric: {{name: f, goal: minimize}}\n\
             parameters:\n  x: {{values: [1, 2, 3, 4]}}\n",
            dir.join("objective.py").display()
        ),
    )
    .unwrap();
    let out = ok(&server.run(&[
        "sweep",
        "create",
        sweep_file.to_str().unwrap(),
        "--queue",
        "q",
        "-o",
        "json",
    ]));
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    log_in(b, &server.url(), &token(&server)).await;
    b.goto(&format!("{}/sweeps/{id}", server.url()))
        .await
        .unwrap();
    wait_text(b, "#live h1", "pending").await;
    assert!(text(b, "#sweep-chart").await.contains("no values yet"));
    // The page is open before any agent serves the queue: what it shows next is pushed.
    let _agent = server.agent(&dir.join("agent"), &["--queue", "q", "--max-jobs", "2"]);
    wait_text(b, "#live h1", "finished").await;
    let deadline = tokio::time::Instant::now() + LIVE;
    loop {
        let points = b
            .find_all(Locator::Css("#sweep-chart g.s0 circle.pt"))
            .await
            .unwrap()
            .len();
        if points == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{points} points, not 4"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The best so far is drawn, and named in words: x = 3, f = 0.
    assert!(exists(b, "#sweep-chart g.s1 path.line").await);
    wait_text(b, "p.best", "f = 0").await;
    assert!(text(b, "p.best").await.contains("\"x\":3"));
    screenshot(b, "sweep").await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_launch_that_breaks_the_jobs_schema_shows_the_errors_by_their_fields() {
    let Some(session) = browser().await else {
        return;
    };
    let b = session.b();
    let server = ServerProcess::start();
    let client = server.client();
    client.create_queue(&NewQueue::named("q")).await.unwrap();
    let dir = server.dir.path();
    std::fs::create_dir_all(dir.join("code")).unwrap();
    std::fs::write(dir.join("code/train.py"), "print('hi')\n").unwrap();
    std::fs::write(
        dir.join("schema.json"),
        r#"{"type": "object", "required": ["epochs"],
            "properties": {"lr": {"type": "number", "minimum": 0, "maximum": 1},
                           "epochs": {"type": "integer", "minimum": 1}}}"#,
    )
    .unwrap();
    ok(&server.run(&[
        "job",
        "create",
        "code",
        dir.join("code").to_str().unwrap(),
        "--name",
        "t",
        "--entrypoint",
        "python3 train.py",
        "--schema",
        dir.join("schema.json").to_str().unwrap(),
    ]));
    let url = server.url();
    log_in(b, &url, &token(&server)).await;
    b.goto(&format!("{url}/jobs/t")).await.unwrap();
    wait_text(b, "#live h1", "Job t").await;
    b.find(Locator::Css("#cfg-lr"))
        .await
        .unwrap()
        .send_keys("5")
        .await
        .unwrap();
    b.find(Locator::Css("#launch button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        b,
        "span.error[data-field='overrides.run_config.lr']",
        "above the maximum 1",
    )
    .await;
    assert!(
        text(b, "span.error[data-field='overrides.run_config.epochs']")
            .await
            .contains("required"),
        "every problem, beside its field"
    );
    // What was typed is kept.
    let lr = b
        .find(Locator::Css("#cfg-lr"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(lr.as_deref(), Some("5"));
    screenshot(b, "launch-refused").await;
    assert!(
        client
            .list_items(&Default::default())
            .await
            .unwrap()
            .is_empty(),
        "nothing enqueued"
    );

    // Fixed, it launches and opens the new item's page.
    let field = b.find(Locator::Css("#cfg-lr")).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys("0.1").await.unwrap();
    b.find(Locator::Css("#cfg-epochs"))
        .await
        .unwrap()
        .send_keys("2")
        .await
        .unwrap();
    b.find(Locator::Css("#launch button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(b, "#live h1", "Item").await;
    let items = client.list_items(&Default::default()).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].spec.overrides.run_config["lr"],
        serde_json::json!(0.1)
    );
    assert_eq!(
        items[0].spec.overrides.run_config["epochs"],
        serde_json::json!(2)
    );
    assert_eq!(items[0].spec.job.as_deref(), Some("t:v0"));
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_link_from_the_cli_opens_the_dashboard_signed_in_as_its_token() {
    let Some(session) = browser().await else {
        return;
    };
    let b = session.b();
    let server = ServerProcess::start();
    let url = server.url();
    let link = ok(&server.run(&["dashboard"])).trim().to_string();
    assert!(
        link.starts_with(&format!("{url}/login/link?code=")),
        "{link}"
    );
    assert!(!link.contains(&token(&server)), "the link carries no token");
    b.goto(&link).await.unwrap();
    wait_text(b, "h1", "Queues").await;
    wait_text(b, "nav .who", "admin").await;

    // A link with its code changed opens nothing, and says what to do.
    let forged = link.replace("code=", "code=0");
    b.goto(&forged).await.unwrap();
    wait_text(b, "p.error", "liftoff dashboard").await;
    assert_eq!(b.current_url().await.unwrap().path(), "/login/link");

    // A read token's link opens the read-only view.
    let read = ok(&server.run(&["token", "create", "--scope", "read", "--name", "viewer"]));
    let out = server.run_with(
        &["dashboard"],
        &[
            ("LIFTOFF_URL", url.as_str()),
            ("LIFTOFF_TOKEN", read.trim()),
        ],
    );
    let read_link = ok(&out).trim().to_string();
    b.delete_all_cookies().await.unwrap();
    b.goto(&read_link).await.unwrap();
    wait_text(b, "nav .who", "read").await;
    session.close().await;
}
