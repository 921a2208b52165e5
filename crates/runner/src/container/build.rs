//! Images from code jobs (W&B's `builder: {type: docker}`): the job's source on a base
//! image, its `requirements.txt` installed in a layer of its own before the code is copied
//! in, so that a change to the code alone reuses the engine's cached packages layer.
//!
//! The image's tag is a hash of everything that went in (base image, the generated
//! Dockerfile, the source as a deterministic archive: names sorted, times and owners
//! zeroed), so a second run of the same version finds its image and builds nothing. With a
//! registry set, the image is pushed there and runs use the pushed reference.

use super::{ContainerConfig, ContainerRunner};
use crate::{BuildFailure, BuildRequest, Built};
use bollard::query_parameters::{BuildImageOptions, PushImageOptions};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// The base image when the agent's config names none.
pub const DEFAULT_BASE: &str = "python:3.11-slim";
/// The generated Dockerfile's name inside the build context.
const DOCKERFILE: &str = ".liftoff.Dockerfile";
/// Where the job's source goes in the image (its working directory).
pub const SOURCE_DIR: &str = "/app";
const VENV: &str = "/opt/liftoff-venv";

pub async fn build(
    docker: &Docker,
    config: &ContainerConfig,
    request: &BuildRequest,
) -> Result<Built, BuildFailure> {
    let base = config.base_image.as_deref().unwrap_or(DEFAULT_BASE);
    let source = request.source.clone();
    let with_requirements = source.join("requirements.txt").is_file();
    let dockerfile = dockerfile(base, with_requirements);
    let text = dockerfile.clone();
    let context = tokio::task::spawn_blocking(move || context(&source, &text))
        .await
        .map_err(|e| failure(format!("packing the build context failed: {e}"), ""))?
        .map_err(|e| failure(format!("packing the build context failed: {e}"), ""))?;
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    h.update([0]);
    h.update(&context);
    let key: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = format!("liftoff/{}:{key}", image_name(&request.job));
    let tag = match &config.registry {
        Some(registry) => format!("{}/{name}", registry.trim_end_matches('/')),
        None => name,
    };
    if docker.inspect_image(&tag).await.is_ok() {
        let log = format!("the image {tag} is already built\n");
        return push(docker, config, tag, false, log).await;
    }
    let mut log = format!("building {tag} on {base}\n");
    if docker.inspect_image(&super::with_tag(base)).await.is_err() {
        log.push_str(&format!("pulling {base}\n"));
        ContainerRunner::pull(docker, base)
            .await
            .map_err(|e| failure(e, &log))?;
    }
    let options = BuildImageOptions {
        dockerfile: DOCKERFILE.into(),
        t: Some(tag.clone()),
        rm: true,
        forcerm: true,
        labels: Some(HashMap::from([(
            "liftoff.job".to_string(),
            request.job.clone(),
        )])),
        ..Default::default()
    };
    let mut steps = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(step) = steps.next().await {
        match step {
            Ok(info) => {
                if let Some(text) = info.stream {
                    log.push_str(&text);
                }
                if let Some(error) = info.error_detail.and_then(|d| d.message) {
                    log.push_str(&error);
                    log.push('\n');
                    let message = format!("building the image failed: {}", last_line(&error));
                    return Err(failure(message, &log));
                }
            }
            Err(e) => {
                let message = format!("building the image failed: {}", super::reason(&e));
                log.push_str(&message);
                return Err(failure(message, &log));
            }
        }
    }
    push(docker, config, tag, true, log).await
}

/// Pushes a built image to the registry, when one is set.
async fn push(
    docker: &Docker,
    config: &ContainerConfig,
    tag: String,
    built: bool,
    mut log: String,
) -> Result<Built, BuildFailure> {
    if config.registry.is_none() {
        return Ok(Built {
            image: tag,
            built,
            log,
        });
    }
    let (repo, version) = tag.rsplit_once(':').unwrap_or((&tag, "latest"));
    let options = PushImageOptions {
        tag: Some(version.to_string()),
        platform: None,
    };
    log.push_str(&format!("pushing {tag}\n"));
    let mut steps = docker.push_image(repo, Some(options), None);
    while let Some(step) = steps.next().await {
        let error = match step {
            Ok(info) => info.error_detail.and_then(|d| d.message),
            Err(e) => Some(super::reason(&e)),
        };
        if let Some(error) = error {
            let message = format!("pushing {tag} failed: {error}");
            log.push_str(&message);
            return Err(failure(message, &log));
        }
    }
    Ok(Built {
        image: tag,
        built,
        log,
    })
}

fn failure(message: String, log: &str) -> BuildFailure {
    BuildFailure {
        message,
        log: log.to_string(),
    }
}

fn last_line(text: &str) -> &str {
    text.trim().lines().last().unwrap_or("")
}

/// The Dockerfile: packages first (a layer that a code change leaves cached), then the code.
fn dockerfile(base: &str, with_requirements: bool) -> String {
    let mut text = format!("FROM {base}\n");
    if with_requirements {
        text.push_str(&format!(
            "RUN python3 -m venv --system-site-packages {VENV}\n\
             COPY requirements.txt /opt/liftoff/requirements.txt\n\
             RUN {VENV}/bin/pip install --disable-pip-version-check --no-cache-dir -r /opt/liftoff/requirements.txt\n\
             ENV PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV}\n"
        ));
    }
    text.push_str(&format!("COPY . {SOURCE_DIR}\nWORKDIR {SOURCE_DIR}\n"));
    text
}

/// A job's name as an image repository's: lower case, `[a-z0-9._-]`.
fn image_name(job: &str) -> String {
    let name: String = job
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if name.is_empty() {
        "job".into()
    } else {
        name.to_string()
    }
}

/// The build context: the source and the Dockerfile as a tar whose bytes depend on the
/// content alone.
fn context(source: &Path, dockerfile: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut paths = Vec::new();
    walk(source, source, &mut paths)?;
    paths.sort();
    for rel in paths {
        let full = source.join(&rel);
        let meta = std::fs::symlink_metadata(&full)?;
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if meta.file_type().is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &rel, std::fs::read_link(&full)?)?;
        } else if meta.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &rel, std::io::empty())?;
        } else if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
            header.set_size(meta.len());
            tar.append_data(&mut header, &rel, std::fs::File::open(&full)?)?;
        }
    }
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_mode(0o644);
    header.set_size(dockerfile.len() as u64);
    tar.append_data(&mut header, DOCKERFILE, dockerfile.as_bytes())?;
    tar.into_inner()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if rel.as_os_str() == DOCKERFILE {
            continue;
        }
        let kind = entry.file_type()?;
        out.push(rel);
        if kind.is_dir() {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_depends_on_content_alone() {
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("train.py"), "print(1)\n").unwrap();
        std::fs::create_dir(a.path().join("pkg")).unwrap();
        std::fs::write(a.path().join("pkg/m.py"), "x = 1\n").unwrap();
        let first = context(a.path(), "FROM x\n").unwrap();
        // Touched later, same content: same bytes.
        std::fs::write(a.path().join("train.py"), "print(1)\n").unwrap();
        assert_eq!(first, context(a.path(), "FROM x\n").unwrap());
        std::fs::write(a.path().join("train.py"), "print(2)\n").unwrap();
        assert_ne!(first, context(a.path(), "FROM x\n").unwrap());
    }

    #[test]
    fn packages_are_installed_before_the_code_is_copied() {
        let text = dockerfile("base:1", true);
        let pip = text.find("pip install").unwrap();
        let code = text.find("COPY . /app").unwrap();
        assert!(pip < code, "{text}");
        assert!(!dockerfile("base:1", false).contains("pip"));
        assert_eq!(image_name("My Job/v2"), "my-job-v2");
    }
}
