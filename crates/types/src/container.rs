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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;

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

/// A value a flag can take, once its shape is checked.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Num(&'a Number),
}

impl Scalar<'_> {
    /// The value as it would appear in the JSON, for messages.
    fn shown(self) -> String {
        match self {
            Scalar::Str(s) => format!("{s:?}"),
            Scalar::Num(n) => n.to_string(),
        }
    }

    /// The value as docker's command line would get it.
    fn text(self) -> String {
        match self {
            Scalar::Str(s) => s.to_string(),
            Scalar::Num(n) => n.to_string(),
        }
    }
}

/// Checks a value's shape: a string or a number. `Ok(None)`: a placeholder left for later.
fn scalar_of(value: &Value, templated: bool) -> Result<Option<Scalar<'_>>, String> {
    match value {
        Value::String(s) if templated && s.contains("{{") => Ok(None),
        Value::String(s) => no_control(s).map(|()| Some(Scalar::Str(s))),
        Value::Number(n) => Ok(Some(Scalar::Num(n))),
        Value::Bool(true) => {
            Err("needs a value: `true` gives a bare flag, and no allowed flag is a boolean".into())
        }
        Value::Array(_) => {
            Err("takes one value, not a list (only env, e and ulimit repeat)".into())
        }
        other => Err(format!("must be a string or a number, got {}", kind(other))),
    }
}

fn no_control(s: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("{s:?} holds the control character {c:?}")),
        None => Ok(()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A whole number, given as a JSON number (`1024`, `1024.0`) or a string (`"1024"`).
fn integer(v: Scalar) -> Result<i64, String> {
    let n = match v {
        Scalar::Str(s) => s.parse::<i64>().ok(),
        Scalar::Num(n) => n.as_i64().or_else(|| whole(n.as_f64()?)),
    };
    n.ok_or_else(|| format!("{} is not a whole number", v.shown()))
}

fn whole(f: f64) -> Option<i64> {
    let in_range = f.fract() == 0.0 && f.abs() < 9.0e18;
    in_range.then_some(f as i64)
}

fn within(v: Scalar, min: i64, max: i64) -> Result<i64, String> {
    let n = integer(v)?;
    if n < min {
        Err(format!(
            "{} is out of range: it must be at least {min}",
            v.shown()
        ))
    } else if n > max {
        Err(format!(
            "{} is out of range: it must be at most {max}",
            v.shown()
        ))
    } else {
        Ok(n)
    }
}

/// `cpus`: a decimal number of CPUs, more than 0 and at most 4096, as nano-CPUs.
fn nano_cpus(v: Scalar) -> Result<i64, String> {
    let cpus = match v {
        Scalar::Str(s) => s.parse::<f64>().ok(),
        Scalar::Num(n) => n.as_f64(),
    };
    let cpus = cpus
        .filter(|c| c.is_finite())
        .ok_or_else(|| format!("{} is not a number of CPUs", v.shown()))?;
    if cpus <= 0.0 || cpus > 4096.0 {
        return Err(format!(
            "{} is out of range: cpus must be more than 0 and at most 4096",
            v.shown()
        ));
    }
    Ok((cpus * 1e9).round() as i64)
}

/// `cpu-quota`: -1 or 0 (no limit), or at least 1000 microseconds, as docker requires.
fn cpu_quota(v: Scalar) -> Result<i64, String> {
    let quota = within(v, -1, i64::MAX)?;
    if quota > 0 && quota < 1_000 {
        return Err(format!(
            "{} is out of range: cpu-quota must be -1, 0 or at least 1000 (microseconds)",
            v.shown()
        ));
    }
    Ok(quota)
}

/// A size in bytes: a JSON number of bytes, or docker's size syntax (see [`parse_size`]).
/// `minus_one`: -1 is allowed (memory-swap's "unlimited").
fn size(v: Scalar, minus_one: bool) -> Result<i64, String> {
    let bytes = match v {
        Scalar::Num(_) => integer(v)?,
        Scalar::Str(s) => parse_size(s).ok_or_else(|| {
            format!(
                "{} is not a size docker accepts: bytes, or a number with a unit b, k, m, g, t \
                 or p (e.g. 512m, 1.5g)",
                v.shown()
            )
        })?,
    };
    if bytes < 0 && !(minus_one && bytes == -1) {
        let allowed = if minus_one {
            "0 or more, or -1 for unlimited"
        } else {
            "0 or more"
        };
        return Err(format!("{} is negative: it must be {allowed}", v.shown()));
    }
    Ok(bytes)
}

/// Docker's size syntax (go-units `RAMInBytes`): a decimal number, an optional space, then
/// an optional unit `b`, `k`, `m`, `g`, `t` or `p` in any case, with `b` or `ib` after it
/// allowed (`kb`, `MiB`); units are binary: "1.5g" is 1610612736. A leading `-` is kept so
/// that the caller can name a negative size. `None`: not a size, or too large.
fn parse_size(text: &str) -> Option<i64> {
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let multiplier = unit_multiplier(&unit.to_ascii_lowercase())?;
    scaled(number, multiplier).map(|bytes| sign * bytes)
}

fn unit_multiplier(unit: &str) -> Option<i64> {
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = match unit.strip_suffix('i') {
        Some(letter) if !letter.is_empty() => letter,
        Some(_) => return None,
        None => unit,
    };
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    Some(1i64 << (10 * power))
}

/// `number` (digits, at most one `.`) times `multiplier`, truncated to whole bytes as docker
/// does. Whole numbers are multiplied exactly, without floating point.
fn scaled(number: &str, multiplier: i64) -> Option<i64> {
    let mut parts = number.split('.');
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let int_part = parts.next().filter(|p| digits(p))?;
    match (parts.next(), parts.next()) {
        (None, _) => int_part.parse::<i64>().ok()?.checked_mul(multiplier),
        (Some(frac), None) if digits(frac) => {
            let bytes = number.parse::<f64>().ok()? * multiplier as f64;
            (bytes < 9.0e18).then_some(bytes as i64)
        }
        _ => None,
    }
}

/// `gpus`: "all", a count (`2` or `"2"`), or `"device=0,1"`, possibly quoted again
/// (`"\"device=0,1\""`, as docker's docs write it for the shell).
fn gpus(v: Scalar) -> Result<Gpus, String> {
    let Scalar::Str(text) = v else {
        return gpu_count(integer(v)?);
    };
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text == "all" {
        return Ok(Gpus::All);
    }
    if let Some(devices) = text.strip_prefix("device=") {
        return gpu_devices(devices);
    }
    match text.parse::<i64>() {
        Ok(count) => gpu_count(count),
        Err(_) => Err(format!(
            "{} is not a GPU request: give \"all\", a count such as 2, or \"device=0,1\"",
            v.shown()
        )),
    }
}

fn gpu_count(count: i64) -> Result<Gpus, String> {
    if count < 1 {
        return Err(format!(
            "{count} is out of range: a GPU count must be at least 1 (\"all\" for every GPU)"
        ));
    }
    Ok(Gpus::Count(count))
}

fn gpu_devices(list: &str) -> Result<Gpus, String> {
    let id_char = |c: char| c.is_ascii_alphanumeric() || "-_:./".contains(c);
    let ids: Vec<String> = list.split(',').map(str::to_string).collect();
    match ids
        .iter()
        .find(|id| id.is_empty() || !id.chars().all(id_char))
    {
        Some(bad) => Err(format!(
            "{bad:?} is not a GPU index or UUID (in device={list})"
        )),
        None => Ok(Gpus::Devices(ids)),
    }
}

/// `cpuset-cpus`, `cpuset-mems`: a list such as `0-3,5`.
fn cpuset(v: Scalar) -> Result<String, String> {
    let text = v.text();
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '-');
    if ok {
        Ok(text)
    } else {
        Err(format!(
            "{} is not a list of CPUs or memory nodes such as 0-3,5",
            v.shown()
        ))
    }
}

/// `platform`: `os[/arch[/variant]]`, e.g. `linux/amd64`.
fn platform(v: Scalar) -> Result<String, String> {
    let text = v.text();
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    };
    if text.split('/').count() <= 3 && text.split('/').all(part_ok) {
        Ok(text)
    } else {
        Err(format!(
            "{} is not a platform such as linux/amd64",
            v.shown()
        ))
    }
}

/// `name`: docker's rule, `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (so at least two characters; moby's
/// `RestrictedNamePattern`), and at most 128 characters.
fn container_name(v: Scalar) -> Result<String, String> {
    let text = v.text();
    let mut chars = text.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok && (2..=128).contains(&text.len()) {
        Ok(text)
    } else {
        Err(format!(
            "{} is not a container name: 2 to 128 characters of [a-zA-Z0-9_.-], starting with a \
             letter or digit",
            v.shown()
        ))
    }
}

fn workdir(v: Scalar) -> Result<String, String> {
    let text = v.text();
    if text.starts_with('/') {
        Ok(text)
    } else {
        Err(format!("{} is not an absolute path", v.shown()))
    }
}

/// One `env` entry: `NAME=value`. A bare `NAME` is refused: docker would copy the agent's
/// own variable into the run, which can leak the agent's secrets.
fn env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        None => Err(format!(
            "{text:?} has no `=`: write NAME=value (a bare NAME would copy the agent's own \
             variable into the run, which can leak its secrets)"
        )),
        Some(("", _)) => Err(format!("{text:?} has an empty variable name")),
        Some((name, _)) if name.chars().any(char::is_whitespace) => Err(format!(
            "{text:?}: the variable name {name:?} holds whitespace"
        )),
        Some((name, value)) => Ok((name.to_string(), value.to_string())),
    }
}

/// One `ulimit` entry: `name=soft:hard`, or `name=limit` for both; -1 is unlimited.
fn ulimit(text: &str) -> Result<Ulimit, String> {
    let Some((name, limits)) = text.split_once('=') else {
        return Err(format!(
            "{text:?} is not a ulimit: write name=soft:hard or name=limit, e.g. nofile=1024:2048"
        ));
    };
    if !ULIMIT_NAMES.contains(&name) {
        let known = ULIMIT_NAMES.join(" ");
        return Err(format!(
            "{name:?} is not a ulimit docker knows: one of {known}"
        ));
    }
    let (soft, hard) = match limits.split_once(':') {
        Some((soft, hard)) => (limit(soft, text)?, limit(hard, text)?),
        None => (limit(limits, text)?, limit(limits, text)?),
    };
    if above(soft, hard) {
        return Err(format!(
            "{text:?}: the soft limit {soft} is above the hard limit {hard}"
        ));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

fn limit(part: &str, whole: &str) -> Result<i64, String> {
    part.parse::<i64>()
        .ok()
        .filter(|n| *n >= -1)
        .ok_or_else(|| {
            format!("{whole:?}: {part:?} is not a limit (a whole number, or -1 for unlimited)")
        })
}

/// Whether `soft` exceeds `hard`, reading -1 as unlimited.
fn above(soft: i64, hard: i64) -> bool {
    match (soft, hard) {
        (_, -1) => false,
        (-1, _) => true,
        _ => soft > hard,
    }
}

/// One word of a `command` given as a list: a string, taken as is.
fn command_word(item: &Value, templated: bool) -> Result<String, String> {
    match item {
        Value::String(s) if templated && s.contains("{{") => Ok(s.clone()),
        Value::String(s) => no_control(s).map(|()| s.clone()),
        other => Err(format!("must be a string, got {}", kind(other))),
    }
}

/// Splits a command line on whitespace, like a shell but simpler: `'…'` and `"…"` group words
/// (quotes may touch other text: `a'b c'` is `ab c`); there are no escapes or expansions.
fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("{line:?} has an unclosed {q} quote"));
    }
    words.extend(word);
    if words.is_empty() {
        return Err("is empty: give the command to run".to_string());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(problems: &[ArgProblem]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    fn message_at<'a>(problems: &'a [ArgProblem], field: &str) -> &'a str {
        let found = problems.iter().find(|p| p.field == field);
        &found
            .unwrap_or_else(|| panic!("no problem at {field}: {problems:?}"))
            .message
    }

    fn one_problem(args: Value) -> ArgProblem {
        let problems = check(&args, false);
        assert_eq!(problems.len(), 1, "{args}: {problems:?}");
        problems.into_iter().next().unwrap()
    }

    #[test]
    fn the_wandb_example_parses_to_engine_numbers() {
        let args = json!({"gpus": "all", "env": ["A=1", "B=2"], "shm-size": "8g",
            "memory": "16g", "cpus": 1.5, "ulimit": ["nofile=1024:2048"]});
        let parsed = parse(&args).unwrap();
        assert_eq!(parsed.gpus, Some(Gpus::All));
        assert_eq!(
            parsed.env,
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(parsed.shm_size, Some(8 << 30));
        assert_eq!(parsed.memory, Some(16 << 30));
        assert_eq!(parsed.nano_cpus, Some(1_500_000_000));
        let nofile = Ulimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 2048,
        };
        assert_eq!(parsed.ulimits, [nofile]);
    }

    #[test]
    fn sandbox_escapes_are_refused_each_at_its_field() {
        let args = json!({"volume": "/:/host", "privileged": true, "network": "host",
            "cap-add": "SYS_ADMIN", "device": "/dev/kvm"});
        let problems = check(&args, false);
        let mut got = fields(&problems);
        got.sort_unstable();
        let want = ["cap-add", "device", "network", "privileged", "volume"]
            .map(|k| format!("resource_args.{k}"));
        assert_eq!(got, want);
        for p in &problems {
            assert!(p.message.contains("is refused"), "{p}");
            assert!(p.message.contains(ALLOWED), "{p}");
        }
        assert!(parse(&args).is_err());
    }

    #[test]
    fn unknown_and_unsupported_flags_are_refused_too() {
        let problems = check(
            &json!({"user": "root", "rm": true, "cpu-rt-runtime": 1}),
            false,
        );
        assert_eq!(problems.len(), 3);
        assert!(message_at(&problems, "resource_args.rm").contains("allow-list"));
        assert!(message_at(&problems, "resource_args.cpu-rt-runtime").contains("does not pass"));
    }

    #[test]
    fn a_placeholder_passes_only_in_a_template() {
        let args = json!({"memory": "{{mem}}", "env": ["A={{a}}", "{{pair}}"],
            "command": ["python", "{{script}}"]});
        assert_eq!(check(&args, true), []);
        let problems = check(&args, false);
        assert_eq!(
            fields(&problems),
            ["resource_args.env[1]", "resource_args.memory"]
        );
        // Keys are still checked in a template.
        let problems = check(&json!({"volume": "{{path}}"}), true);
        assert_eq!(fields(&problems), ["resource_args.volume"]);
    }

    #[test]
    fn a_bare_env_name_is_refused_as_a_leak() {
        let problem = one_problem(json!({"env": ["A=1", "WANDB_API_KEY"]}));
        assert_eq!(problem.field, "resource_args.env[1]");
        assert!(problem.message.contains("leak"), "{problem}");
        let problem = one_problem(json!({"e": "=x"}));
        assert_eq!(problem.field, "resource_args.e");
    }

    #[test]
    fn sizes_follow_docker_syntax() {
        for (text, bytes) in [
            ("1.5g", 1_610_612_736),
            ("512m", 512 << 20),
            ("100k", 102_400),
            ("1024", 1024),
            ("16GB", 16 << 30),
            ("2kb", 2048),
            ("3MiB", 3 << 20),
            ("7b", 7),
            ("1 t", 1 << 40),
        ] {
            assert_eq!(parse_size(text), Some(bytes), "{text}");
        }
        for bad in [
            "",
            "g",
            "1.5.3g",
            "1x",
            "1i",
            ".5g",
            "5.g",
            "99999999999p",
            "1gg",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let parsed = parse(&json!({"shm-size": 1024, "memory-reservation": "1.5g"})).unwrap();
        assert_eq!(parsed.shm_size, Some(1024));
        assert_eq!(parsed.memory_reservation, Some(1_610_612_736));
    }

    #[test]
    fn every_problem_is_reported_naming_the_key_as_written_and_the_value() {
        let args = json!({"--memory": "-1g", "shm_size": "lots", "cpus": 0, "pids-limit": -2,
            "ulimit": ["nofile=2048:1024", "bogus=1"]});
        let problems = check(&args, false);
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(message_at(&problems, "resource_args.--memory").contains("\"-1g\" is negative"));
        assert!(message_at(&problems, "resource_args.shm_size").contains("\"lots\""));
        assert!(message_at(&problems, "resource_args.cpus").contains("0 is out of range"));
        assert!(message_at(&problems, "resource_args.pids-limit").contains("-2"));
        assert!(message_at(&problems, "resource_args.ulimit[0]").contains("above the hard"));
        assert!(message_at(&problems, "resource_args.ulimit[1]").contains("\"bogus\""));
    }

    #[test]
    fn dashes_underscores_and_short_forms_name_the_same_flags() {
        let args = json!({"-m": "1g", "--shm_size": "64m", "e": "A=1", "w": "/work",
            "pids_limit": "100", "memory-swap": -1, "cpuset-cpus": 0});
        let parsed = parse(&args).unwrap();
        assert_eq!(parsed.memory, Some(1 << 30));
        assert_eq!(parsed.shm_size, Some(64 << 20));
        assert_eq!(parsed.env, [("A".into(), "1".into())]);
        assert_eq!(parsed.workdir.as_deref(), Some("/work"));
        assert_eq!(parsed.pids_limit, Some(100));
        assert_eq!(parsed.memory_swap, Some(-1));
        assert_eq!(parsed.cpuset_cpus.as_deref(), Some("0"));
    }

    #[test]
    fn true_needs_a_value_and_false_means_not_given() {
        let problem = one_problem(json!({"gpus": true}));
        assert!(problem.message.contains("needs a value"), "{problem}");
        let parsed = parse(&json!({"gpus": false, "memory": null})).unwrap();
        assert_eq!(parsed, ContainerArgs::default());
    }

    #[test]
    fn only_env_ulimit_and_command_take_lists() {
        let problem = one_problem(json!({"memory": ["1g", "2g"]}));
        assert!(problem.message.contains("not a list"), "{problem}");
        let parsed = parse(&json!({"ulimit": "nproc=64", "command": ["echo", "a b"]})).unwrap();
        assert_eq!(
            parsed.ulimits,
            [Ulimit {
                name: "nproc".into(),
                soft: 64,
                hard: 64
            }]
        );
        assert_eq!(parsed.command, Some(vec!["echo".into(), "a b".into()]));
    }

    #[test]
    fn gpus_take_every_docker_form() {
        let gpus_of = |v: Value| parse(&json!({ "gpus": v })).map(|a| a.gpus.unwrap());
        let devices = Gpus::Devices(vec!["0".into(), "1".into()]);
        assert_eq!(gpus_of(json!("all")), Ok(Gpus::All));
        assert_eq!(gpus_of(json!(2)), Ok(Gpus::Count(2)));
        assert_eq!(gpus_of(json!("2")), Ok(Gpus::Count(2)));
        assert_eq!(gpus_of(json!("device=0,1")), Ok(devices.clone()));
        assert_eq!(gpus_of(json!("\"device=0,1\"")), Ok(devices));
        assert!(gpus_of(json!(0)).is_err());
        assert!(gpus_of(json!("device=0,,1")).is_err());
        assert!(gpus_of(json!("some")).is_err());
    }

    #[test]
    fn a_command_string_splits_like_a_shell() {
        let words = split_command(r#"python train.py --msg 'hello world' "a b"c"#).unwrap();
        assert_eq!(
            words,
            ["python", "train.py", "--msg", "hello world", "a bc"]
        );
        assert_eq!(split_command("run ''").unwrap(), ["run", ""]);
        assert!(split_command("echo 'oops").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn args_that_are_not_an_object_are_one_problem_and_null_is_none() {
        assert_eq!(parse(&Value::Null), Ok(ContainerArgs::default()));
        assert_eq!(parse(&json!({})), Ok(ContainerArgs::default()));
        let problem = one_problem(json!(["gpus", "all"]));
        assert_eq!(problem.field, "resource_args");
    }

    #[test]
    fn control_characters_are_refused_anywhere() {
        let args = json!({"name": "a\u{0}b", "env": ["A=x\ny"], "command": ["ls", "\t"]});
        let problems = check(&args, false);
        assert_eq!(
            fields(&problems),
            [
                "resource_args.command[1]",
                "resource_args.env[0]",
                "resource_args.name"
            ]
        );
        let problem = one_problem(json!({"na\nme": "x"}));
        assert_eq!(problem.field, "resource_args.na\\nme");
    }

    #[test]
    fn a_flag_given_twice_is_refused_but_env_lists_merge() {
        let problem = one_problem(json!({"m": "1g", "memory": "2g"}));
        assert!(problem.message.contains("same flag"), "{problem}");
        let parsed = parse(&json!({"e": "A=1", "env": ["B=2"]})).unwrap();
        assert_eq!(parsed.env.len(), 2);
        let problem = one_problem(json!({"e": "A=1", "env": ["A=2"]}));
        assert_eq!(problem.field, "resource_args.env[0]");
    }

    #[test]
    fn names_and_paths_follow_docker_rules() {
        assert!(parse(&json!({"name": "run-1.a_b", "platform": "linux/arm64/v8"})).is_ok());
        for args in [
            json!({"name": "-run"}),
            json!({"name": "a"}),
            json!({"name": "x".repeat(129)}),
            json!({"workdir": "work"}),
            json!({"platform": "linux//amd64"}),
            json!({"cpuset-mems": "0-1;2"}),
        ] {
            one_problem(args);
        }
    }

    #[test]
    fn combinations_docker_refuses_are_caught_early() {
        let problem = one_problem(json!({"cpus": 2, "cpu-quota": 50000}));
        assert_eq!(problem.field, "resource_args.cpu-quota");
        let problem = one_problem(json!({"memory-swap": "2g"}));
        assert!(problem.message.contains("needs memory"), "{problem}");
        let problem = one_problem(json!({"m": "2g", "memory-swap": "1g"}));
        assert_eq!(problem.field, "resource_args.memory-swap");
        let problem = one_problem(json!({"m": "1g", "memory-reservation": "2g"}));
        assert_eq!(problem.field, "resource_args.memory-reservation");
        assert!(
            parse(&json!({"cpu-period": 100000, "cpu-quota": 50000, "m": "1g",
            "memory-swap": "2g", "memory-swappiness": 10, "cpu-shares": 512}))
            .is_ok()
        );
    }
}
