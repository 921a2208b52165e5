//! `liftoff job create code|git|image`, `liftoff job list|show`.

use crate::connect::{Global, Output};
use crate::output;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use liftoff_types::job::{JobKind, JobSource};
use liftoff_types::{JobSpec, JobVersion};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Create a job (a new version only when its content or entrypoint changed).
    #[command(subcommand)]
    Create(CreateCommand),
    /// List jobs with their versions.
    #[command(after_help = "Examples:\n  liftoff job list")]
    List,
    /// Show a job's versions.
    #[command(after_help = "Examples:\n  liftoff job show mnist")]
    Show { name: String },
}

#[derive(Subcommand, Debug)]
pub enum CreateCommand {
    /// From a directory: uploaded (honouring .gitignore) as a content-addressed archive.
    #[command(
        after_help = "Examples:\n  liftoff job create code . --entrypoint \"python train.py\"\n  liftoff job create code ./mnist --name mnist --entrypoint \"python train.py\" --config epochs=3 --schema schema.yaml"
    )]
    Code {
        path: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// From a git repository at a commit (or a ref, resolved to its commit now).
    #[command(
        after_help = "Examples:\n  liftoff job create git https://github.com/org/repo --ref main --entrypoint \"python train.py\"\n  liftoff job create git ../repo --commit 3f2a9c1 --entrypoint \"python train.py\""
    )]
    Git {
        /// The repository: a URL, a file:// URL or a local path.
        repo: String,
        #[arg(long, conflicts_with = "git_ref", required_unless_present = "git_ref")]
        commit: Option<String>,
        #[arg(long = "ref", id = "git_ref")]
        git_ref: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// From a container image.
    #[command(
        after_help = "Examples:\n  liftoff job create image pytorch/pytorch:2.4.0-cuda12.1-cudnn9-runtime --name torch --entrypoint \"python -c 'import torch'\""
    )]
    Image {
        image: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args, Debug)]
pub struct Common {
    /// The job's name (default: from the directory, repository or image).
    #[arg(long)]
    pub name: Option<String>,
    /// The command, e.g. "python train.py --epochs 3" (split like a shell, never run by one).
    #[arg(long)]
    pub entrypoint: String,
    /// The default run config, a JSON or YAML file.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// A default config entry: KEY=VALUE (dots nest).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// The input schema a run's config must meet, a JSON or YAML file.
    #[arg(long)]
    pub schema: Option<PathBuf>,
}

pub async fn run(g: &Global, cmd: JobCommand) -> anyhow::Result<()> {
    let client = g.client()?;
    match cmd {
        JobCommand::Create(create) => {
            let (name, spec) = build(&client, create).await?;
            let made = client.create_job_version(&name, &spec).await?;
            if g.output == Output::Table {
                let what = if made.created {
                    "created"
                } else {
                    "unchanged:"
                };
                eprintln!("{what} job {}", made.job.reference());
            }
            // The reference alone (`name:vN`), so a script can take it.
            match g.output {
                crate::connect::Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&made)?)
                }
                crate::connect::Output::Table => println!("{}", made.job.reference()),
            }
            Ok(())
        }
        JobCommand::List => {
            let all = client.list_jobs().await?;
            let rows = table_rows(&all);
            output::print(
                g.output,
                &all,
                &["JOB", "KIND", "SOURCE", "ENTRYPOINT"],
                rows,
            )
        }
        JobCommand::Show { name } => {
            let versions = client.job_versions(&name).await?;
            let rows = table_rows(&versions);
            output::print(
                g.output,
                &versions,
                &["JOB", "KIND", "SOURCE", "ENTRYPOINT"],
                rows,
            )
        }
    }
}

fn table_rows(versions: &[JobVersion]) -> Vec<Vec<String>> {
    versions
        .iter()
        .map(|v| {
            let s = &v.spec.source;
            let source = match v.spec.kind {
                JobKind::Code => s.digest.clone().unwrap_or_default(),
                JobKind::Git => format!(
                    "{}@{}",
                    s.repo.as_deref().unwrap_or(""),
                    s.commit.as_deref().unwrap_or("")
                ),
                JobKind::Image => s.image.clone().unwrap_or_default(),
            };
            vec![
                v.reference(),
                v.spec.kind.to_string(),
                source,
                v.spec.entrypoint.join(" "),
            ]
        })
        .collect()
}

/// A spec's command as a job's one-line entrypoint; `missing` when it has none.
fn entrypoint_of(spec: &liftoff_types::LaunchSpec, missing: &str) -> anyhow::Result<String> {
    let Some(argv) = spec
        .overrides
        .entry_point
        .as_ref()
        .filter(|a| !a.is_empty())
    else {
        bail!("{missing}");
    };
    shlex::try_join(argv.iter().map(String::as_str))
        .with_context(|| format!("the command {argv:?} cannot be written as one line"))
}

/// `launch --code DIR -- CMD`: `DIR` as a code job (named after the directory) whose
/// entrypoint is the command; returns its reference. The same content and command are the
/// same version, so launching again makes none.
pub async fn ship_code(
    client: &liftoff_client::Client,
    dir: &Path,
    spec: &liftoff_types::LaunchSpec,
) -> anyhow::Result<String> {
    let entrypoint = entrypoint_of(spec, "--code needs the command to run after `--`")?;
    let common = Common {
        name: None,
        entrypoint,
        config_file: None,
        config: Vec::new(),
        schema: None,
    };
    let create = CreateCommand::Code {
        path: dir.to_path_buf(),
        common,
    };
    let (name, job) = build(client, create).await?;
    let made = client.create_job_version(&name, &job).await?;
    let what = if made.created {
        "shipped"
    } else {
        "unchanged:"
    };
    eprintln!("{what} {} as job {}", dir.display(), made.job.reference());
    Ok(made.job.reference())
}

/// A W&B spec's `uri`/`git`: the repository at its commit as a git job (named after the
/// repository) whose entrypoint is the spec's `overrides.entry_point`; returns its reference.
pub async fn ship_git(
    client: &liftoff_client::Client,
    git: &super::launch::GitSource,
    spec: &liftoff_types::LaunchSpec,
) -> anyhow::Result<String> {
    let entrypoint = entrypoint_of(
        spec,
        "a spec with uri (a git repository) needs overrides.entry_point: the command to run in it",
    )?;
    // A full commit id pins it; anything else (a branch, a tag, a short id) is resolved now.
    let full = git
        .version
        .as_deref()
        .filter(|v| v.len() == 40 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    let create = CreateCommand::Git {
        repo: git.remote.clone(),
        commit: full.map(str::to_string),
        git_ref: if full.is_some() {
            None
        } else {
            git.version.clone()
        },
        common: Common {
            name: None,
            entrypoint,
            config_file: None,
            config: Vec::new(),
            schema: None,
        },
    };
    let (name, job) = build(client, create).await?;
    let made = client.create_job_version(&name, &job).await?;
    let commit = job.source.commit.clone().unwrap_or_default();
    eprintln!(
        "{} {} at {commit} as job {}",
        if made.created { "made" } else { "unchanged:" },
        git.remote,
        made.job.reference()
    );
    Ok(made.job.reference())
}

async fn build(
    client: &liftoff_client::Client,
    create: CreateCommand,
) -> anyhow::Result<(String, JobSpec)> {
    let (kind, source, common, default_name) = match create {
        CreateCommand::Code { path, common } => {
            let digest = super::upload::ship_dir(client, &path).await?;
            let name = std::fs::canonicalize(&path)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            let source = JobSource {
                digest: Some(digest),
                repo: None,
                commit: None,
                image: None,
            };
            (JobKind::Code, source, common, name)
        }
        CreateCommand::Git {
            repo: url,
            commit,
            git_ref,
            common,
        } => {
            let commit = resolve_commit(&url, commit.as_deref(), git_ref.as_deref())?;
            let name = url
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .map(|n| n.trim_end_matches(".git").to_string());
            let source = JobSource {
                digest: None,
                repo: Some(url),
                commit: Some(commit),
                image: None,
            };
            (JobKind::Git, source, common, name)
        }
        CreateCommand::Image { image, common } => {
            let name = image
                .rsplit('/')
                .next()
                .map(|n| n.split([':', '@']).next().unwrap_or(n).to_string());
            let source = JobSource {
                digest: None,
                repo: None,
                commit: None,
                image: Some(image),
            };
            (JobKind::Image, source, common, name)
        }
    };
    let name = match common.name.clone().or(default_name) {
        Some(n) => n,
        None => bail!("give the job a --name"),
    };
    let entrypoint = shlex::split(&common.entrypoint)
        .filter(|argv| !argv.is_empty())
        .with_context(|| format!("--entrypoint {:?} is not a command", common.entrypoint))?;
    let mut default_config = Map::new();
    if let Some(path) = &common.config_file {
        match super::read_document::<Value>(path)? {
            Value::Object(m) => default_config = m,
            _ => bail!("{} must hold a mapping of config keys", path.display()),
        }
    }
    for entry in &common.config {
        let (key, value) = super::key_value(entry)?;
        default_config.insert(key, value);
    }
    let input_schema = common
        .schema
        .as_deref()
        .map(super::read_document::<Value>)
        .transpose()?;
    Ok((
        name,
        JobSpec {
            kind,
            source,
            entrypoint,
            default_config,
            input_schema,
        },
    ))
}

/// The full commit id of `commit` (or of `git_ref`) in the repository at `url`.
fn resolve_commit(
    url: &str,
    commit: Option<&str>,
    git_ref: Option<&str>,
) -> anyhow::Result<String> {
    if url.starts_with('-') {
        bail!("repository {url:?} must not start with '-'");
    }
    let local = url.strip_prefix("file://").unwrap_or(url);
    if Path::new(local).exists() {
        let want = commit.or(git_ref).unwrap_or("HEAD");
        let out = std::process::Command::new("git")
            .args(["-C", local, "rev-parse", "--verify", "--end-of-options"])
            .arg(format!("{want}^{{commit}}"))
            .output()
            .context("running git")?;
        if !out.status.success() {
            bail!(
                "{want:?} is not a commit of {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    if let Some(c) = commit {
        return Ok(c.to_string());
    }
    let r = git_ref.unwrap_or("HEAD");
    let out = std::process::Command::new("git")
        .args(["ls-remote", "--", url, r])
        .output()
        .context("running git")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(sha) if out.status.success() => Ok(sha.to_string()),
        _ => bail!("ref {r:?} not found in {url}"),
    }
}
