//! The supervisor's tests: environments, the teller, the lease.

use super::*;
use std::path::PathBuf;

fn spawn_request(id: u64, dir: &Path, env: &[(&str, &str)], base: bool) -> Request {
    Request::Spawn {
        id,
        run_id: format!("r{id}"),
        program: PathBuf::from("/bin/sh"),
        argv: vec!["sh".into(), "-c".into(), "echo \"$A $B\" > seen".into()],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd: dir.to_path_buf(),
        output: dir.join("output.log"),
        exit_file: dir.join("exit.json"),
        limit: None,
        base,
    }
}

#[test]
fn a_run_gets_the_base_under_its_own_variables_and_never_runs_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, supervisor) = UnixStream::pair().unwrap();
    std::thread::spawn(move || serve(Arc::new(Shared::default()), supervisor));
    let mut to = agent.try_clone().unwrap();
    let mut from = BufReader::new(agent).lines();
    let mut ask = |request: &Request| {
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        to.write_all(&line).unwrap();
    };
    let mut next = || -> Message { serde_json::from_str(&from.next().unwrap().unwrap()).unwrap() };

    // Over a base this connection never sent: refused, nothing started.
    ask(&spawn_request(1, dir.path(), &[("B", "own")], true));
    assert!(
        matches!(next(), Message::Refused { id: 1, ref error, lapsed: false } if error.contains("base")),
    );
    assert!(!dir.path().join("seen").exists());

    ask(&Request::Base {
        id: 0,
        env: vec![("A".into(), "base".into()), ("B".into(), "base".into())],
    });
    assert!(matches!(next(), Message::BaseTaken { id: 0 }));
    ask(&spawn_request(2, dir.path(), &[("B", "own")], true));
    assert!(matches!(next(), Message::Spawned { id: 2, .. }));
    assert!(matches!(next(), Message::Exited { exit, .. } if exit.code == 0));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("seen")).unwrap(),
        "base own\n",
        "the base's A, the run's own B over the base's"
    );

    // A whole environment, as an agent of an earlier version sends: no base under it.
    ask(&spawn_request(3, dir.path(), &[("B", "whole")], false));
    assert!(matches!(next(), Message::Spawned { id: 3, .. }));
    assert!(matches!(next(), Message::Exited { .. }));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("seen")).unwrap(),
        " whole\n"
    );
}

fn run_request(id: u64, dir: &Path, script: &str) -> Request {
    Request::Spawn {
        id,
        run_id: format!("r{id}"),
        program: PathBuf::from("/bin/sh"),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![],
        cwd: dir.to_path_buf(),
        output: dir.join(format!("output{id}.log")),
        exit_file: dir.join(format!("exit{id}.json")),
        limit: None,
        base: false,
    }
}

#[test]
fn a_lone_end_is_told_at_once_and_ends_among_others_by_the_teller() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, supervisor) = UnixStream::pair().unwrap();
    let shared = Arc::new(Shared::default());
    // No teller yet: what is told now is told by the worker itself.
    std::thread::spawn({
        let shared = shared.clone();
        move || serve(shared, supervisor)
    });
    let mut to = agent.try_clone().unwrap();
    // One socket: a timeout set through this clone holds for the reads below.
    let patience = agent.try_clone().unwrap();
    let wait = |limit: Duration| patience.set_read_timeout(Some(limit)).unwrap();
    wait(Duration::from_secs(10));
    let mut from = BufReader::new(agent).lines();
    let mut ask = |request: &Request| {
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        to.write_all(&line).unwrap();
    };
    let mut next = || -> Option<Message> {
        let line = from.next()?.ok()?;
        Some(serde_json::from_str(&line).unwrap())
    };

    // Alone: its end is told at once.
    ask(&run_request(1, dir.path(), "exit 3"));
    assert!(matches!(next(), Some(Message::Spawned { id: 1, .. })));
    assert!(
        matches!(next(), Some(Message::Exited { ref run_id, exit, .. }) if run_id == "r1" && exit.code == 3)
    );

    // Beside a live run: it waits for the teller, then comes with its code.
    ask(&run_request(2, dir.path(), "exec sleep 30"));
    let Some(Message::Spawned { id: 2, pid, .. }) = next() else {
        panic!("the long run did not start");
    };
    ask(&run_request(3, dir.path(), "exit 4"));
    assert!(matches!(next(), Some(Message::Spawned { id: 3, .. })));
    let exit_file = dir.path().join("exit3.json");
    wait_for_file(&exit_file);
    wait(Duration::from_millis(300));
    assert!(
        next().is_none(),
        "told without the teller while another run lives"
    );
    wait(Duration::from_secs(10));
    std::thread::spawn({
        let shared = shared.clone();
        move || tell(&shared)
    });
    assert!(
        matches!(next(), Some(Message::Exited { ref run_id, exit, .. }) if run_id == "r3" && exit.code == 4)
    );

    // The last run's end, alone again, is told at once.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        matches!(next(), Some(Message::Exited { ref run_id, exit, .. }) if run_id == "r2" && exit.signal == Some(9))
    );
}

#[test]
fn a_lapsed_lease_stops_the_runs_drops_the_line_and_refuses_spawns_until_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let (agent, supervisor) = UnixStream::pair().unwrap();
    let shared = Arc::new(Shared::default());
    for part in [serve as fn(Arc<Shared>, UnixStream), |s, _| watch_lease(&s)] {
        let (shared, stream) = (shared.clone(), supervisor.try_clone().unwrap());
        std::thread::spawn(move || part(shared, stream));
    }
    agent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut to = agent.try_clone().unwrap();
    let mut from = BufReader::new(agent).lines();
    let mut ask = |request: &Request| {
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        to.write_all(&line).unwrap();
    };
    let mut next = || -> Message { serde_json::from_str(&from.next().unwrap().unwrap()).unwrap() };
    ask(&Request::Lease {
        id: 0,
        ms: 300,
        grace_ms: 200,
    });
    // Deaf to SIGTERM: only the forced stop after the grace ends it.
    ask(&run_request(1, dir.path(), "trap '' TERM; exec sleep 30"));
    assert!(matches!(next(), Message::Spawned { id: 1, .. }));
    let mut waiting = run_request(2, dir.path(), "echo ran > ran2");
    if let Request::Spawn { limit, .. } = &mut waiting {
        *limit = Some(1);
    }
    ask(&waiting);
    let begun = Instant::now();
    assert!(
        matches!(next(), Message::Refused { id: 2, ref error, lapsed: true } if error.contains("lapsed")),
        "the run in line is dropped"
    );
    assert!(
        matches!(next(), Message::Exited { ref run_id, exit, .. } if run_id == "r1" && exit.signal == Some(9))
    );
    assert!(
        begun.elapsed() >= Duration::from_millis(150),
        "killed before the grace"
    );
    ask(&run_request(3, dir.path(), "echo ran > ran3"));
    assert!(matches!(
        next(),
        Message::Refused {
            id: 3,
            lapsed: true,
            ..
        }
    ));
    ask(&Request::Lease {
        id: 0,
        ms: 10_000,
        grace_ms: 200,
    });
    ask(&run_request(4, dir.path(), "exit 0"));
    assert!(matches!(next(), Message::Spawned { id: 4, .. }));
    assert!(matches!(next(), Message::Exited { ref run_id, .. } if run_id == "r4"));
    assert!(!dir.path().join("ran2").exists() && !dir.path().join("ran3").exists());
}

/// Waits (up to 10 s) until the supervisor has written a run's exit file.
/// A connection to the supervisor of `shared`, as an agent's, with its answers.
fn connect(shared: &Arc<Shared>) -> (UnixStream, std::io::Lines<BufReader<UnixStream>>) {
    let (agent, supervisor) = UnixStream::pair().unwrap();
    let shared = shared.clone();
    std::thread::spawn(move || serve(shared, supervisor));
    agent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(agent.try_clone().unwrap()).lines();
    (agent, reader)
}

/// Sends `request` on an agent's connection.
fn ask(to: &mut UnixStream, request: &Request) {
    let mut line = serde_json::to_vec(request).unwrap();
    line.push(b'\n');
    to.write_all(&line).unwrap();
}

fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(path).map_or(true, |m| m.len() == 0) {
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An agent killed between its spawn request and the journal's record of the handle: its
/// run ends with no agent to hear it. The agent that comes back lists the supervisor's runs
/// and finds that one among the ended, so it reports the real end instead of "never
/// started" (which would run the item again); until then the supervisor stays up longer.
#[test]
fn a_run_that_ended_with_no_agent_is_listed_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(Shared::default());
    let connect = || connect(&shared);
    let (mut first, mut heard) = connect();
    ask(&mut first, &run_request(1, dir.path(), "sleep 0.3; exit 5"));
    let line = heard.next().unwrap().unwrap();
    assert!(matches!(
        serde_json::from_str(&line).unwrap(),
        Message::Spawned { id: 1, .. }
    ));
    drop((first, heard));
    wait_for_file(&dir.path().join("exit1.json"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lock(&shared.children).untold_end {
        assert!(Instant::now() < deadline, "the untold end was not noted");
        std::thread::sleep(Duration::from_millis(5));
    }

    let (mut second, mut heard) = connect();
    ask(&mut second, &Request::List { id: 7 });
    let line = heard.next().unwrap().unwrap();
    let Message::Running { id: 7, runs, ended } = serde_json::from_str(&line).unwrap() else {
        panic!("no list: {line}");
    };
    assert!(runs.is_empty(), "{runs:?}");
    assert_eq!(
        ended.iter().map(|c| c.run_id.as_str()).collect::<Vec<_>>(),
        ["r1"]
    );
    assert_eq!(ended[0].exit_file, dir.path().join("exit1.json"));
    assert!(!lock(&shared.children).untold_end, "listed, so told");
}

/// An idle supervisor waits for its agent's return (an hour while it holds an end no agent
/// heard), but not once its socket is gone: no agent could reach it.
#[test]
fn an_idle_supervisor_leaves_when_no_agent_can_reach_it() {
    let moment = Duration::from_secs(1);
    assert!(!may_exit(moment, false, false));
    assert!(may_exit(IDLE_EXIT, false, false));
    assert!(!may_exit(IDLE_EXIT, true, false), "it holds an untold end");
    assert!(may_exit(moment, true, true), "its socket is gone");
}

/// A run that ends with no agent connected is given to the agent's reporter (in the
/// environment the agent gave it, nothing else), so its end reaches the server; one stopped
/// because the lease lapsed is not (its server declared it lost), and nor is one an agent
/// heard and kept (it outlived [`RECENT`] with its agent still there).
#[test]
fn ends_no_agent_heard_go_to_the_reporter_but_not_those_of_a_lapsed_lease() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(Shared::default());
    {
        let shared = shared.clone();
        std::thread::spawn(move || report_alone(&shared));
    }
    {
        let shared = shared.clone();
        std::thread::spawn(move || watch_lease(&shared));
    }
    let connect = || connect(&shared);
    let reported = dir.path().join("reported");
    let reporter = Request::Reporter {
        id: 0,
        program: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            format!(
                "echo \"$SECRET:${{HOME:-none}} $*\" >> {}",
                reported.display()
            ),
            "reporter".into(),
        ],
        env: vec![("SECRET".into(), "s3".into())],
    };
    let read = || std::fs::read_to_string(&reported).unwrap_or_default();

    let (mut first, mut heard) = connect();
    ask(&mut first, &reporter);
    ask(&mut first, &run_request(1, dir.path(), "sleep 0.3"));
    let line = heard.next().unwrap().unwrap();
    assert!(line.contains("spawned"), "{line}");
    drop((first, heard));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read().contains("r1") {
        assert!(Instant::now() < deadline, "r1 never reported: {:?}", read());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(read(), "s3:none r1\n", "its own environment only");

    // A lease that lapses with the agent gone: its run is stopped, not reported.
    let (mut second, mut heard) = connect();
    ask(
        &mut second,
        &Request::Lease {
            id: 0,
            ms: 200,
            grace_ms: 100,
        },
    );
    ask(&mut second, &run_request(2, dir.path(), "exec sleep 30"));
    let line = heard.next().unwrap().unwrap();
    assert!(line.contains("spawned"), "{line}");
    drop((second, heard));
    wait_for_file(&dir.path().join("exit2.json"));
    std::thread::sleep(REPORT_LINGER * 3);
    assert_eq!(read(), "s3:none r1\n", "the lapsed run is not reported");
}
