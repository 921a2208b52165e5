//! Helpers for end-to-end tests: the real `liftoff` binary as server, agent and client.

#![allow(dead_code)]

use liftoff_client::Client;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_liftoff");

/// A `liftoff server` (or `liftoff up`) child on a free loopback port, stopped by its PID on
/// drop.
pub struct ServerProcess {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    /// The flags it started with, which a restart keeps (`--agent-timeout`, ...).
    pub args: Vec<String>,
}

impl ServerProcess {
    pub fn start() -> ServerProcess {
        ServerProcess::start_with(&["server", "--bind", "127.0.0.1:0"])
    }

    /// `args` is the subcommand and its flags (`server ...` or `up ...`).
    pub fn start_with(args: &[&str]) -> ServerProcess {
        ServerProcess::start_in(tempfile::tempdir().unwrap(), args)
    }

    /// Like [`start_with`](Self::start_with), its data directory `dir/data` (which may be
    /// made beforehand, a mount point).
    pub fn start_in(dir: tempfile::TempDir, args: &[&str]) -> ServerProcess {
        let log = dir.path().join("server.log");
        let child = Command::new(BIN)
            .args(args)
            .env("LIFTOFF_DATA_DIR", dir.path().join("data"))
            .env_remove("LIFTOFF_URL")
            .env_remove("LIFTOFF_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let args = args.iter().map(|a| a.to_string()).collect();
        let server = ServerProcess {
            child,
            dir,
            log,
            args,
        };
        let file = server.data_dir().join("client.json");
        wait_for("the server's client file", Duration::from_secs(20), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.contains("http://127.0.0.1:"))
        });
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn client_file(&self) -> Value {
        let text = std::fs::read_to_string(self.data_dir().join("client.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn url(&self) -> String {
        self.client_file()["url"].as_str().unwrap().to_string()
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        let token = self.client_file()["token"].as_str().unwrap().to_string();
        Client::new(&self.url(), Some(token)).unwrap()
    }

    /// Runs `liftoff ARGS` against this server (found through the client file).
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("LIFTOFF_DATA_DIR", self.data_dir())
            .env_remove("LIFTOFF_URL")
            .env_remove("LIFTOFF_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Starts `liftoff agent` with an agent-scoped token and its own state directory.
    pub fn agent(&self, state: &Path, args: &[&str]) -> AgentProcess {
        self.agent_with_env(state, args, &[])
    }

    pub fn agent_with_env(
        &self,
        state: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProcess {
        self.agent_at(&self.url(), state, args, env)
    }

    /// An agent with a token made through this server, talking to the server at `url` (another
    /// replica on the same database).
    pub fn agent_at(
        &self,
        url: &str,
        state: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProcess {
        let token = ok(&self.run(&[
            "token",
            "create",
            "--scope",
            "agent",
            "--name",
            "test-agent",
        ]));
        self.spawn_agent(url, token.trim(), state, args, env)
    }

    /// An agent with `token`, talking to `url` (whether or not a server answers there).
    pub fn spawn_agent(
        &self,
        url: &str,
        token: &str,
        state: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProcess {
        let token = token.to_string();
        let log = state.with_extension("log");
        let child = Command::new(BIN)
            .arg("agent")
            .args(args)
            .arg("--state-dir")
            .arg(state)
            .env("LIFTOFF_URL", url)
            .env("LIFTOFF_TOKEN", &token)
            .env("LIFTOFF_DATA_DIR", self.data_dir())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            // Appended: an agent restarted on the same state dir keeps its predecessor's log.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        AgentProcess { child, log, token }
    }
}

impl ServerProcess {
    /// SIGKILL, as a crash would; the data directory stays.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts `liftoff server` again on the same address and data directory (after
    /// [`kill9`](Self::kill9), or killing it now), and waits until it accepts connections.
    pub fn restart(&mut self) {
        let addr = self.url().trim_start_matches("http://").to_string();
        self.kill9();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        // The same flags as at the start, on the address it had.
        let mut args = vec!["server".to_string(), "--bind".to_string(), addr.clone()];
        if self.args.first().map(String::as_str) == Some("server") {
            let mut given = self.args[1..].iter();
            while let Some(flag) = given.next() {
                match flag.as_str() {
                    "--bind" => {
                        given.next();
                    }
                    _ => args.push(flag.clone()),
                }
            }
        }
        self.child = Command::new(BIN)
            .args(&args)
            .env("LIFTOFF_DATA_DIR", self.data_dir())
            .env_remove("LIFTOFF_URL")
            .env_remove("LIFTOFF_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for(
            "the server to listen again",
            Duration::from_secs(20),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct AgentProcess {
    pub child: Child,
    pub log: PathBuf,
    /// The agent's own token, which no run may see.
    pub token: String,
}

impl AgentProcess {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn wait_async<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until item `id` has ended; the item as it ended.
pub async fn wait_ended(
    client: &Client,
    id: liftoff_types::ItemId,
    within: Duration,
) -> liftoff_types::Item {
    wait_async("the item to end", within, || async {
        client.get_item(id).await.unwrap().state.is_terminal()
    })
    .await;
    client.get_item(id).await.unwrap()
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A failure: non-zero exit and exactly one line on stderr, which is returned.
pub fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// Live (not zombie) processes in a process group.
pub fn group_alive(pgrp: i32) -> Vec<i32> {
    liftoff_runner::procs::group_members(pgrp)
}

/// Kills what a test left running in a process group (by the group's id, which the test
/// read from the run's handle).
pub fn kill_group(pgrp: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgrp),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// A launch of `script` under `sh -c` in `image` (container and Kubernetes queues).
pub fn in_image(image: &str, script: &str) -> liftoff_types::LaunchSpec {
    let mut spec =
        liftoff_types::LaunchSpec::command(vec!["sh".into(), "-c".into(), script.into()]);
    spec.docker = Some(liftoff_types::spec::DockerSpec {
        docker_image: Some(image.into()),
    });
    spec
}

/// The whole output of an item's run, from the server.
pub async fn output(client: &Client, item: &liftoff_types::Item) -> String {
    let run = item.run_id.clone().expect("a run");
    String::from_utf8(client.read_log(&run, 0).await.unwrap()).unwrap()
}

/// Waits (a minute at most) until the item's run is running; its id.
pub async fn wait_running(client: &Client, id: liftoff_types::ItemId) -> liftoff_types::RunId {
    wait_async("the run to be running", Duration::from_secs(60), || async {
        match client.get_item(id).await.unwrap().run_id {
            Some(run) => {
                client.get_run(&run).await.unwrap().state == liftoff_types::RunState::Running
            }
            None => false,
        }
    })
    .await;
    client.get_item(id).await.unwrap().run_id.unwrap()
}
