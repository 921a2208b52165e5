//! Packing a code directory into a deterministic `.tar.gz`.

use crate::{io, ArchiveError};
use sha2::{Digest as _, Sha256};
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
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
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
    let bytes = gz.finish().map_err(io("compressing the archive"))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Packed {
        bytes,
        sha256,
        files: paths.len(),
    })
}
