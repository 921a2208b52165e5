//! Unpacking an archive that came over the network, safely and all or nothing.
//!
//! Every entry is checked before anything is written for it: its path must be relative with
//! only plain components (no `/`, no `..`); only files, directories and symbolic links are
//! taken, and a link's target must be relative and stay inside the tree. Extraction never
//! goes *through* a link (every parent of an entry must be a real directory, and files are
//! opened with `O_NOFOLLOW`), so no sequence of links can redirect a write outside. Sizes
//! are counted as bytes are decompressed (a small archive cannot expand into a huge tree).
//! All of it happens in a scratch directory beside the target, renamed into place at the end;
//! on any refusal the scratch directory is removed and the target never appears.

use crate::{io, ArchiveError};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// How much an archive may hold once unpacked.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// All files together.
    pub max_bytes: u64,
    /// One file.
    pub max_file: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    /// Generous for code (1 GiB in all, 256 MiB a file, 100,000 entries).
    fn default() -> Limits {
        Limits {
            max_bytes: 1 << 30,
            max_file: 256 << 20,
            max_entries: 100_000,
        }
    }
}

fn refused(path: &Path, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::Refused {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The entry's path as plain components, or why not.
fn plain(path: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` is not allowed in a path".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed".into())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("the path is empty".into());
    }
    Ok(out)
}

/// Whether a link at `at` (relative to the root) pointing at `target` stays inside.
fn link_stays_inside(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = at
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(s) => depth.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Checks that every parent of `rel` under `root` is a real directory (creating missing ones),
/// so that a write there cannot be redirected by a link.
fn real_parents(root: &Path, rel: &Path) -> Result<(), ArchiveError> {
    let mut here = root.to_path_buf();
    let parents: Vec<_> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        here.push(c);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(refused(rel, "it would be written through a link or a file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&here).map_err(io(format!("creating {}", here.display())))?
            }
            Err(e) => return Err(io(format!("checking {}", here.display()))(e)),
        }
    }
    Ok(())
}

/// Unpacks the gzipped tar `archive` into `dest`, which must not exist yet.
pub fn unpack(archive: impl Read, dest: &Path, limits: Limits) -> Result<(), ArchiveError> {
    if dest.exists() {
        return Err(ArchiveError::Exists(dest.to_path_buf()));
    }
    let parent = dest
        .parent()
        .ok_or_else(|| ArchiveError::Malformed("the target has no parent directory".into()))?;
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    // Removed on drop: any early return below leaves nothing behind.
    let scratch = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(parent)
        .map_err(io(format!(
            "creating a scratch directory in {}",
            parent.display()
        )))?;
    let root = scratch.path();
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz);
    let mut total = 0u64;
    let mut count = 0u64;
    let entries = tar
        .entries()
        .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::Malformed(e.to_string()))?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooManyEntries(limits.max_entries));
        }
        let raw = entry
            .path()
            .map_err(|e| ArchiveError::Malformed(e.to_string()))?
            .into_owned();
        let rel = plain(&raw).map_err(|why| refused(&raw, why))?;
        let kind = entry.header().entry_type();
        let out = root.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                real_parents(root, &rel)?;
                match std::fs::symlink_metadata(&out) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refused(&rel, "a directory where a file or link is")),
                    Err(_) => std::fs::create_dir(&out)
                        .map_err(io(format!("creating {}", out.display())))?,
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let declared = entry.header().size().unwrap_or(u64::MAX);
                if declared > limits.max_file {
                    return Err(refused(
                        &rel,
                        format!(
                            "{declared} bytes, more than the limit of {} a file",
                            limits.max_file
                        ),
                    ));
                }
                real_parents(root, &rel)?;
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 })
                    .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                    .open(&out)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => {
                            refused(&rel, "the path appears twice")
                        }
                        _ => io(format!("creating {}", out.display()))(e),
                    })?;
                let room = limits.max_bytes.saturating_sub(total).min(limits.max_file);
                let copied = std::io::copy(&mut (&mut entry).take(room + 1), &mut file)
                    .map_err(io(format!("writing {}", out.display())))?;
                if copied > room {
                    return Err(ArchiveError::TooLarge {
                        what: "once unpacked",
                        limit: limits.max_bytes.min(total + limits.max_file),
                    });
                }
                total += copied;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| ArchiveError::Malformed(e.to_string()))?
                    .ok_or_else(|| refused(&rel, "a link without a target"))?
                    .into_owned();
                if !link_stays_inside(&rel, &target) {
                    return Err(refused(
                        &rel,
                        format!("its link to {} leads outside the archive", target.display()),
                    ));
                }
                real_parents(root, &rel)?;
                std::os::unix::fs::symlink(&target, &out).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => refused(&rel, "the path appears twice"),
                    _ => io(format!("creating {}", out.display()))(e),
                })?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(refused(
                    &rel,
                    format!(
                        "{other:?} entries are not allowed (only files, directories and links)"
                    ),
                ))
            }
        }
    }
    // Only complete, checked trees become visible.
    let kept = scratch.keep();
    std::fs::rename(&kept, dest).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        io(format!("moving the unpacked tree to {}", dest.display()))(e)
    })?;
    Ok(())
}
