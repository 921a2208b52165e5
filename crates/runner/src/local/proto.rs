//! The supervisor's wire protocol: JSON lines over a Unix socket. The agent sends requests
//! with an id and gets a reply with the same id; every connection also hears `exited` for
//! every run that ends.
//!
//! The environment every run of an agent inherits is sent once per connection (`base`),
//! and each spawn request then carries only the run's own variables (`base: true`). A
//! supervisor of an earlier version answers `base` with a refusal: the agent then sends
//! whole environments, as before.

use crate::Exit;
use crate::RunEnv;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Spawn {
        id: u64,
        run_id: String,
        /// The executable, already found on the run's PATH, so the supervisor can start it
        /// with `posix_spawn` (a PATH lookup in a changed environment forces a fork).
        program: PathBuf,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: PathBuf,
        output: PathBuf,
        /// Written (atomically) when the run ends, so an agent that was down learns the end.
        exit_file: PathBuf,
        /// Start only while fewer runs than this are live; wait in line otherwise, and start
        /// the moment one ends (no round trip to the agent). `None`: start now.
        #[serde(default)]
        limit: Option<u32>,
        /// `env` goes over the connection's base environment (else it is the whole of it).
        #[serde(default)]
        base: bool,
    },
    /// The environment later spawn requests of this connection with `base` start from.
    Base { id: u64, env: Vec<(String, String)> },
    /// Takes a run that is still waiting in line out of it.
    Withdraw { id: u64, run_id: String },
    /// The runs still alive.
    List { id: u64 },
    /// The agent's lease on its runs, renewed after every heartbeat its server answered. No
    /// renewal for `ms`, and the runs are stopped (SIGTERM, `grace_ms`, SIGKILL) and those in
    /// line dropped: by then the server has declared the agent lost and may give its items to
    /// another agent. No answer (an older supervisor refuses it, harmlessly).
    Lease { id: u64, ms: u64, grace_ms: u64 },
    /// What to run, with run ids appended, for ends no agent heard (see
    /// [`super::Reporter`]). No answer (an older supervisor refuses it, harmlessly).
    Reporter {
        id: u64,
        program: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    Spawned {
        id: u64,
        pid: i32,
        start_time: u64,
    },
    Refused {
        id: u64,
        error: String,
        /// Refused for the agent's lapsed lease, not for anything of the run's: nothing ran,
        /// and the item may run later (absent from an earlier supervisor: false).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lapsed: bool,
    },
    Running {
        id: u64,
        runs: Vec<Child>,
        /// The last runs that ended (up to the supervisor's bound), newest last: a run whose
        /// agent was killed between the spawn and the journal's record of it is found here
        /// once ended, so the restarted agent reports its real end instead of "never
        /// started" (and its item is not run again).
        #[serde(default)]
        ended: Vec<Child>,
    },
    /// Whether a withdrawn run was still waiting (and so never started).
    Withdrawn {
        id: u64,
        withdrawn: bool,
    },
    /// The base environment is taken.
    BaseTaken {
        id: u64,
    },
    Exited {
        run_id: String,
        pid: i32,
        exit: Exit,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    pub run_id: String,
    pub pid: i32,
    pub start_time: u64,
    pub exit_file: PathBuf,
}

/// A spawn request as the agent writes it: [`Request::Spawn`]'s JSON, made from the run's
/// spec where it is (a copy of the environment per run, only to be serialized and dropped,
/// was a visible part of a short run's cost).
#[derive(Serialize)]
#[serde(tag = "op", rename = "spawn")]
pub struct SpawnRef<'a> {
    pub id: u64,
    pub run_id: &'a str,
    pub program: &'a Path,
    pub argv: &'a [String],
    pub env: EnvPairs<'a>,
    pub cwd: &'a Path,
    pub output: &'a Path,
    pub exit_file: &'a Path,
    pub limit: Option<u32>,
    /// Whether `env` is the run's own variables over the connection's base.
    pub base: bool,
}

/// An environment as a request carries it, as `[[name, value], ...]` (the shape of
/// `Vec<(String, String)>`), written from where it is.
pub enum EnvPairs<'a> {
    /// A run's whole environment (its own variables over the base).
    Whole(&'a RunEnv),
    /// One map: a run's own variables, or the base.
    Map(&'a BTreeMap<String, String>),
}

impl Serialize for EnvPairs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            EnvPairs::Whole(env) => s.collect_seq(env.iter()),
            EnvPairs::Map(env) => s.collect_seq(env.iter()),
        }
    }
}

/// The base request, made from the shared map where it is.
#[derive(Serialize)]
#[serde(tag = "op", rename = "base")]
pub struct BaseRef<'a> {
    pub id: u64,
    pub env: EnvPairs<'a>,
}

/// [`Request::Spawn`] read as a plain struct, the way the supervisor reads a request first:
/// an internally tagged enum is parsed twice (once into a buffer of values to find its tag),
/// and spawn requests are nearly all of them.
#[derive(Deserialize)]
pub struct SpawnWire {
    op: String,
    id: u64,
    run_id: String,
    program: PathBuf,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    output: PathBuf,
    exit_file: PathBuf,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    base: bool,
}

impl Request {
    /// Reads one request line.
    pub fn parse(line: &str) -> serde_json::Result<Request> {
        if let Ok(spawn) = serde_json::from_str::<SpawnWire>(line) {
            if spawn.op == "spawn" {
                return Ok(Request::Spawn {
                    id: spawn.id,
                    run_id: spawn.run_id,
                    program: spawn.program,
                    argv: spawn.argv,
                    env: spawn.env,
                    cwd: spawn.cwd,
                    output: spawn.output,
                    exit_file: spawn.exit_file,
                    limit: spawn.limit,
                    base: spawn.base,
                });
            }
        }
        serde_json::from_str(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_for_a_lapsed_lease_is_told_from_others_and_from_an_older_supervisor() {
        let lapsed = serde_json::to_string(&Message::Refused {
            id: 3,
            error: "lapsed".into(),
            lapsed: true,
        })
        .unwrap();
        let other = serde_json::to_string(&Message::Refused {
            id: 4,
            error: "the command is empty".into(),
            lapsed: false,
        })
        .unwrap();
        // An earlier supervisor's refusal has no `lapsed`, nor does a plain one.
        assert!(!other.contains("lapsed"), "{other}");
        let older = r#"{"kind":"refused","id":5,"error":"x"}"#;
        let read = |line: &str| match serde_json::from_str::<Message>(line).unwrap() {
            Message::Refused { lapsed, .. } => lapsed,
            m => panic!("{m:?}"),
        };
        assert!(read(&lapsed));
        assert!(!read(&other));
        assert!(!read(older));
    }

    #[test]
    fn a_spawn_request_reads_back_as_written() {
        let env = RunEnv {
            base: std::sync::Arc::new(BTreeMap::from([
                ("PATH".to_string(), "/bin".to_string()),
                ("HOME".to_string(), "/root".to_string()),
            ])),
            own: BTreeMap::from([
                ("PATH".to_string(), "/venv/bin:/bin".to_string()),
                ("X".to_string(), "a \"quoted\" value".to_string()),
            ]),
        };
        let argv = vec!["echo".to_string(), "hi".to_string()];
        let spawn = |env: EnvPairs, base: bool| {
            serde_json::to_string(&SpawnRef {
                id: 7,
                run_id: "r1",
                program: Path::new("/bin/echo"),
                argv: &argv,
                env,
                cwd: Path::new("/w"),
                output: Path::new("/w/out"),
                exit_file: Path::new("/w/exit"),
                limit: Some(2),
                base,
            })
            .unwrap()
        };
        let line = spawn(EnvPairs::Whole(&env), false);
        let Request::Spawn {
            id,
            run_id,
            program,
            argv: read_argv,
            env: read_env,
            limit,
            base,
            ..
        } = Request::parse(&line).unwrap()
        else {
            panic!("not a spawn: {line}");
        };
        assert_eq!(
            (id, run_id.as_str(), limit, base),
            (7, "r1", Some(2), false)
        );
        assert_eq!(program, Path::new("/bin/echo"));
        assert_eq!(read_argv, argv);
        // Each name once, the run's own PATH over the base's.
        let mut whole = read_env;
        whole.sort();
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            whole,
            vec![
                pair("HOME", "/root"),
                pair("PATH", "/venv/bin:/bin"),
                pair("X", "a \"quoted\" value"),
            ]
        );
        // Over the connection's base: the run's own variables only.
        let Request::Spawn {
            env: read_env,
            base,
            ..
        } = Request::parse(&spawn(EnvPairs::Map(&env.own), true)).unwrap()
        else {
            panic!("not a spawn");
        };
        assert!(base);
        assert_eq!(read_env, env.own.clone().into_iter().collect::<Vec<_>>());
        let base_line = serde_json::to_string(&BaseRef {
            id: 0,
            env: EnvPairs::Map(&env.base),
        })
        .unwrap();
        assert!(matches!(
            Request::parse(&base_line).unwrap(),
            Request::Base { id: 0, env } if env.len() == 2
        ));
        // The same line through the enum, as before: one format.
        assert!(matches!(
            serde_json::from_str::<Request>(&line).unwrap(),
            Request::Spawn { id: 7, .. }
        ));
        assert!(matches!(
            Request::parse(r#"{"op":"list","id":3}"#).unwrap(),
            Request::List { id: 3 }
        ));
        assert!(Request::parse(r#"{"op":"spawn","id":1}"#).is_err());
    }
}
