//! `distill merge`: shard stores joined into one without copying record bytes.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// Shard stores to join, in any order.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Directory of the merged store.
    #[arg(long)]
    out: PathBuf,
    /// Print the merged manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// `distill merge`.
pub fn merge(a: MergeArgs) -> Result<ExitCode> {
    let m = label_store::merge(&a.shards, &a.out)
        .with_context(|| format!("merging into {}", a.out.display()))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", m.to_json())?;
    } else {
        writeln!(
            out,
            "merged {} shards: {} samples × {} epochs = {} records into {}",
            m.shards.len(),
            m.samples.len(),
            m.epochs,
            m.records(),
            a.out.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
