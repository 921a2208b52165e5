//! A run's source as a Ray package: the directory zipped with its files at the top (as Ray's
//! own SDK zips a `working_dir`, which Ray unpacks without removing a top directory), named
//! by a hash of its content, `gcs://_ray_pkg_HASH.zip`. The zip is made the same way every
//! time (sorted entries, fixed times and modes), so the same source gets the same name and a
//! second run of a job version uploads nothing.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Ray refuses packages larger than this (its `GCS_STORAGE_MAX_SIZE`).
pub const MAX_BYTES: u64 = 512 * 1024 * 1024;

pub struct Package {
    pub uri: String,
    pub zip: Vec<u8>,
}

/// Zips `dir`; `None` if it holds nothing (an inline command has no source).
pub fn make(dir: &Path) -> Result<Option<Package>, String> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    if files.is_empty() {
        return Ok(None);
    }
    files.sort();
    let mut total = 0u64;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let time = zip::DateTime::default();
    for (rel, path, executable) in &files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(time)
            .unix_permissions(if *executable { 0o755 } else { 0o644 });
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        total += bytes.len() as u64;
        if total > MAX_BYTES {
            return Err(format!(
                "the run's source is larger than Ray takes as a package ({} MiB)",
                MAX_BYTES >> 20
            ));
        }
        writer
            .start_file(rel.as_str(), options)
            .and_then(|()| writer.write_all(&bytes).map_err(Into::into))
            .map_err(|e| format!("zipping {rel}: {e}"))?;
    }
    let zip = writer
        .finish()
        .map_err(|e| format!("zipping the source: {e}"))?
        .into_inner();
    let digest = Sha256::digest(&zip);
    Ok(Some(Package {
        uri: format!("gcs://_ray_pkg_{}.zip", hex::encode(&digest[..16])),
        zip,
    }))
}

/// Regular files under `dir`, as (path in the zip, path, executable). Symlinks are left
/// out: one could point anywhere on the agent's machine.
fn collect(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(String, std::path::PathBuf, bool)>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            let mode = entry
                .metadata()
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            out.push((rel, path, mode & 0o111 != 0));
        }
    }
    Ok(())
}

/// A `requirements.txt` as Ray's `runtime_env.pip` list: its requirement lines, without
/// comments and blanks.
pub fn requirements(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("requirements.txt")).ok()?;
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    (!lines.is_empty()).then_some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_source_makes_the_same_package_and_a_change_another() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for dir in [a.path(), b.path()] {
            std::fs::create_dir_all(dir.join("pkg")).unwrap();
            std::fs::write(dir.join("train.py"), "print('hi')\n").unwrap();
            std::fs::write(dir.join("pkg/util.py"), "X = 1\n").unwrap();
        }
        let pa = make(a.path()).unwrap().unwrap();
        let pb = make(b.path()).unwrap().unwrap();
        assert_eq!(pa.uri, pb.uri);
        assert!(pa.uri.starts_with("gcs://_ray_pkg_") && pa.uri.ends_with(".zip"));
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pa.zip)).unwrap();
        let names: Vec<String> = zip.file_names().map(|n| n.unwrap().into_owned()).collect();
        assert!(names.contains(&"pkg/util.py".to_string()), "{names:?}");
        assert!(zip.by_name("train.py").is_ok());
        std::fs::write(b.path().join("train.py"), "print('ho')\n").unwrap();
        assert_ne!(make(b.path()).unwrap().unwrap().uri, pa.uri);
        assert!(make(tempfile::tempdir().unwrap().path()).unwrap().is_none());
    }

    #[test]
    fn requirements_become_a_pip_list() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("requirements.txt"),
            "# deps\nnumpy==2.0 # pinned\n\nrich\n",
        )
        .unwrap();
        assert_eq!(requirements(d.path()).unwrap(), ["numpy==2.0", "rich"]);
    }
}
