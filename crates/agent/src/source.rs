//! A job's source and Python environment on this agent.
//!
//! Sources are kept in a cache under the state directory, as archives: a code job's archive
//! by its digest (downloaded once, its digest checked), a git job's commit as an archive made
//! once from a bare mirror of the repository (cloned once, fetched when a commit is missing).
//! Each run gets its own copy, unpacked with the safe unpacker into its working directory.
//!
//! Environments: a source with a `requirements.txt` (or a `pyproject.toml` with a
//! `[project] dependencies` list) gets a virtual environment built once per distinct
//! requirements (hash of the list and the interpreter's version) and shared by every later
//! run. Runs wanting an entry that is being made wait for that one build (a lock per cache
//! key); a build is made aside and renamed into place, so a crash leaves no half environment.

use liftoff_client::Client;
use liftoff_types::job::JobKind;
use liftoff_types::JobVersion;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

/// Why a run's source or environment could not be made ready.
pub struct NotReady {
    pub message: String,
    /// The build's output, attached to the failure.
    pub log: Option<String>,
}

impl NotReady {
    fn new(message: impl Into<String>) -> NotReady {
        NotReady {
            message: message.into(),
            log: None,
        }
    }
}

pub struct Cache {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Build environments (`builder: noop` turns it off: the machine's interpreter is used).
    build_envs: bool,
    /// `python3 --version`, asked once.
    interpreter: tokio::sync::OnceCell<String>,
    /// The environment builds and fetches run with: the agent's without its secrets, since a
    /// package's build runs code from the network as surely as a run does.
    env: BTreeMap<String, String>,
}

impl Cache {
    pub fn new(state_dir: &Path, build_envs: bool, env: BTreeMap<String, String>) -> Cache {
        Cache {
            dir: state_dir.join("cache"),
            locks: Mutex::new(HashMap::new()),
            build_envs,
            interpreter: tokio::sync::OnceCell::new(),
            env,
        }
    }

    /// One lock per cache entry: whoever makes it, the others wait and then find it made.
    async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Unpacks the job's source into `work` (which must not exist yet).
    pub async fn checkout(
        &self,
        client: &Client,
        job: &JobVersion,
        work: &Path,
    ) -> Result<(), NotReady> {
        let archive = match job.spec.kind {
            JobKind::Code => self.code_archive(client, job).await?,
            JobKind::Git => self.git_archive(job).await?,
            JobKind::Image => {
                return Err(NotReady::new(
                    "an image job has no source to unpack: it runs its image",
                ))
            }
        };
        let work = work.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&archive)
                .map_err(|e| format!("cannot open {}: {e}", archive.display()))?;
            liftoff_artifacts::unpack(file, &work, liftoff_artifacts::Limits::default())
                .map_err(|e| format!("the job's source was refused: {e}"))
        })
        .await
        .map_err(|e| NotReady::new(e.to_string()))?
        .map_err(NotReady::new)
    }

    async fn code_archive(&self, client: &Client, job: &JobVersion) -> Result<PathBuf, NotReady> {
        let digest: liftoff_artifacts::Digest = job
            .spec
            .source
            .digest
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(NotReady::new)?;
        let path = self
            .dir
            .join("code")
            .join(format!("{}.tar.gz", digest.as_str()));
        let _guard = self.lock(&path.to_string_lossy()).await;
        if path.exists() {
            return Ok(path);
        }
        // Streamed into a file beside its place and hashed from there: a large archive never
        // sits whole in the agent's memory.
        let name = digest.to_string();
        let part = path.with_extension("part");
        if let Some(dir) = part.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| NotReady::new(format!("cannot create {}: {e}", dir.display())))?;
        }
        crate::report::retry("downloading the job's code", || async {
            let mut file = tokio::fs::File::create(&part).await.map_err(|source| {
                liftoff_client::ClientError::File {
                    context: format!("creating {}", part.display()),
                    source,
                }
            })?;
            client.download_artifact_to(&name, &mut file).await
        })
        .await
        .map_err(|e| NotReady::new(format!("cannot download the job's code: {e}")))?;
        let hashed = {
            let part = part.clone();
            tokio::task::spawn_blocking(move || file_digest(&part))
                .await
                .map_err(|e| NotReady::new(e.to_string()))?
        };
        if hashed.ok().as_ref() != Some(&digest) {
            let _ = std::fs::remove_file(&part);
            return Err(NotReady::new(format!(
                "the job's code did not match its digest {digest}"
            )));
        }
        std::fs::rename(&part, &path)
            .map_err(|e| NotReady::new(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }

    async fn git_archive(&self, job: &JobVersion) -> Result<PathBuf, NotReady> {
        let (Some(repo), Some(commit)) = (&job.spec.source.repo, &job.spec.source.commit) else {
            return Err(NotReady::new("a git job without a repository and commit"));
        };
        let repo_key = hex(&Sha256::digest(repo.as_bytes()))[..16].to_string();
        let mirror = self.dir.join("git").join(format!("{repo_key}.git"));
        let path = self
            .dir
            .join("git")
            .join(format!("{repo_key}-{commit}.tar.gz"));
        let _guard = self.lock(&mirror.to_string_lossy()).await;
        if path.exists() {
            return Ok(path);
        }
        if !mirror.exists() {
            let tmp = mirror.with_extension("cloning");
            let _ = std::fs::remove_dir_all(&tmp);
            git(
                &self.env,
                &[
                    "clone",
                    "--bare",
                    "--quiet",
                    "--",
                    repo,
                    &tmp.to_string_lossy(),
                ],
                None,
            )
            .await?;
            std::fs::rename(&tmp, &mirror).map_err(|e| NotReady::new(e.to_string()))?;
        }
        let has = |m: &Path| {
            let m = m.to_path_buf();
            let commit = format!("{commit}^{{commit}}");
            let env = &self.env;
            async move {
                git(env, &["cat-file", "-e", &commit], Some(&m))
                    .await
                    .is_ok()
            }
        };
        if !has(&mirror).await {
            git(
                &self.env,
                &["fetch", "--quiet", "--", repo, "+refs/*:refs/*"],
                Some(&mirror),
            )
            .await?;
            if !has(&mirror).await {
                return Err(NotReady::new(format!("commit {commit} is not in {repo}")));
            }
        }
        let tmp = path.with_extension("making");
        git(
            &self.env,
            &[
                "archive",
                "--format=tar.gz",
                "-o",
                &tmp.to_string_lossy(),
                commit,
            ],
            Some(&mirror),
        )
        .await?;
        std::fs::rename(&tmp, &path).map_err(|e| NotReady::new(e.to_string()))?;
        Ok(path)
    }

    /// The virtual environment for the requirements in `work`, built once; `None` when the
    /// source has none (or builds are off).
    pub async fn python_env(&self, work: &Path) -> Result<Option<PathBuf>, NotReady> {
        if !self.build_envs {
            return Ok(None);
        }
        let Some(requirements) = requirements(work) else {
            return Ok(None);
        };
        let version = self
            .interpreter
            .get_or_try_init(|| interpreter_version(&self.env))
            .await?;
        let mut h = Sha256::new();
        h.update(version.as_bytes());
        h.update(b"\n");
        h.update(requirements.as_bytes());
        let key = hex(&h.finalize())[..32].to_string();
        let env = self.dir.join("env").join(&key);
        let _guard = self.lock(&env.to_string_lossy()).await;
        if env.join("bin").join("python").exists() {
            return Ok(Some(env));
        }
        let building = env.with_extension("building");
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(env.parent().unwrap_or(&self.dir))
            .map_err(|e| NotReady::new(e.to_string()))?;
        let mut log = String::new();
        let venv = run_logged(
            &self.env,
            "python3",
            &["-m", "venv", &building.to_string_lossy()],
            None,
            &mut log,
        )
        .await;
        let installed = match venv {
            Ok(()) if has_requirements(&requirements) => {
                let list = building.join("requirements.txt");
                std::fs::write(&list, &requirements).map_err(|e| NotReady::new(e.to_string()))?;
                run_logged(
                    &self.env,
                    &building.join("bin").join("pip").to_string_lossy(),
                    &[
                        "install",
                        "--disable-pip-version-check",
                        "-r",
                        &list.to_string_lossy(),
                    ],
                    Some(work),
                    &mut log,
                )
                .await
            }
            other => other,
        };
        if let Err(message) = installed {
            let _ = std::fs::remove_dir_all(&building);
            return Err(NotReady {
                message: format!("building the Python environment failed: {message}"),
                log: Some(log),
            });
        }
        std::fs::rename(&building, &env).map_err(|e| NotReady::new(e.to_string()))?;
        Ok(Some(env))
    }
}

/// The requirements of a source: `requirements.txt`, else `pyproject.toml`'s
/// `[project] dependencies`, one per line.
fn requirements(work: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(work.join("requirements.txt")) {
        return Some(text);
    }
    let text = std::fs::read_to_string(work.join("pyproject.toml")).ok()?;
    let doc: toml_edit::DocumentMut = text.parse().ok()?;
    let deps = doc.get("project")?.get("dependencies")?.as_array()?;
    let lines: Vec<&str> = deps.iter().filter_map(|d| d.as_str()).collect();
    Some(lines.join("\n") + "\n")
}

/// Whether a requirements list names anything (not only comments and blank lines).
fn has_requirements(list: &str) -> bool {
    list.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .any(|l| !l.is_empty())
}

async fn interpreter_version(env: &BTreeMap<String, String>) -> Result<String, NotReady> {
    let out = tokio::process::Command::new("python3")
        .arg("--version")
        .env_clear()
        .envs(env)
        .output()
        .await
        .map_err(|e| NotReady::new(format!("cannot run python3: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn run_logged(
    env: &BTreeMap<String, String>,
    program: &str,
    args: &[&str],
    cwd: Option<&Path>,
    log: &mut String,
) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear().envs(env).stdin(Stdio::null());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    log.push_str(&format!("$ {program} {}\n", args.join(" ")));
    log.push_str(&String::from_utf8_lossy(&out.stdout));
    log.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(())
    } else {
        // The tool's own last words (pip's "No matching distribution found for ..."), so
        // the failure reads where users look, not only in the attached log.
        let said = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{program} {} exited with {}{}",
            args.first().unwrap_or(&""),
            out.status,
            last_words(&said)
        ))
    }
}

/// `: ` and the last few non-empty lines of a tool's output (at most 600 bytes), or nothing.
fn last_words(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    if tail.is_empty() {
        return String::new();
    }
    let mut end = tail.len().min(600);
    while !tail.is_char_boundary(end) {
        end -= 1;
    }
    format!(": {}", &tail[..end])
}

async fn git(
    env: &BTreeMap<String, String>,
    args: &[&str],
    git_dir: Option<&Path>,
) -> Result<(), NotReady> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear().envs(env);
    if let Some(dir) = git_dir {
        cmd.arg("--git-dir").arg(dir);
    }
    // Never ask for credentials on a terminal: fail instead.
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .await
        .map_err(|e| NotReady::new(format!("cannot run git: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        Err(NotReady {
            message: format!(
                "git {} failed{}",
                args.first().unwrap_or(&""),
                last_words(&said)
            ),
            log: Some(said),
        })
    }
}

/// The SHA-256 of a file's content, read in pieces.
fn file_digest(path: &Path) -> std::io::Result<liftoff_artifacts::Digest> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hash.update(&buf[..n]),
        }
    }
    hex(&hash.finalize()).parse().map_err(std::io::Error::other)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_come_from_either_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(requirements(dir.path()).is_none());
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"x\"\ndependencies = [\"numpy>=1\", \"tqdm\"]\n",
        )
        .unwrap();
        assert_eq!(requirements(dir.path()).unwrap(), "numpy>=1\ntqdm\n");
        std::fs::write(dir.path().join("requirements.txt"), "# none\n\n").unwrap();
        let list = requirements(dir.path()).unwrap();
        assert!(!has_requirements(&list));
        assert!(has_requirements("torch  # the big one\n"));
    }
}
