//! The supervisor's wire protocol: JSON lines over a Unix socket. The agent sends requests
//! with an id and gets a reply with the same id; every connection also hears `exited` for
//! every run that ends.

use crate::Exit;
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
    },
    /// Takes a run that is still waiting in line out of it.
    Withdraw { id: u64, run_id: String },
    /// The runs still alive.
    List { id: u64 },
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
    },
    Running {
        id: u64,
        runs: Vec<Child>,
    },
    /// Whether a withdrawn run was still waiting (and so never started).
    Withdrawn {
        id: u64,
        withdrawn: bool,
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
    #[serde(serialize_with = "pairs")]
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub output: &'a Path,
    pub exit_file: &'a Path,
    pub limit: Option<u32>,
}

/// A map as `[[key, value], ...]`, the shape of `Vec<(String, String)>`.
fn pairs<S: serde::Serializer>(env: &&BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(env.iter())
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
    fn a_spawn_request_reads_back_as_written() {
        let env = BTreeMap::from([
            ("PATH".to_string(), "/bin".to_string()),
            ("X".to_string(), "a \"quoted\" value".to_string()),
        ]);
        let argv = vec!["echo".to_string(), "hi".to_string()];
        let line = serde_json::to_string(&SpawnRef {
            id: 7,
            run_id: "r1",
            program: Path::new("/bin/echo"),
            argv: &argv,
            env: &env,
            cwd: Path::new("/w"),
            output: Path::new("/w/out"),
            exit_file: Path::new("/w/exit"),
            limit: Some(2),
        })
        .unwrap();
        let Request::Spawn {
            id,
            run_id,
            program,
            argv: read_argv,
            env: read_env,
            limit,
            ..
        } = Request::parse(&line).unwrap()
        else {
            panic!("not a spawn: {line}");
        };
        assert_eq!((id, run_id.as_str(), limit), (7, "r1", Some(2)));
        assert_eq!(program, Path::new("/bin/echo"));
        assert_eq!(read_argv, argv);
        assert_eq!(read_env, env.into_iter().collect::<Vec<_>>());
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
