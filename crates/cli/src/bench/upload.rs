//! `liftoff bench upload`: shipping a large code directory (default 1 GiB that does not
//! compress) with `liftoff job create code` to a real `liftoff server`, and the peak memory
//! of both: the CLI's (`ru_maxrss` of the finished children) against a trivial CLI call's, the
//! server's (`VmHWM`) against its own before the upload. Flat memory means the peaks do not
//! grow with the archive.

use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct UploadBench {
    /// Size of the directory's one data file, in MiB.
    #[arg(long, default_value_t = 1024)]
    pub size_mb: u64,
}

pub async fn run(b: UploadBench) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("liftoff-bench").tempdir()?;
    let data = tmp.path().join("data");
    let project = tmp.path().join("project");
    std::fs::create_dir_all(&project)?;
    std::fs::write(project.join("train.py"), "print('hi')\n")?;
    write_noise(&project.join("weights.bin"), b.size_mb << 20)?;
    let exe = std::env::current_exe()?;
    let limit = format!("{}M", b.size_mb * 2 + 16);
    let mut server = super::spawn_server(&exe, &data, &["--artifact-limit", &limit])?;
    let result = measure(&exe, &data, &project, server.id()).await;
    let _ = server.kill();
    let _ = server.wait();
    let mut figures = result?;
    figures.insert("size_mb".into(), json!(b.size_mb));
    println!("{}", serde_json::to_string_pretty(&figures)?);
    Ok(())
}

async fn measure(
    exe: &Path,
    data: &Path,
    project: &Path,
    server: u32,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    super::server_up(data).await?;
    let cli = |args: &[&str]| -> anyhow::Result<(f64, u64)> {
        let started = Instant::now();
        let out = super::cli(exe, data, args)?;
        anyhow::ensure!(
            out.status.success(),
            "liftoff {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The largest peak of the children waited for so far: the calls are made smallest
        // first, so this is the last call's own.
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)?;
        Ok((started.elapsed().as_secs_f64(), usage.max_rss() as u64))
    };
    let (_, trivial_kb) = cli(&["job", "list"])?;
    let server_idle_kb = vm_hwm(server)?;
    let path = project.to_string_lossy().into_owned();
    let (seconds, cli_kb) = cli(&[
        "job",
        "create",
        "code",
        &path,
        "--name",
        "big",
        "--entrypoint",
        "python3 train.py",
    ])?;
    let server_peak_kb = vm_hwm(server)?;
    let mut f = serde_json::Map::new();
    f.insert(
        "pack_and_upload_s".into(),
        json!((seconds * 10.0).round() / 10.0),
    );
    f.insert("cli_peak_rss_mb".into(), json!(mb(cli_kb)));
    f.insert("cli_trivial_call_peak_rss_mb".into(), json!(mb(trivial_kb)));
    f.insert("server_idle_peak_rss_mb".into(), json!(mb(server_idle_kb)));
    f.insert("server_peak_rss_mb".into(), json!(mb(server_peak_kb)));
    Ok(f)
}

fn mb(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

/// A process's peak resident memory so far, in KiB.
fn vm_hwm(pid: u32) -> anyhow::Result<u64> {
    super::status_kb(pid, "VmHWM")
}

/// Bytes that do not compress (a xorshift stream), as model weights are.
fn write_noise(path: &Path, bytes: u64) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}
