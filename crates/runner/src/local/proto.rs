//! The supervisor's wire protocol: JSON lines over a Unix socket. The agent sends requests
//! with an id and gets a reply with the same id; every connection also hears `exited` for
//! every run that ends.

use crate::Exit;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
