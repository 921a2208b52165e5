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
    stat(pid).is_some_and(|s| s.start_time == start_time && s.state != 'Z')
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
            !alive(me, s.start_time + 1),
            "another start time is another process"
        );
        assert!(stat(-5).is_none());
        assert!(group_members(s.pgrp).contains(&me));
    }
}
