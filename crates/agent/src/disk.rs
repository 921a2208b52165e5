//! Free space in the agent's state directory. A run needs room there for its directory, its
//! output and the journal line that makes it the agent's; on a full disk the agent takes no
//! new work (it would only fail it), says so once, and takes work again once space returns.
//! Runs already going are left alone: their ends are known from the supervisor's `waitpid`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often free space is looked at, at most: a `statvfs` is cheap but the lease loop is hot.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Whether the state directory has room for a new run.
pub(crate) struct DiskGuard {
    dir: PathBuf,
    /// Below this many free bytes no work is taken (0: never looked at).
    min_free: u64,
    /// When free space was last looked at, and whether there was room then.
    last: Mutex<Option<(Instant, bool)>>,
    /// Whether the agent has said its disk is full (said once, until space returns).
    full_said: AtomicBool,
}

impl DiskGuard {
    pub(crate) fn new(dir: PathBuf, min_free: u64) -> DiskGuard {
        DiskGuard {
            dir,
            min_free,
            last: Mutex::new(None),
            full_said: AtomicBool::new(false),
        }
    }

    /// Whether there is room for a new run: free space at least the minimum, looked at at
    /// most once a second.
    pub(crate) fn has_room(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, room)) = *last {
            if at.elapsed() < LOOK_EVERY {
                return room;
            }
        }
        let free = self.free_bytes();
        let room = free.is_none_or(|free| free >= self.min_free.max(1));
        *last = Some((Instant::now(), room));
        drop(last);
        if room {
            if self.full_said.swap(false, Ordering::Relaxed) {
                tracing::warn!(dir = %self.dir.display(), "the state directory has room again: taking work");
            }
        } else {
            self.say_full(free);
        }
        room
    }

    /// A write in the state directory failed for want of space: no work until a look finds
    /// room again.
    pub(crate) fn note_full(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), false));
        self.say_full(self.free_bytes());
    }

    fn say_full(&self, free: Option<u64>) {
        if !self.full_said.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                dir = %self.dir.display(),
                free_bytes = free,
                min_free_bytes = self.min_free,
                "the state directory is full (No space left on device): taking no work until space returns"
            );
        }
    }

    /// Free bytes for an unprivileged writer, or `None` when they cannot be known (or are
    /// not looked at), which counts as room.
    fn free_bytes(&self) -> Option<u64> {
        if self.min_free == 0 {
            return None;
        }
        let st = nix::sys::statvfs::statvfs(&self.dir).ok()?;
        Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
    }
}

/// Whether an error is a full disk.
pub(crate) fn is_full(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ENOSPC) || e.kind() == std::io::ErrorKind::StorageFull
}

/// Whether a message made from an error tells of a full disk (the steps that make a run
/// ready report their failures as text).
pub(crate) fn says_full(message: &str) -> bool {
    message.contains("(os error 28)") || message.contains("No space left on device")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_of_a_full_disk_holds_until_the_next_look_finds_room() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path().to_path_buf(), 1);
        assert!(guard.has_room());
        guard.note_full();
        assert!(!guard.has_room(), "a failed write stops work at once");
        *guard.last.lock().unwrap() = None;
        assert!(
            guard.has_room(),
            "the next look finds the room a tempdir has"
        );
    }

    #[test]
    fn a_minimum_beyond_the_disk_means_no_room() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(dir.path().to_path_buf(), u64::MAX);
        assert!(!guard.has_room());
        let never = DiskGuard::new(dir.path().to_path_buf(), 0);
        assert!(never.has_room(), "0 means never looked at");
    }
}
