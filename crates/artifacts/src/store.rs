//! Blobs by content: the SHA-256 of their bytes is their name, so storing the same bytes
//! twice keeps one copy.

use crate::{io, ArchiveError};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// A SHA-256 in lower-case hex, checked: digests come over the network and become paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Digest, String> {
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Digest(s.to_string()))
        } else {
            Err(format!("{s:?} is not a SHA-256 in lower-case hex"))
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Where artifacts live. The local file system is the default; an S3-compatible store
/// implements the same three calls.
pub trait ArtifactStore: Send + Sync {
    /// Stores `bytes` (once: storing them again is a no-op) and returns their digest, and
    /// whether they were new.
    fn put(&self, bytes: &[u8]) -> Result<(Digest, bool), ArchiveError>;
    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, ArchiveError>;
    fn has(&self, digest: &Digest) -> bool;
    /// A file to write an incoming blob into, beside the store's own (so keeping it is a
    /// rename); dropped unkept, it is removed.
    fn stage(&self) -> Result<tempfile::NamedTempFile, ArchiveError>;
    /// Keeps a staged file as the blob `digest` (its content's SHA-256, checked by the
    /// caller while writing it); returns whether it was new.
    fn keep(&self, staged: tempfile::NamedTempFile, digest: &Digest) -> Result<bool, ArchiveError>;
    /// Where the blob is on disk, for reading it without holding it in memory.
    fn path_of(&self, digest: &Digest) -> Option<PathBuf>;
    /// Every blob with when it was stored.
    fn list(&self) -> Vec<(Digest, std::time::SystemTime)>;
    fn remove(&self, digest: &Digest) -> Result<(), ArchiveError>;
}

/// Blobs under `root/sha256/AB/REST`.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: &Path) -> LocalStore {
        LocalStore {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("sha256").join(&d.0[..2]).join(&d.0[2..])
    }
}

impl ArtifactStore for LocalStore {
    fn put(&self, bytes: &[u8]) -> Result<(Digest, bool), ArchiveError> {
        let digest = Digest::of(bytes);
        let path = self.path(&digest);
        if path.exists() {
            return Ok((digest, false));
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        // Written aside and renamed: a reader never sees half a blob, and two writers of the
        // same bytes both end with the one whole file.
        let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("creating a blob"))?;
        std::fs::write(tmp.path(), bytes).map_err(io("writing a blob"))?;
        tmp.persist(&path).map_err(|e| ArchiveError::Io {
            context: format!("storing {}", path.display()),
            source: e.error,
        })?;
        Ok((digest, true))
    }

    fn get(&self, digest: &Digest) -> Result<Option<Vec<u8>>, ArchiveError> {
        match std::fs::read(self.path(digest)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ArchiveError::Io {
                context: format!("reading {digest}"),
                source: e,
            }),
        }
    }

    fn has(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    fn stage(&self) -> Result<tempfile::NamedTempFile, ArchiveError> {
        let dir = self.root.join("staging");
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        tempfile::NamedTempFile::new_in(&dir).map_err(io("creating a staging file"))
    }

    fn keep(&self, staged: tempfile::NamedTempFile, digest: &Digest) -> Result<bool, ArchiveError> {
        let path = self.path(digest);
        if path.exists() {
            return Ok(false);
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        staged.persist(&path).map_err(|e| ArchiveError::Io {
            context: format!("storing {}", path.display()),
            source: e.error,
        })?;
        Ok(true)
    }

    fn path_of(&self, digest: &Digest) -> Option<PathBuf> {
        Some(self.path(digest)).filter(|p| p.exists())
    }

    fn list(&self) -> Vec<(Digest, std::time::SystemTime)> {
        let mut found = Vec::new();
        let Ok(prefixes) = std::fs::read_dir(self.root.join("sha256")) else {
            return found;
        };
        for prefix in prefixes.flatten() {
            let head = prefix.file_name().to_string_lossy().into_owned();
            for blob in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = format!("{head}{}", blob.file_name().to_string_lossy());
                let (Ok(digest), Ok(Ok(at))) = (
                    name.parse::<Digest>(),
                    blob.metadata().map(|m| m.modified()),
                ) else {
                    continue;
                };
                found.push((digest, at));
            }
        }
        found
    }

    fn remove(&self, digest: &Digest) -> Result<(), ArchiveError> {
        match std::fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ArchiveError::Io {
                context: format!("removing {digest}"),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}
