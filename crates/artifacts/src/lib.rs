//! Code archives for jobs, and where they are kept.
//!
//! - [`pack`]: a directory to a gzipped tar, honouring `.gitignore` and friends, the same bytes
//!   for the same content whatever the files' times and owners, so that the same directory
//!   uploaded twice is one blob and one job version.
//! - [`unpack`]: an archive that came over the network into a directory, refusing absolute
//!   paths, `..`, links that lead outside, device files, and archives past the size limits;
//!   it unpacks into a scratch directory and renames it into place only when every entry
//!   passed, so a refused archive leaves nothing behind.
//! - [`store`]: blobs by SHA-256 on the local file system, behind a trait other backends
//!   (S3-compatible stores) can implement.

pub mod pack;
pub mod store;
pub mod unpack;

pub use pack::{pack_dir, Packed};
pub use store::{ArtifactStore, Digest, LocalStore};
pub use unpack::{unpack, Limits};

/// What can go wrong with an archive; every case names the entry or limit.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("entry {path:?}: {reason}")]
    Refused { path: String, reason: String },
    #[error("the archive is larger than the limit of {limit} bytes {what}")]
    TooLarge { what: &'static str, limit: u64 },
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("{0:?} already exists")]
    Exists(std::path::PathBuf),
    #[error("not a valid archive: {0}")]
    Malformed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}
