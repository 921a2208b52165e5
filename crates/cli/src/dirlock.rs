//! One process per directory: the server's data directory and each agent's state directory
//! are held with an advisory lock (`flock`) on `DIR/lock`, which holds the owner's PID.
//!
//! The lock dies with its process, so a crash never leaves a stale lock behind, and it is
//! not inherited by what the process execs (the file is opened close-on-exec): a local
//! supervisor that outlives a killed agent does not keep the next agent out.

use anyhow::Context;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::Mutex;

/// The locks this process holds; kept until it exits.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Takes `dir/lock` for this process, or says which process holds it. `what` names the
/// directory for people ("data directory", "agent state directory"). Writes nothing else.
pub fn hold(dir: &Path, what: &str) -> anyhow::Result<()> {
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                pid if !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("liftoff pid {pid}")
                }
                _ => "another process".to_string(),
            };
            anyhow::bail!(
                "the {what} {} is in use by {holder} (it holds {}); stop that process, \
                 or give this one another directory",
                dir.display(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        hold(dir.path(), "data directory").unwrap();
        // Another open file description conflicts as another process would.
        let err = hold(dir.path(), "data directory").unwrap_err().to_string();
        assert!(
            err.contains(&format!("liftoff pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("data directory"), "{err}");
    }
}
