//! Reading `/proc`: a process's start time (to tell it from a later process that reused its
//! pid) and the members of a process group (to know when a stopped run is really gone).

use std::fs;

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`), and its
/// state letter and process group. `None` when there is no such process.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie: ended, not yet reaped), ...
    pub state: char,
    pub pgrp: i32,
    pub start_time: u64,
}

/// Whether `pid` is the same live process that started at `start_time`.
pub fn alive(pid: i32, start_time: u64) -> bool {
    stat(pid).is_some_and(|s| same_start(s.start_time, start_time) && s.state != 'Z')
}

/// The start time `/proc/PID/stat` would give a process forked now: the boot clock in clock
/// ticks, which is what the kernel counts it from. Read before and after a spawn, it brackets
/// the child's start time: when the two readings are at most a tick apart, either one is the
/// child's within [`same_start`], without a read of `/proc` (which costs more than the
/// spawn's own bookkeeping).
pub fn start_time_now() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    static TICKS_PER_SEC: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let hz = *TICKS_PER_SEC.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|&n| n > 0)
            .unwrap_or(100)
    });
    let Ok(now) = clock_gettime(ClockId::CLOCK_BOOTTIME) else {
        return 0;
    };
    let nanos = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
    nanos / (1_000_000_000 / hz)
}

/// Whether two start times are the same process's: one read from `/proc`, one from
/// [`start_time_now`] (which may be a tick off). A pid reused within a tick would need the
/// kernel to hand out every other pid in between: it does not happen.
pub fn same_start(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= 1
}

/// The live (not zombie) members of process group `pgrp`.
pub fn group_members(pgrp: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|s| s.pgrp == pgrp && s.state != 'Z'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("our own stat");
        assert!(alive(me, s.start_time));
        assert!(
            !alive(me, s.start_time + 2),
            "another start time is another process"
        );
        let before = start_time_now();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let after = start_time_now();
        let theirs = stat(child.id() as i32)
            .expect("the child's stat")
            .start_time;
        assert!(
            (before..=after).contains(&theirs),
            "{before} <= {theirs} <= {after}"
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(stat(-5).is_none());
        assert!(group_members(s.pgrp).contains(&me));
    }
}
