//! The run directory on disk: `config.json`, per student `metrics.jsonl`,
//! `checkpoints/epoch-NNNN.ckpt` and `student.ckpt`; creating and resuming it, finding and
//! pruning checkpoints, reading and writing metrics.

use crate::checkpoint::{self, Checkpoint};
use crate::config::TrainConfig;
use crate::error::TrainError;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochMetrics {
    /// 0-based epoch index.
    pub epoch: u32,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    pub images_per_sec: f64,
    /// Share of the epoch's training time spent waiting for the loader.
    pub loader_wait_fraction: f64,
    /// Images the loader decoded this epoch (absent in runs of older builds: 0).
    #[serde(default)]
    pub images_decoded: u64,
    /// xxh3 of the epoch's batches as trained ([`StreamDigest`]: every input, hard label and
    /// teacher value, in order), so another replay of the store (`distill.Loader` from Python)
    /// can be checked bit for bit against it (with `--stream-digest`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stream_xxh3: Option<String>,
    /// xxh3 of the epoch's inputs alone, in order (with `stream_digest`): equal for two runs
    /// that saw the same pixels whatever their teacher values (an online teacher over a store
    /// against the store itself).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub inputs_xxh3: Option<String>,
    /// With an online teacher over a store: the largest difference between its distribution
    /// and the stored one over the epoch (at the loss's temperature), the store's check.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub teacher_gap: Option<f64>,
    /// The store epoch replayed, when training from a store.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub store_epoch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_kl: Option<f64>,
    /// What `test_kl` measured against: `full` or `top-k rebuild` ([`crate::eval::KlReference`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_kl_vs: Option<crate::eval::KlReference>,
    /// Mean cosine between the projected student features and the teacher's stored ones on
    /// the test split (a run with a feature term and a test store with that feature head).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test_feature_cosine: Option<f64>,
}

pub(crate) const CONFIG_FILE: &str = "config.json";
pub(crate) const METRICS_FILE: &str = "metrics.jsonl";
pub(crate) const FINAL_FILE: &str = "student.ckpt";
pub(crate) const CHECKPOINTS: &str = "checkpoints";

/// Creates the run directory (refusing a non-empty one unless resuming), or on resume checks
/// the config and returns the epoch to continue from: the last epoch every student has a valid
/// checkpoint of.
pub(crate) fn prepare_run_dir(
    cfg: &TrainConfig,
    run: &Path,
    resume: bool,
) -> Result<u32, TrainError> {
    let cfg_path = run.join(CONFIG_FILE);
    let write_config = || -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(cfg).expect("config serializes");
        Ok(label_store::writer::write_atomic(
            &cfg_path,
            text.as_bytes(),
        )?)
    };
    if !resume {
        if run.exists()
            && fs::read_dir(run)
                .map_err(TrainError::io(run))?
                .next()
                .is_some()
        {
            return Err(TrainError::config(format!(
                "{} already exists and is not empty: `resume` it, or choose another `run` \
                 directory",
                run.display()
            )));
        }
        fs::create_dir_all(run).map_err(TrainError::io(run))?;
        write_config()?;
        return Ok(0);
    }
    let text = match fs::read_to_string(&cfg_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Nothing to resume: start fresh, but never over files that are not a run.
            if fs::read_dir(run).is_ok_and(|mut d| d.next().is_some()) {
                return Err(TrainError::config(format!(
                    "{} is not empty and holds no {CONFIG_FILE}: not a run to resume",
                    run.display()
                )));
            }
            fs::create_dir_all(run).map_err(TrainError::io(run))?;
            write_config()?;
            return Ok(0);
        }
        Err(e) => return Err(TrainError::io(&cfg_path)(e)),
    };
    let old: TrainConfig =
        serde_json::from_str(&text).map_err(|e| TrainError::corrupt(&cfg_path, e.to_string()))?;
    if old.identity() != cfg.identity() {
        let (a, b) = (old.identity(), cfg.identity());
        let field = a
            .as_object()
            .zip(b.as_object())
            .and_then(|(a, b)| a.keys().find(|k| a.get(*k) != b.get(*k)).cloned())
            .unwrap_or_default();
        return Err(TrainError::Mismatch(format!(
            "{}: the run was made with another {field:?} than this command's; resume with the \
             same settings (only --epochs may change)",
            cfg_path.display()
        )));
    }
    write_config()?;
    let mut epoch = u32::MAX;
    for dir in cfg.student_dirs(run) {
        // A run continued past its end: the old final student must not pass for the new one
        // while it trains (eval and export fall back to the latest checkpoint).
        let fin = dir.join(FINAL_FILE);
        if let Ok(ck) = Checkpoint::read(&fin)
            && ck.meta.epochs_done != cfg.epochs
        {
            fs::remove_file(&fin).map_err(TrainError::io(&fin))?;
        }
    }
    for dir in cfg.student_dirs(run) {
        epoch = epoch.min(last_checkpoint(&dir)?.map_or(0, |(e, _)| e));
    }
    if epoch > cfg.epochs {
        return Err(TrainError::config(format!(
            "{} already has {epoch} epochs, more than `epochs` {}",
            run.display(),
            cfg.epochs
        )));
    }
    Ok(epoch)
}

/// The latest checkpoint in `dir/checkpoints` (epochs done, path). A corrupt latest checkpoint
/// is an error (naming it), not a silent step back: the user decides whether to delete it.
pub fn last_checkpoint(dir: &Path) -> Result<Option<(u32, PathBuf)>, TrainError> {
    let ck = dir.join(CHECKPOINTS);
    let entries = match fs::read_dir(&ck) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(&ck)(e)),
    };
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(TrainError::io(&ck))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(e) = name
            .strip_prefix("epoch-")
            .and_then(|s| s.strip_suffix(".ckpt"))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| e > *b) {
            best = Some((e, entry.path()));
        }
    }
    if let Some((_, path)) = &best {
        Checkpoint::read(path)?;
    }
    Ok(best)
}

/// Deletes all but the last `keep` epoch checkpoints in `dir/checkpoints` (every older one, so
/// a resume with a smaller `--keep-checkpoints` prunes what an earlier setting kept).
pub(crate) fn prune_checkpoints(dir: &Path, keep: u32) -> Result<(), TrainError> {
    let ck = dir.join(CHECKPOINTS);
    let mut epochs: Vec<(u32, PathBuf)> = fs::read_dir(&ck)
        .map_err(TrainError::io(&ck))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix("epoch-")?
                .strip_suffix(".ckpt")?
                .parse::<u32>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    epochs.sort_unstable_by_key(|(n, _)| std::cmp::Reverse(*n));
    for (_, path) in epochs.into_iter().skip(keep as usize) {
        fs::remove_file(&path).map_err(TrainError::io(&path))?;
    }
    Ok(())
}

/// The checkpoint a run directory's student is used from: `student.ckpt` when the run
/// finished, else the checkpoint of `epoch` (epochs done) or the latest one.
pub fn student_checkpoint(dir: &Path, epoch: Option<u32>) -> Result<Checkpoint, TrainError> {
    if let Some(e) = epoch {
        let path = dir.join(CHECKPOINTS).join(checkpoint::file_name(e));
        if !path.exists() {
            return Err(TrainError::config(format!(
                "{}: no checkpoint after epoch {e} ({} missing)",
                dir.display(),
                path.display()
            )));
        }
        return Checkpoint::read(&path);
    }
    let fin = dir.join(FINAL_FILE);
    if fin.exists() {
        return Checkpoint::read(&fin);
    }
    match last_checkpoint(dir)? {
        Some((_, path)) => Checkpoint::read(&path),
        None => {
            let subdirs: Vec<String> = fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().join(CHECKPOINTS).is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            Err(TrainError::config(if subdirs.is_empty() {
                format!(
                    "{}: no student checkpoint here (not a run directory?)",
                    dir.display()
                )
            } else {
                format!(
                    "{} holds several students; name one: {}",
                    dir.display(),
                    subdirs.join(", ")
                )
            }))
        }
    }
}

pub(crate) fn read_metrics(path: &Path, epochs: u32) -> Result<Vec<EpochMetrics>, TrainError> {
    let f = File::open(path).map_err(TrainError::io(path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(TrainError::io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let m: EpochMetrics = match serde_json::from_str(&line) {
            Ok(m) => m,
            // A torn last line from a crash mid-write is dropped; anything else is corruption.
            Err(_) if out.len() as u32 >= epochs => break,
            Err(e) => {
                return Err(TrainError::corrupt(path, format!("line {}: {e}", i + 1)));
            }
        };
        if m.epoch < epochs {
            out.push(m);
        }
    }
    if out.len() as u32 != epochs {
        return Err(TrainError::corrupt(
            path,
            format!(
                "has {} epochs of metrics, the checkpoint {epochs}",
                out.len()
            ),
        ));
    }
    Ok(out)
}

pub(crate) fn write_metrics(path: &Path, metrics: &[EpochMetrics]) -> Result<(), TrainError> {
    let mut text = String::new();
    for m in metrics {
        text.push_str(&serde_json::to_string(m).expect("metrics serialize"));
        text.push('\n');
    }
    Ok(label_store::writer::write_atomic(path, text.as_bytes())?)
}

pub(crate) fn append_metrics(path: &Path, m: &EpochMetrics) -> Result<(), TrainError> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(TrainError::io(path))?;
    let line = serde_json::to_string(m).expect("metrics serialize") + "\n";
    f.write_all(line.as_bytes())
        .and_then(|_| f.sync_data())
        .map_err(TrainError::io(path))
}

/// Reads a run's `metrics.jsonl` (for reports).
pub fn load_metrics(dir: &Path) -> Result<Vec<EpochMetrics>, TrainError> {
    let path = dir.join(METRICS_FILE);
    let text = fs::read_to_string(&path).map_err(TrainError::io(&path))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| TrainError::corrupt(&path, format!("line {}: {e}", i + 1)))
        })
        .collect()
}
