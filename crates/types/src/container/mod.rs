//! `local-container` resource args: the flat map of `docker run` flags that W&B Launch passes
//! through (`{"gpus": "all", "env": ["A=1"], "shm-size": "8g"}`), checked against wandb 0.31's
//! allow-list and parsed into [`ContainerArgs`], what a container engine needs.
//!
//! Why an allow-list: anyone who may push to a queue writes these args, and the agent runs
//! them on its own machine. Flags that would let a run escape the container's sandbox (host
//! mounts, `--privileged`, host namespaces, devices, capabilities, another user) are refused,
//! as W&B refuses them since 0.31, and so is every flag nobody has reviewed. Values are checked
//! here too, so that a bad queue config is refused when it is created, not when a run starts.
//! Pure: no I/O.

mod values;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use values::*;

/// The flags allowed, for messages. W&B's own list says `cpu*` and `memory*`; these are the
/// flags of those patterns that docker has and liftoff passes on.
pub const ALLOWED: &str = "command, cpu-period, cpu-quota, cpu-shares, cpus, cpuset-cpus, \
    cpuset-mems, e, env, gpus, m, memory, memory-reservation, memory-swap, memory-swappiness, \
    name, pids-limit, platform, shm-size, ulimit, w, workdir";

/// The ulimit names docker knows (`docker run --ulimit name=soft:hard`).
const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// One refusal: `field` is a path such as `resource_args.volume` or `resource_args.env[1]`;
/// `message` says what is wrong and, for refused flags, that it is refused and which flags are
/// allowed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArgProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ArgProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The checked args, in the units a container engine's API takes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerArgs {
    /// From `env`/`e`, in the order given.
    pub env: Vec<(String, String)>,
    pub gpus: Option<Gpus>,
    /// `cpus` times 10^9 (`cpus: 1.5` is `1_500_000_000`).
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    /// Microseconds.
    pub cpu_period: Option<i64>,
    /// Microseconds; -1 for no limit.
    pub cpu_quota: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Bytes.
    pub memory: Option<i64>,
    /// Bytes of memory plus swap; -1 for unlimited swap.
    pub memory_swap: Option<i64>,
    /// Bytes.
    pub memory_reservation: Option<i64>,
    /// 0 to 100.
    pub memory_swappiness: Option<i64>,
    /// Bytes.
    pub shm_size: Option<i64>,
    /// -1 (or 0) for no limit.
    pub pids_limit: Option<i64>,
    pub platform: Option<String>,
    pub name: Option<String>,
    /// An absolute path.
    pub workdir: Option<String>,
    pub command: Option<Vec<String>>,
    pub ulimits: Vec<Ulimit>,
}

/// `--gpus`: all of them, a number of them, or the listed device ids or UUIDs.
#[derive(Clone, Debug, PartialEq)]
pub enum Gpus {
    All,
    Count(i64),
    Devices(Vec<String>),
}

/// `--ulimit name=soft:hard`; -1 means unlimited.
#[derive(Clone, Debug, PartialEq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Checks the args and reports every problem, not only the first. `templated`: values may
/// still hold `{{var}}` placeholders (a queue's config template), so a string holding `{{`
/// passes the value checks; only the key checks apply to it. `null` or `{}` are no args.
pub fn check(args: &Value, templated: bool) -> Vec<ArgProblem> {
    walk(args, templated).1
}

/// Parses the args (with every placeholder substituted) into what a container engine needs,
/// or returns the problems [`check`] reports.
pub fn parse(args: &Value) -> Result<ContainerArgs, Vec<ArgProblem>> {
    let (parsed, problems) = walk(args, false);
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

/// Whether two keys name the same flag (`-m`, `--memory` and `memory`), so that one set by
/// a queue is not set again under another spelling.
pub fn same_flag(a: &str, b: &str) -> bool {
    a == b || matches!((Flag::from_key(a), Flag::from_key(b)), (Ok(x), Ok(y)) if x == y)
}

/// The allowed flags, after normalizing the key (no leading dashes, `_` as `-`, short forms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Flag {
    Command,
    Cpus,
    CpuShares,
    CpuPeriod,
    CpuQuota,
    CpusetCpus,
    CpusetMems,
    Env,
    Gpus,
    Memory,
    MemorySwap,
    MemoryReservation,
    MemorySwappiness,
    Name,
    PidsLimit,
    Platform,
    ShmSize,
    Ulimit,
    Workdir,
}

impl Flag {
    /// The flag `key` names, or the refusal message. W&B accepts `--memory`, `-m` and
    /// `shm_size` as well as `memory` and `shm-size`.
    fn from_key(key: &str) -> Result<Flag, String> {
        let name = key.trim_start_matches('-').replace('_', "-");
        Ok(match name.as_str() {
            "command" => Flag::Command,
            "cpus" => Flag::Cpus,
            "cpu-shares" => Flag::CpuShares,
            "cpu-period" => Flag::CpuPeriod,
            "cpu-quota" => Flag::CpuQuota,
            "cpuset-cpus" => Flag::CpusetCpus,
            "cpuset-mems" => Flag::CpusetMems,
            "e" | "env" => Flag::Env,
            "gpus" => Flag::Gpus,
            "m" | "memory" => Flag::Memory,
            "memory-swap" => Flag::MemorySwap,
            "memory-reservation" => Flag::MemoryReservation,
            "memory-swappiness" => Flag::MemorySwappiness,
            "name" => Flag::Name,
            "pids-limit" => Flag::PidsLimit,
            "platform" => Flag::Platform,
            "shm-size" => Flag::ShmSize,
            "ulimit" => Flag::Ulimit,
            "w" | "workdir" => Flag::Workdir,
            _ => return Err(refusal(key, &name)),
        })
    }

    /// A list repeats these flags; the others take one value.
    fn repeats(self) -> bool {
        matches!(self, Flag::Env | Flag::Ulimit)
    }
}

fn refusal(key: &str, name: &str) -> String {
    let why = if name.starts_with("cpu") || name.starts_with("memory") {
        "W&B's cpu*/memory* patterns admit it, but liftoff's container runner does not pass it on"
    } else {
        sandbox_escape(name).unwrap_or("it is not on W&B's allow-list")
    };
    format!(
        "`{}` is refused: {why}; allowed flags: {ALLOWED}",
        shown(key)
    )
}

/// Why the best-known refused flags are refused: each would open the sandbox.
fn sandbox_escape(name: &str) -> Option<&'static str> {
    Some(match name {
        "v" | "volume" | "volumes-from" | "mount" | "tmpfs" => {
            "it would mount host storage into the container"
        }
        "privileged" | "cap-add" | "security-opt" | "device" | "device-cgroup-rule" => {
            "it would give the container host privileges or devices"
        }
        "network" | "net" | "pid" | "ipc" | "uts" | "userns" | "cgroupns" | "cgroup-parent" => {
            "it could put the container in the host's namespaces"
        }
        "u" | "user" | "group-add" => "it would choose who the container runs as",
        _ => return None,
    })
}

/// A key as written, with control characters escaped so that a message stays one line.
fn shown(key: &str) -> String {
    if key.chars().any(char::is_control) {
        key.escape_debug().to_string()
    } else {
        key.to_string()
    }
}

/// One pass over the args, collecting the parsed values and every problem.
struct Walk {
    templated: bool,
    out: ContainerArgs,
    problems: Vec<ArgProblem>,
    /// The key each flag was first given under, as written: for duplicates and conflicts.
    given: BTreeMap<Flag, String>,
}

fn walk(args: &Value, templated: bool) -> (ContainerArgs, Vec<ArgProblem>) {
    let mut walk = Walk {
        templated,
        out: ContainerArgs::default(),
        problems: Vec::new(),
        given: BTreeMap::new(),
    };
    match args {
        Value::Null => {}
        Value::Object(map) => walk.all(map),
        other => walk.problem(
            "resource_args".to_string(),
            format!(
                "must be an object mapping docker run flags to values, got {}",
                kind(other)
            ),
        ),
    }
    (walk.out, walk.problems)
}

impl Walk {
    fn all(&mut self, map: &Map<String, Value>) {
        for (key, value) in map {
            self.one(key, value);
        }
        self.check_conflicts();
    }

    fn one(&mut self, key: &str, value: &Value) {
        let field = format!("resource_args.{}", shown(key));
        let flag = match Flag::from_key(key) {
            Ok(flag) => flag,
            Err(message) => return self.problem(field, message),
        };
        // `false` (and `null`) mean "flag not given", as W&B reads them.
        if matches!(value, Value::Null | Value::Bool(false)) {
            return;
        }
        if let Some(first) = self.given.get(&flag).filter(|_| !flag.repeats()) {
            let message = format!("sets the same flag as `{}`; give it once", shown(first));
            return self.problem(field, message);
        }
        self.given.entry(flag).or_insert_with(|| key.to_string());
        match flag {
            Flag::Env | Flag::Ulimit => self.repeated(flag, &field, value),
            Flag::Command => self.command(&field, value),
            _ => {
                let result = scalar_of(value, self.templated).and_then(|v| match v {
                    Some(v) => self.set(flag, v),
                    None => Ok(()),
                });
                self.report(&field, result);
            }
        }
    }

    fn problem(&mut self, field: String, message: String) {
        self.problems.push(ArgProblem { field, message });
    }

    fn report(&mut self, field: &str, result: Result<(), String>) {
        if let Err(message) = result {
            self.problem(field.to_string(), message);
        }
    }

    /// Stores one scalar value of a flag that takes one.
    fn set(&mut self, flag: Flag, v: Scalar) -> Result<(), String> {
        let out = &mut self.out;
        match flag {
            Flag::Cpus => out.nano_cpus = Some(nano_cpus(v)?),
            Flag::CpuShares => out.cpu_shares = Some(within(v, 0, i64::MAX)?),
            Flag::CpuPeriod => out.cpu_period = Some(within(v, 1_000, 1_000_000)?),
            Flag::CpuQuota => out.cpu_quota = Some(cpu_quota(v)?),
            Flag::CpusetCpus => out.cpuset_cpus = Some(cpuset(v)?),
            Flag::CpusetMems => out.cpuset_mems = Some(cpuset(v)?),
            Flag::Gpus => out.gpus = Some(gpus(v)?),
            Flag::Memory => out.memory = Some(size(v, false)?),
            Flag::MemorySwap => out.memory_swap = Some(size(v, true)?),
            Flag::MemoryReservation => out.memory_reservation = Some(size(v, false)?),
            Flag::MemorySwappiness => out.memory_swappiness = Some(within(v, 0, 100)?),
            Flag::ShmSize => out.shm_size = Some(size(v, false)?),
            Flag::PidsLimit => out.pids_limit = Some(within(v, -1, i64::MAX)?),
            Flag::Platform => out.platform = Some(platform(v)?),
            Flag::Name => out.name = Some(container_name(v)?),
            Flag::Workdir => out.workdir = Some(workdir(v)?),
            Flag::Command | Flag::Env | Flag::Ulimit => unreachable!("not a scalar flag"),
        }
        Ok(())
    }

    /// `env`/`e` and `ulimit`: one string, or a list of them (the flag repeated).
    fn repeated(&mut self, flag: Flag, field: &str, value: &Value) {
        let Value::Array(items) = value else {
            let result = self.repeated_item(flag, value);
            return self.report(field, result);
        };
        for (i, item) in items.iter().enumerate() {
            let result = self.repeated_item(flag, item);
            self.report(&format!("{field}[{i}]"), result);
        }
    }

    fn repeated_item(&mut self, flag: Flag, value: &Value) -> Result<(), String> {
        let text = match scalar_of(value, self.templated)? {
            None => return Ok(()),
            Some(Scalar::Str(s)) => s,
            Some(Scalar::Num(n)) => return Err(format!("must be a string, got {n}")),
        };
        if flag == Flag::Env {
            self.add_env(text)
        } else {
            self.add_ulimit(text)
        }
    }

    fn add_env(&mut self, text: &str) -> Result<(), String> {
        let (name, value) = env_pair(text)?;
        if self.out.env.iter().any(|(known, _)| *known == name) {
            return Err(format!(
                "sets {name} a second time; give each variable once"
            ));
        }
        self.out.env.push((name, value));
        Ok(())
    }

    fn add_ulimit(&mut self, text: &str) -> Result<(), String> {
        let limit = ulimit(text)?;
        if self
            .out
            .ulimits
            .iter()
            .any(|known| known.name == limit.name)
        {
            return Err(format!("sets ulimit {} a second time", limit.name));
        }
        self.out.ulimits.push(limit);
        Ok(())
    }

    /// `command`: a string split like a shell would, or (unlike other flags) a list taken
    /// as is.
    fn command(&mut self, field: &str, value: &Value) {
        let Value::Array(items) = value else {
            let result = scalar_of(value, self.templated).and_then(|v| match v {
                None => Ok(()),
                Some(Scalar::Str(s)) => split_command(s).map(|c| self.out.command = Some(c)),
                Some(Scalar::Num(n)) => Err(format!("must be a string or a list, got {n}")),
            });
            return self.report(field, result);
        };
        if items.is_empty() {
            return self.problem(field.to_string(), "is an empty list".to_string());
        }
        let before = self.problems.len();
        let mut words = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match command_word(item, self.templated) {
                Ok(word) => words.push(word),
                Err(message) => self.problem(format!("{field}[{i}]"), message),
            }
        }
        if self.problems.len() == before {
            self.out.command = Some(words);
        }
    }

    /// Combinations docker itself refuses, caught before a run is started.
    fn check_conflicts(&mut self) {
        let mut found = self.cpu_conflicts();
        found.extend(self.memory_conflicts());
        for (flag, message) in found {
            let field = format!("resource_args.{}", shown(&self.given[&flag]));
            self.problem(field, message);
        }
    }

    fn cpu_conflicts(&self) -> Vec<(Flag, String)> {
        let out = &self.out;
        let Some(cpus) = self
            .given
            .get(&Flag::Cpus)
            .filter(|_| out.nano_cpus.is_some())
        else {
            return Vec::new();
        };
        let limits = [
            (Flag::CpuPeriod, out.cpu_period),
            (Flag::CpuQuota, out.cpu_quota),
        ];
        let message = format!(
            "cannot be combined with `{}`: docker refuses both; give cpus, or cpu-period and \
             cpu-quota",
            shown(cpus)
        );
        limits
            .into_iter()
            .filter(|(_, value)| value.is_some())
            .map(|(flag, _)| (flag, message.clone()))
            .collect()
    }

    fn memory_conflicts(&self) -> Vec<(Flag, String)> {
        let out = &self.out;
        let memory_given = self.given.contains_key(&Flag::Memory) && out.memory != Some(0);
        let mut found = Vec::new();
        if let Some(swap) = out.memory_swap.filter(|swap| *swap > 0) {
            if !memory_given {
                found.push((
                    Flag::MemorySwap,
                    "needs memory as well: memory-swap is memory plus swap".to_string(),
                ));
            } else if let Some(memory) = out.memory.filter(|memory| swap < *memory) {
                found.push((Flag::MemorySwap, format!("{swap} bytes is less than memory ({memory} bytes): memory-swap is memory plus swap")));
            }
        }
        let reserved = out.memory_reservation.zip(out.memory);
        if let Some((reservation, memory)) = reserved.filter(|(r, m)| *m > 0 && r > m) {
            found.push((
                Flag::MemoryReservation,
                format!("{reservation} bytes is more than memory ({memory} bytes)"),
            ));
        }
        found
    }
}

#[cfg(test)]
mod tests;
