//! `distill features fit`: a PCA basis for stored features, fitted on the teacher's outputs over
//! a spread-out sample of the views `label` would make, for `label --feature-basis`.

use crate::commands::label::{LabelArgs, label_config};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum FeaturesCommand {
    /// Fit a PCA basis of --dim directions for each feature head (--feature) on every k-th
    /// sample of --data (about --samples of them, --epochs views each, --aug's recipe), run
    /// through the teachers as `label` would; writes it to --out (a file for `label
    /// --feature-basis`) and reports the variance kept and the reconstruction cosine on views
    /// held out of the fit. Takes `label`'s flags.
    Fit(Box<FitArgs>),
}

#[derive(clap::Args)]
pub struct FitArgs {
    #[command(flatten)]
    pub label: LabelArgs,
    /// Directions kept per head (the stored dimensions d).
    #[arg(long)]
    pub dim: u32,
    /// About this many samples of the data (every k-th), each labelled for --epochs views.
    #[arg(long, default_value_t = 10_000)]
    pub samples: u32,
}

/// `distill features …`.
pub fn features(c: FeaturesCommand) -> Result<ExitCode> {
    match c {
        FeaturesCommand::Fit(a) => fit(*a),
    }
}

fn fit(a: FitArgs) -> Result<ExitCode> {
    if a.label.feature.is_none() {
        bail!("--feature names the teacher output to fit a basis for");
    }
    if a.dim == 0 || a.samples == 0 {
        bail!("--dim and --samples must be at least 1");
    }
    let data = a
        .label
        .data
        .open(&a.label.data.split_or("train"), None, None)?;
    let json = a.label.json;
    let out = a.label.out.clone();
    let cfg = label_config(a.label, data)?;
    let (file, reports) = teacher_infer::basis::fit_basis(&cfg, a.samples, a.dim, |_| {})
        .with_context(|| format!("fitting a basis for {}", out.display()))?;
    label_store::writer::write_atomic(&out, &file.to_bytes())?;
    let mut o = std::io::stdout().lock();
    if json {
        writeln!(
            o,
            "{}",
            serde_json::json!({"out": out, "checksum": file.checksum(), "heads": reports})
        )?;
    } else {
        for r in &reports {
            writeln!(
                o,
                "head {} ({}): {} of {} dimensions keep {:.2}% of the variance of {} views; \
                 reconstruction cosine on {} held-out views: mean {:.5}, 1st percentile {:.5}",
                r.head,
                r.output,
                r.stored_dim,
                r.dim,
                100.0 * r.variance_kept,
                r.fitted,
                r.held_out,
                r.cosine_mean,
                r.cosine_p1
            )?;
        }
        writeln!(o, "wrote {} ({})", out.display(), file.checksum())?;
    }
    Ok(ExitCode::SUCCESS)
}
