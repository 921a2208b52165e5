//! The values of container flags, each checked as docker would take it: numbers and sizes,
//! GPUs, cpusets, platforms, names, paths, environment pairs, ulimits and commands.

use super::{Gpus, Ulimit, ULIMIT_NAMES};
use serde_json::{Number, Value};

/// A value a flag can take, once its shape is checked.
#[derive(Clone, Copy)]
pub(super) enum Scalar<'a> {
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
pub(super) fn scalar_of(value: &Value, templated: bool) -> Result<Option<Scalar<'_>>, String> {
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

pub(super) fn no_control(s: &str) -> Result<(), String> {
    match s.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("{s:?} holds the control character {c:?}")),
        None => Ok(()),
    }
}

pub(super) fn kind(value: &Value) -> &'static str {
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
pub(super) fn integer(v: Scalar) -> Result<i64, String> {
    let n = match v {
        Scalar::Str(s) => s.parse::<i64>().ok(),
        Scalar::Num(n) => n.as_i64().or_else(|| whole(n.as_f64()?)),
    };
    n.ok_or_else(|| format!("{} is not a whole number", v.shown()))
}

pub(super) fn whole(f: f64) -> Option<i64> {
    let in_range = f.fract() == 0.0 && f.abs() < 9.0e18;
    in_range.then_some(f as i64)
}

pub(super) fn within(v: Scalar, min: i64, max: i64) -> Result<i64, String> {
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
pub(super) fn nano_cpus(v: Scalar) -> Result<i64, String> {
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
pub(super) fn cpu_quota(v: Scalar) -> Result<i64, String> {
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
pub(super) fn size(v: Scalar, minus_one: bool) -> Result<i64, String> {
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
pub(super) fn parse_size(text: &str) -> Option<i64> {
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

pub(super) fn unit_multiplier(unit: &str) -> Option<i64> {
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
pub(super) fn scaled(number: &str, multiplier: i64) -> Option<i64> {
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
pub(super) fn gpus(v: Scalar) -> Result<Gpus, String> {
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

pub(super) fn gpu_count(count: i64) -> Result<Gpus, String> {
    if count < 1 {
        return Err(format!(
            "{count} is out of range: a GPU count must be at least 1 (\"all\" for every GPU)"
        ));
    }
    Ok(Gpus::Count(count))
}

pub(super) fn gpu_devices(list: &str) -> Result<Gpus, String> {
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
pub(super) fn cpuset(v: Scalar) -> Result<String, String> {
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
pub(super) fn platform(v: Scalar) -> Result<String, String> {
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
pub(super) fn container_name(v: Scalar) -> Result<String, String> {
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

pub(super) fn workdir(v: Scalar) -> Result<String, String> {
    let text = v.text();
    if text.starts_with('/') {
        Ok(text)
    } else {
        Err(format!("{} is not an absolute path", v.shown()))
    }
}

/// One `env` entry: `NAME=value`. A bare `NAME` is refused: docker would copy the agent's
/// own variable into the run, which can leak the agent's secrets.
pub(super) fn env_pair(text: &str) -> Result<(String, String), String> {
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
pub(super) fn ulimit(text: &str) -> Result<Ulimit, String> {
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

pub(super) fn limit(part: &str, whole: &str) -> Result<i64, String> {
    part.parse::<i64>()
        .ok()
        .filter(|n| *n >= -1)
        .ok_or_else(|| {
            format!("{whole:?}: {part:?} is not a limit (a whole number, or -1 for unlimited)")
        })
}

/// Whether `soft` exceeds `hard`, reading -1 as unlimited.
pub(super) fn above(soft: i64, hard: i64) -> bool {
    match (soft, hard) {
        (_, -1) => false,
        (-1, _) => true,
        _ => soft > hard,
    }
}

/// One word of a `command` given as a list: a string, taken as is.
pub(super) fn command_word(item: &Value, templated: bool) -> Result<String, String> {
    match item {
        Value::String(s) if templated && s.contains("{{") => Ok(s.clone()),
        Value::String(s) => no_control(s).map(|()| s.clone()),
        other => Err(format!("must be a string, got {}", kind(other))),
    }
}

/// Splits a command line on whitespace, like a shell but simpler: `'…'` and `"…"` group words
/// (quotes may touch other text: `a'b c'` is `ab c`); there are no escapes or expansions.
pub(super) fn split_command(line: &str) -> Result<Vec<String>, String> {
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
