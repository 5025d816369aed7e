//! `distill inspect`: the summary of a store, `--verify`, `--records` dumps and the `--show`
//! grid. Everything it prints goes through `writeln!` so that a closed pipe (`| head`) ends the
//! command quietly instead of panicking.

use crate::flags::{DataArgs, parse_range};
use anyhow::{Context, Result, bail};
use formats::{AugParams, MixKind, PixelBox};
use label_store::{LabelStore, Summary, VerifyReport};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The store directory (holding manifest.json).
    store: PathBuf,
    /// Check every footer, chunk checksum and record, and the manifest against the shards;
    /// exit with status 1 on any fault.
    #[arg(long)]
    verify: bool,
    /// Dump records A..B (end exclusive): in (epoch, sample) order over the whole store, or the
    /// A-th to (B−1)-th records of one epoch with --epoch. Both count from the store's first
    /// sample (sample 0, unless the store is one shard of a sharded run).
    #[arg(long, value_name = "A..B", value_parser = parse_range)]
    records: Option<(u64, u64)>,
    /// With --records: the epoch whose samples to dump.
    #[arg(long)]
    epoch: Option<u32>,
    /// Temperature of the probabilities shown by --records.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Render records A..B (numbered as in --records) replayed from --data, captioned with the
    /// teacher's top-3 classes, into the PNG given by --out.
    #[arg(long, value_name = "A..B", value_parser = parse_range, requires_all = ["data", "out"])]
    show: Option<(u64, u64)>,
    /// The dataset the store was labelled from (for --show).
    #[command(flatten)]
    pub data: DataArgs,
    /// PNG file written by --show.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The teacher-input line of `inspect`: size, normalization, and where each setting came from.
fn input_line(t: &formats::manifest::TeacherInput) -> String {
    let from = |key: &str| {
        t.sources
            .get(key)
            .map_or(String::new(), |s| format!(" ({s})"))
    };
    let mut line = format!("{}×{}", t.width, t.height);
    if let Some(s) = t.scale {
        line += &format!(", pixel/255 · {s}");
    }
    if let Some(m) = &t.mean {
        line += &format!(", mean {m:?}{}", from("mean"));
    }
    if let Some(s) = &t.std {
        line += &format!(", std {s:?}{}", from("std"));
    }
    for key in ["interpolation", "crop_pct"] {
        if let Some(s) = t.sources.get(key) {
            line += &format!(", {key} from {s}");
        }
    }
    line
}

/// `distill inspect`.
pub fn inspect(a: InspectArgs) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if a.temperature <= 0.0 || !a.temperature.is_finite() {
        bail!(
            "--temperature must be a positive number, got {}",
            a.temperature
        );
    }
    if a.epoch.is_some() && a.records.is_none() && a.show.is_none() {
        bail!("--epoch selects the epoch of --records or --show; give one of them too");
    }
    if let Some(range) = a.show {
        return show(&a, range);
    }
    // Verify first and on its own: a damaged store may not even open.
    let report = a.verify.then(|| label_store::verify(&a.store));
    let opened = LabelStore::open(&a.store);
    let store = match (opened, &report) {
        (Ok(s), _) => Some(s),
        (Err(e), Some(_)) => {
            tracing::debug!("store does not open: {e}");
            None
        }
        (Err(e), None) => return Err(e).context(format!("opening {}", a.store.display())),
    };
    // Text dumps show only the records; JSON always carries the summary keys.
    let want_summary = a.json || a.records.is_none();
    let summary = match &store {
        Some(s) if want_summary => match label_store::summarize(s) {
            Ok(sum) => Some(sum),
            // Under --verify the report names the fault; the summary is what cannot be shown.
            Err(e) if report.is_some() => {
                tracing::debug!("summary skipped: {e}");
                None
            }
            Err(e) => return Err(e).context("reading the store"),
        },
        _ => None,
    };
    let dump = match (&store, a.records) {
        (Some(s), Some(range)) => Some(dump_records(s, range, a.epoch, a.temperature)?),
        _ => None,
    };
    let failed = report.as_ref().is_some_and(|r| !r.ok);
    if a.json {
        let mut obj = match &summary {
            Some(s) => serde_json::to_value(s)?,
            None => serde_json::json!({}),
        };
        if let Some(r) = &report {
            obj["verify"] = serde_json::to_value(r)?;
        }
        if let Some(d) = dump {
            obj["dump"] = serde_json::Value::Array(d);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&obj)?)?;
    } else {
        if let Some(s) = &summary {
            print_summary(&mut out, &a.store, s)?;
        }
        if let Some(d) = &dump {
            print_dump(&mut out, d)?;
        }
        if let Some(r) = &report {
            print_verify(&mut out, r)?;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The (epoch, sample) of records A..B: in (epoch, sample) order over the store, or samples A..B
/// of one epoch.
fn record_keys(
    store: &LabelStore,
    (a, b): (u64, u64),
    epoch: Option<u32>,
) -> Result<Vec<(u32, u32)>> {
    let samples = store.samples();
    let n = u64::from(samples.len());
    let total = store.records();
    Ok(match epoch {
        Some(e) => {
            if e >= store.epochs() {
                bail!("--epoch {e}: the store has epochs 0..{}", store.epochs());
            }
            if b > n {
                bail!("records {a}..{b}: epoch {e} has {n} samples");
            }
            (a..b).map(|s| (e, samples.start + s as u32)).collect()
        }
        None => {
            if b > total {
                bail!("records {a}..{b}: the store has {total} records");
            }
            (a..b)
                .map(|r| ((r / n) as u32, samples.start + (r % n) as u32))
                .collect()
        }
    })
}

/// `inspect --show`: the grid of replayed inputs.
fn show(a: &InspectArgs, range: (u64, u64)) -> Result<ExitCode> {
    let store =
        LabelStore::open(&a.store).with_context(|| format!("opening {}", a.store.display()))?;
    let keys = record_keys(&store, range, a.epoch)?;
    if keys.is_empty() {
        bail!("--show {}..{} selects no record", range.0, range.1);
    }
    let d = &a.data;
    let data = d.open(
        &d.split_or(&store.manifest.dataset.split),
        store.manifest.label_classes(),
        Some(&store),
    )?;
    let (w, h) = match &store.manifest.teacher_input {
        Some(t) => (t.width, t.height),
        None => data.dims(keys[0].1)?,
    };
    let grid = super::show::render_grid(&store, data.as_ref(), &keys, w, h)?;
    let png = a.out.as_ref().context("--show needs --out")?;
    grid.save(png)
        .with_context(|| format!("writing {}", png.display()))?;
    writeln!(
        std::io::stdout().lock(),
        "wrote {} ({} records, {}x{} px)",
        png.display(),
        keys.len(),
        grid.width(),
        grid.height()
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Records as JSON values: epoch, sample, classes, probabilities at τ, stored logits, aug.
fn dump_records(
    store: &LabelStore,
    (a, b): (u64, u64),
    epoch: Option<u32>,
    tau: f32,
) -> Result<Vec<serde_json::Value>> {
    let keys = record_keys(store, (a, b), epoch)?;
    let classes = store.manifest.classes as usize;
    keys.into_iter()
        .map(|(e, s)| {
            let rec = store.get(e, s)?;
            if !store.layout.has_labels() {
                // An embedding-only teacher's store: the record is its view.
                return Ok(serde_json::json!({"epoch": e, "sample": s, "aug": rec.aug}));
            }
            let r = rec.label.probabilities(classes, tau);
            Ok(serde_json::json!({
                "epoch": e,
                "sample": s,
                "classes": rec.label.indices,
                "probabilities": r.top,
                "tail_probability_each": r.tail_each,
                "tail_classes": r.tail_count,
                "logits": rec.label.logits,
                "tail_logits": rec.label.tail,
                "temperature": tau,
                "aug": rec.aug,
            }))
        })
        .collect()
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_summary(out: &mut impl Write, path: &std::path::Path, s: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "label store {}  (created {})",
        path.display(),
        s.created
    )?;
    writeln!(
        out,
        "  records      {} = {} epochs × {} samples ({})",
        s.records, s.epochs, s.samples, s.sample_range
    )?;
    if s.k == 0 {
        writeln!(
            out,
            "  labels       none: an embedding-only teacher (records hold their views; features \
             below), {} shard(s), {} chunks",
            s.shards, s.chunks
        )?;
        writeln!(
            out,
            "  on disk      {} ({} bytes) of views, {:.2} B/record",
            human_bytes(s.bytes_on_disk),
            s.bytes_on_disk,
            s.bytes_per_record
        )?;
    } else {
        writeln!(
            out,
            "  labels       {} classes, top-{}, codec {}, {} shard(s), {} chunks",
            s.classes, s.k, s.codec, s.shards, s.chunks
        )?;
        writeln!(
            out,
            "  on disk      {} ({} bytes), {:.2} B/record, {:.1}x smaller than dense f32 logits ({} B/record)",
            human_bytes(s.bytes_on_disk),
            s.bytes_on_disk,
            s.bytes_per_record,
            s.compression_vs_dense_f32,
            4 * s.classes
        )?;
    }
    let d = &s.dataset;
    let labels = if d.labelled {
        format!("labels xxh3 {}", d.labels_xxh3)
    } else {
        "no hard labels (a transfer set, read --unlabelled)".to_string()
    };
    writeln!(
        out,
        "  dataset      {} split {:?}, {} samples, {labels}, content xxh3 {}",
        d.format, d.split, d.samples, d.content_xxh3
    )?;
    if s.teachers.is_empty() {
        writeln!(out, "  teachers     (none recorded)")?;
    }
    for t in &s.teachers {
        let gives = if t.classes == 0 {
            "no logits (embedding-only)".to_string()
        } else {
            format!("{} classes", t.classes)
        };
        writeln!(
            out,
            "  teacher      {} sha256 {} input {:?}, {gives}",
            t.file, t.sha256, t.input_shape
        )?;
    }
    match &s.decode_probe {
        Some(p) => writeln!(
            out,
            "  decode probe {} on samples {:?}",
            p.decoder, p.samples
        )?,
        None => writeln!(out, "  decode probe (not recorded by the writer)")?,
    }
    writeln!(out, "  recipe       {}", s.recipe)?;
    writeln!(out, "  resampling   {}", s.resampling)?;
    if let Some(t) = &s.teacher_input {
        writeln!(out, "  input        {}", input_line(t))?;
    }
    if let Some(b) = &s.blocks {
        writeln!(
            out,
            "  blocks       {:?} blocks of ≤ {} images, ≤ {} MiB decoded (each image decoded once for all epochs)",
            b.order,
            b.images,
            b.bytes >> 20
        )?;
    }
    writeln!(out, "  seed         {}", s.seed)?;
    if s.k > 0 {
        print_label_quality(out, s)?;
    }
    for f in &s.features {
        print_features(out, f)?;
    }
    Ok(())
}

/// The soft labels' figures: mass and entropy, reconstruction, teacher accuracy, top-1 classes.
fn print_label_quality(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    let q = &s.quality;
    writeln!(
        out,
        "  quality      mean top-{} mass {:.4}, mean entropy {:.4} nats (τ = 1)",
        s.k, q.mean_top_k_mass, q.mean_entropy
    )?;
    match (q.reconstruction_kl_tau1, q.reconstruction_kl_tau4) {
        (Some(a), Some(b)) => writeln!(
            out,
            "               reconstruction KL(teacher ‖ stored): {a:.6} nats at τ = 1, {b:.6} at τ = 4"
        )?,
        _ => writeln!(
            out,
            "               reconstruction KL: not measured by the writer"
        )?,
    }
    match q.teacher_top1_accuracy {
        Some(acc) => writeln!(
            out,
            "               teacher top-1 accuracy {:.2}% on {} un-mixed records",
            100.0 * acc,
            q.teacher_accuracy_records
        )?,
        None => writeln!(
            out,
            "               teacher top-1 accuracy: no un-mixed labelled records"
        )?,
    }
    let mut order: Vec<usize> = (0..s.top1_histogram.len()).collect();
    order.sort_by_key(|&c| (std::cmp::Reverse(s.top1_histogram[c]), c));
    let seen = s.top1_histogram.iter().filter(|&&n| n > 0).count();
    let top: Vec<String> = order
        .iter()
        .take(10)
        .filter(|&&c| s.top1_histogram[c] > 0)
        .map(|&c| {
            format!(
                "{c}: {} ({:.1}%)",
                s.top1_histogram[c],
                100.0 * s.top1_histogram[c] as f64 / s.records as f64
            )
        })
        .collect();
    writeln!(
        out,
        "  top-1        {seen} of {} classes are some record's top-1; most often {}",
        s.classes,
        top.join(", ")
    )
}

/// One feature head: what is stored, its size and how faithfully it reconstructs the teacher's.
fn print_features(
    out: &mut impl Write,
    f: &label_store::summary::FeatureSummary,
) -> std::io::Result<()> {
    let dims = match &f.basis {
        None => format!("{} dims", f.dim),
        Some(b) => format!(
            "{} of {} dims (PCA basis {}, {})",
            f.stored_dim, f.dim, b.file, b.checksum
        ),
    };
    writeln!(
        out,
        "  features     {} of {}: {dims}, codec {}, {} ({:.1} B/record)",
        f.output,
        f.teacher,
        f.codec,
        human_bytes(f.bytes),
        f.bytes_per_record
    )?;
    let q = &f.quality;
    let p1 = match f.p1_cosine_at_least {
        Some(t) => format!("1st percentile ≥ {t}"),
        None => "over 1% of records below 0.9".into(),
    };
    let below: Vec<String> = formats::feature::COSINE_THRESHOLDS
        .iter()
        .zip(&q.cosine_below)
        .map(|(t, b)| format!("{:.2}% < {t}", 100.0 * b))
        .collect();
    writeln!(
        out,
        "               reconstruction cosine mean {:.6}, {p1} ({}); per-dimension RMS error {:.3e} ({:.4} of the features' RMS)",
        q.mean_cosine,
        below.join(", "),
        q.rms_error,
        q.relative_rms_error
    )
}

fn fmt_box(b: &PixelBox) -> String {
    format!("({},{}) {}x{}", b.x, b.y, b.w, b.h)
}

fn fmt_aug(a: &AugParams) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &a.crop {
        parts.push(format!("crop {}", fmt_box(c)));
    }
    if a.flip {
        parts.push("flip".into());
    }
    if let Some(m) = &a.mix {
        let how = match m.kind {
            MixKind::Mixup { lambda_q } => {
                format!("mixup λ={:.4}", f32::from(lambda_q) / 65535.0)
            }
            MixKind::Cutmix { region } => format!("cutmix region {}", fmt_box(&region)),
        };
        let pc = m
            .partner_crop
            .map(|c| format!(" crop {}", fmt_box(&c)))
            .unwrap_or_default();
        let pf = if m.partner_flip { " flip" } else { "" };
        parts.push(format!("{how} with sample {}{pc}{pf}", m.partner));
    }
    if let Some(c) = &a.cutout {
        parts.push(format!("cutout {}", fmt_box(c)));
    }
    if parts.is_empty() {
        "no augmentation".into()
    } else {
        parts.join(", ")
    }
}

fn print_dump(out: &mut impl Write, d: &[serde_json::Value]) -> std::io::Result<()> {
    for r in d {
        if r.get("probabilities").is_none() {
            // A store without soft labels: the record is its view.
            let aug: AugParams = serde_json::from_value(r["aug"].clone()).unwrap_or_default();
            writeln!(
                out,
                "epoch {} sample {}: {}",
                r["epoch"],
                r["sample"],
                fmt_aug(&aug)
            )?;
            continue;
        }
        let classes = r["classes"].as_array().cloned().unwrap_or_default();
        let probs = r["probabilities"].as_array().cloned().unwrap_or_default();
        let top: Vec<String> = classes
            .iter()
            .zip(&probs)
            .map(|(c, p)| format!("{c}:{:.4}", p.as_f64().unwrap_or(0.0)))
            .collect();
        let aug: AugParams = serde_json::from_value(r["aug"].clone()).unwrap_or_default();
        writeln!(
            out,
            "epoch {} sample {} (τ = {}): {} | tail {} × {:.3e} | {}",
            r["epoch"],
            r["sample"],
            r["temperature"].as_f64().unwrap_or(1.0),
            top.join(" "),
            r["tail_classes"],
            r["tail_probability_each"].as_f64().unwrap_or(0.0),
            fmt_aug(&aug)
        )?;
    }
    Ok(())
}

fn print_verify(out: &mut impl Write, r: &VerifyReport) -> std::io::Result<()> {
    if r.ok {
        writeln!(
            out,
            "verify: OK ({} chunks, {} records checked)",
            r.chunks_checked, r.records_checked
        )?;
    } else {
        writeln!(
            out,
            "verify: {} fault(s) ({} chunks, {} records checked):",
            r.errors.len(),
            r.chunks_checked,
            r.records_checked
        )?;
        for e in &r.errors {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(())
}
