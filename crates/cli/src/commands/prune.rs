//! `liftoff prune`: retention on demand (the server also prunes by itself past its
//! `--retention`).

use crate::connect::{Global, Output};

/// `liftoff prune`: what went (or with `--dry-run` would go), in one line.
pub async fn prune(g: &Global, older_than_s: u64, dry_run: bool) -> anyhow::Result<()> {
    let req = liftoff_types::api::PruneRequest {
        older_than_s,
        dry_run,
    };
    let pruned = g.client()?.prune(&req).await?;
    if g.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&pruned)?);
        return Ok(());
    }
    let n = |k: &str| pruned[k].as_u64().unwrap_or(0);
    println!(
        "{} {} items, {} runs (with their logs and metrics), {} sweeps, {} agents, {} code archives",
        if dry_run { "would remove" } else { "removed" },
        n("items"),
        n("runs"),
        n("sweeps"),
        n("agents"),
        n("archives")
    );
    Ok(())
}
