//! A full disk under the agent: its state directory on a small tmpfs that the test fills.
//! A run that ends meanwhile still ends, with its real exit code (the supervisor's
//! `waitpid`, not the exit file it cannot write) and the reason on record; the slot is
//! freed; a run that cannot be prepared goes back to the queue instead of failing; and once
//! space is back the agent takes work again. Needs root (to mount); under CI it fails
//! without.

mod common;

use common::{wait_async, ServerProcess};
use liftoff_types::{ItemState, LaunchSpec, NewQueue, RunState};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // What is left below a block, byte by byte.
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The agent's log, printed if the test fails.
struct ShowLogOnPanic(PathBuf);

impl Drop for ShowLogOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.0).unwrap_or_default();
            eprintln!("--- the agent's log ---\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_ends_the_run_frees_its_slot_and_service_resumes_with_space() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let log_file = state.with_extension("log");
    let _show = ShowLogOnPanic(log_file.clone());
    let Some(disk) = SmallDisk::mount(&state, "8m") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but a tmpfs cannot be mounted (the tests run as root in CI)"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let server = ServerProcess::start();
    let client = server.client();
    client
        .create_queue(&NewQueue::named("default"))
        .await
        .unwrap();
    // The default floor (64 MiB) is more than this whole disk: 1 MiB is the floor here.
    let config = tmp.path().join("agent.yaml");
    std::fs::write(&config, "min_free_disk_mb: 1\n").unwrap();
    let config = config.to_str().unwrap();
    let agent = server.agent(
        &state,
        &["--queue", "default", "--max-jobs", "1", "--config", config],
    );
    let sh = |script: &str| LaunchSpec::command(vec!["sh".into(), "-c".into(), script.into()]);
    let first = client
        .enqueue("default", &sh("echo before; sleep 2; echo after; exit 4"))
        .await
        .unwrap();
    wait_async(
        "the first run to start",
        Duration::from_secs(30),
        || async {
            let item = client.get_item(first.id).await.unwrap();
            match item.run_id {
                Some(run) => client.get_run(&run).await.unwrap().state == RunState::Running,
                None => false,
            }
        },
    )
    .await;
    disk.fill();

    // It ends as it did, exit 4, though its exit file could not be written.
    wait_async("the first run to end", Duration::from_secs(30), || async {
        client.get_item(first.id).await.unwrap().state.is_terminal()
    })
    .await;
    let item = client.get_item(first.id).await.unwrap();
    assert_eq!(item.state, ItemState::Failed, "{item:?}");
    let run = client.get_run(item.run_id.as_ref().unwrap()).await.unwrap();
    assert_eq!(run.exit_code, Some(4), "{run:?}");

    // The next cannot be prepared on a full disk: it waits on the queue, not failed.
    let second = client
        .enqueue("default", &sh("echo second; exit 0"))
        .await
        .unwrap();
    let log = || std::fs::read_to_string(state.with_extension("log")).unwrap_or_default();
    wait_async(
        "the agent to say its disk is full",
        Duration::from_secs(30),
        || async { log().contains("No space left on device") },
    )
    .await;
    let waiting = client.get_item(second.id).await.unwrap();
    assert!(
        !waiting.state.is_terminal(),
        "a run failed for the agent's full disk: {waiting:?}"
    );

    // Space back: the agent takes it and it runs to its end.
    disk.free();
    wait_async(
        "the second run to finish",
        Duration::from_secs(60),
        || async { client.get_item(second.id).await.unwrap().state == ItemState::Finished },
    )
    .await;
    let run = client.get_item(second.id).await.unwrap().run_id.unwrap();
    let out = client.read_log(&run, 0).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "second\n");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_server_refuses_writes_clearly_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("data"), "8m") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but a tmpfs cannot be mounted (the tests run as root in CI)"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let mut server = ServerProcess::start_in(tmp, &["server", "--bind", "127.0.0.1:0"]);
    let client = server.client();
    client
        .create_queue(&NewQueue::named("default"))
        .await
        .unwrap();
    let spec = |n: usize| LaunchSpec::command(vec!["echo".into(), format!("item {n}")]);
    let mut accepted = Vec::new();
    for n in 0..20 {
        accepted.push(client.enqueue("default", &spec(n)).await.unwrap().id);
    }
    disk.fill();

    // Enqueues go on until the database has no room left; the one that fails says why.
    let refusal = loop {
        assert!(accepted.len() < 20_000, "the server never ran out of room");
        match client.enqueue("default", &spec(accepted.len())).await {
            Ok(item) => accepted.push(item.id),
            Err(e) => break e.to_string(),
        }
    };
    // 507, a server error: the agent retries its reports instead of taking a conflict (409)
    // to mean its item moved on, and dropping them.
    assert!(
        refusal.contains("disk is full") && refusal.contains("507"),
        "a write refused on a full disk does not say so: {refusal}"
    );
    // Reads still answer.
    let first = client.get_item(accepted[0]).await.unwrap();
    assert_eq!(first.spec, spec(0));

    // Space back: writes go through again, with no restart.
    disk.free();
    accepted.push(
        client
            .enqueue("default", &spec(accepted.len()))
            .await
            .unwrap()
            .id,
    );

    // Every accepted item is there, once, across a kill -9 and a restart; nothing else is.
    server.restart();
    let mut stored = Vec::new();
    let mut after = Some(0);
    loop {
        let filter = liftoff_types::api::ItemFilter {
            queue: Some("default".into()),
            after,
            limit: Some(1000),
            ..Default::default()
        };
        let page = client.list_items(&filter).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.0);
        stored.extend(page.iter().map(|i| i.id));
    }
    assert_eq!(stored, accepted, "the items stored are not those accepted");
}
