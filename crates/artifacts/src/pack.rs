//! Packing a code directory into a deterministic `.tar.gz`.

use crate::{io, ArchiveError};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::Path;

/// A packed directory: the archive and its SHA-256 (hex).
pub struct Packed {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub files: usize,
}

/// Packs `root`: files and symlinks under it, skipping what `.gitignore`, `.ignore` and
/// `.git/info/exclude` exclude (whether or not it is a git checkout) and the `.git` directory
/// itself. Entries are sorted, with zeroed times and owners and modes reduced to 0644/0755, so
/// the bytes depend on content, names and executability only.
pub fn pack_dir(root: &Path) -> Result<Packed, ArchiveError> {
    let (bytes, written) = pack_dir_to(root, Vec::new())?;
    Ok(Packed {
        bytes,
        sha256: written.sha256,
        files: written.files,
    })
}

/// What [`pack_dir_to`] wrote.
pub struct Written {
    /// The archive's SHA-256 (hex) and size.
    pub sha256: String,
    pub bytes: u64,
    pub files: usize,
}

/// What packing `root` would take: its files' bytes and count, as [`pack_dir`] would pack
/// them, with the largest files first (up to 5), to name what to leave out.
pub struct Measured {
    pub bytes: u64,
    pub files: usize,
    pub largest: Vec<(std::path::PathBuf, u64)>,
}

pub fn measure(root: &Path) -> Result<Measured, ArchiveError> {
    let mut sizes = Vec::new();
    for rel in listing(root)? {
        let full = root.join(&rel);
        let meta =
            std::fs::symlink_metadata(&full).map_err(io(format!("reading {}", full.display())))?;
        sizes.push((rel, if meta.is_file() { meta.len() } else { 0 }));
    }
    let bytes = sizes.iter().map(|(_, n)| n).sum();
    let files = sizes.len();
    sizes.sort_by_key(|s| std::cmp::Reverse(s.1));
    sizes.truncate(5);
    Ok(Measured {
        bytes,
        files,
        largest: sizes,
    })
}

/// [`pack_dir`] into `out` (a file, for archives too big to hold in memory), hashing as it
/// writes; returns `out` back.
pub fn pack_dir_to<W: Write>(root: &Path, out: W) -> Result<(W, Written), ArchiveError> {
    let paths = listing(root)?;
    let hashing = Hashing {
        inner: out,
        hash: Sha256::new(),
        bytes: 0,
    };
    let gz = flate2::write::GzEncoder::new(hashing, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for rel in &paths {
        let full = root.join(rel);
        let meta =
            std::fs::symlink_metadata(&full).map_err(io(format!("reading {}", full.display())))?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.file_type().is_symlink() {
            let target =
                std::fs::read_link(&full).map_err(io(format!("reading {}", full.display())))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            tar.append_link(&mut header, rel, &target)
                .map_err(io(format!("packing {}", rel.display())))?;
        } else {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.len());
            header.set_mode(if exec { 0o755 } else { 0o644 });
            let file =
                std::fs::File::open(&full).map_err(io(format!("reading {}", full.display())))?;
            tar.append_data(&mut header, rel, file)
                .map_err(io(format!("packing {}", rel.display())))?;
        }
    }
    let gz = tar.into_inner().map_err(io("finishing the archive"))?;
    let mut hashing = gz.finish().map_err(io("compressing the archive"))?;
    hashing.flush().map_err(io("writing the archive"))?;
    let written = Written {
        sha256: hex::encode(hashing.hash.finalize()),
        bytes: hashing.bytes,
        files: paths.len(),
    };
    Ok((hashing.inner, written))
}

/// The paths `pack_dir` packs, relative to `root`, sorted.
fn listing(root: &Path) -> Result<Vec<std::path::PathBuf>, ArchiveError> {
    let mut paths = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git")
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| ArchiveError::Io {
            context: format!("walking {}", root.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .map_err(|e| ArchiveError::Malformed(e.to_string()))?
            .to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_file() || kind.is_symlink() {
            paths.push(rel);
        }
    }
    paths.sort();
    Ok(paths)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
