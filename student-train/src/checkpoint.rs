//! Checkpoint files: a student's parameters and optimizer state after an epoch, in one
//! checksummed container written atomically.
//!
//! Layout (little-endian): magic `DSTLCKPT`, version u32, meta length u32, model length u64,
//! optimizer length u64, xxh3-64 of everything after this 40-byte header, then the meta JSON,
//! the model's burnpack bytes and the optimizer's burnpack bytes, and, for a student trained
//! with a feature term, its projector's and the projector optimizer's bytes (their lengths in
//! the meta's `projector`; a checkpoint without one is laid out as before). The file is written with the
//! label store's `write_atomic` (temporary name, fsync, rename), so a crash or a full disk leaves
//! the previous checkpoint as it was and never a half-written file under a checkpoint's name.

use crate::error::TrainError;
use crate::models::{InputShape, ModelSpec, Student};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use std::fs;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 8] = b"DSTLCKPT";
const VERSION: u32 = 1;
const HEADER: usize = 40;

/// What a checkpoint says about itself.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// Epochs completed when it was written.
    pub epochs_done: u32,
    pub model: ModelSpec,
    pub input: InputShape,
    /// Per-channel normalization the student was trained with (kept inside exported graphs).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The filter its training views were resized with (`None`: the 2×2 kernel of format
    /// version 1 stores, or checkpoints older than this field); exported as metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpolation: Option<formats::Interpolation>,
    /// The centre-crop fraction it is evaluated with on image folders; exported as metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_pct: Option<f64>,
    /// The feature term's projector, when the student was trained with one (filled by
    /// [`save`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<ProjectorMeta>,
}

/// The projector a checkpoint holds: a linear map from the student's features to the teacher's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProjectorMeta {
    pub inputs: usize,
    pub outputs: usize,
    /// Bytes of its parameters and of its optimizer state (0 in a final student).
    pub bytes: u64,
    pub optim_bytes: u64,
}

/// A student's feature projector and its optimizer, as [`save`] takes them.
pub struct ProjectorState<'a> {
    pub projector: &'a Linear,
    pub optim: Option<&'a ModuleOptimizer>,
}

/// A checkpoint read back from disk.
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    model: Vec<u8>,
    optim: Vec<u8>,
    projector: Vec<u8>,
    projector_optim: Vec<u8>,
}

/// The file name of the checkpoint after `epochs_done` epochs.
pub fn file_name(epochs_done: u32) -> String {
    format!("epoch-{epochs_done:04}.ckpt")
}

/// Serializes `model` (and `optim` when given) after `meta.epochs_done` epochs into `path`.
pub fn save(
    path: &Path,
    meta: &CheckpointMeta,
    model: &Student,
    optim: Option<&ModuleOptimizer>,
) -> Result<(), TrainError> {
    save_with(path, meta, model, optim, None)
}

/// [`save`] with the feature term's projector (and its optimizer state) when there is one.
pub fn save_with(
    path: &Path,
    meta: &CheckpointMeta,
    model: &Student,
    optim: Option<&ModuleOptimizer>,
    projector: Option<ProjectorState<'_>>,
) -> Result<(), TrainError> {
    let what = |e: burn::store::RecordError| TrainError::corrupt(path, e.to_string());
    // burn folds BatchNorm running statistics in lazily (per thread) and a module's record
    // reads them unsynchronized; `valid()` synchronizes them first, so the checkpoint holds
    // what inference uses.
    let model_bytes = model.valid().into_record().into_bytes().map_err(what)?;
    let optim_bytes = match optim {
        Some(o) => Some(o.into_bytes().map_err(what)?),
        None => None,
    };
    let mut meta = meta.clone();
    let mut tail = Vec::new();
    if let Some(p) = projector {
        let bytes = p
            .projector
            .clone()
            .into_record()
            .into_bytes()
            .map_err(what)?;
        let optim = match p.optim {
            Some(o) => o.into_bytes().map_err(what)?.to_vec(),
            None => Vec::new(),
        };
        let [inputs, outputs] = p.projector.weight.dims();
        meta.projector = Some(ProjectorMeta {
            inputs,
            outputs,
            bytes: bytes.len() as u64,
            optim_bytes: optim.len() as u64,
        });
        tail.extend_from_slice(&bytes);
        tail.extend_from_slice(&optim);
    }
    let meta_json = serde_json::to_vec(&meta).expect("checkpoint meta serializes");
    let mut optim_all = optim_bytes.map(|b| b.to_vec()).unwrap_or_default();
    let optim_len = optim_all.len();
    optim_all.extend_from_slice(&tail);
    let bytes = encode(&meta_json, &model_bytes, &optim_all, optim_len);
    label_store::writer::write_atomic(path, &bytes)?;
    Ok(())
}

/// The file of `meta`, `model` and `rest` (the optimizer's `optim_len` bytes, then the
/// projector's, whose lengths the meta records).
fn encode(meta: &[u8], model: &[u8], rest: &[u8], optim_len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(meta.len() + model.len() + rest.len());
    body.extend_from_slice(meta);
    body.extend_from_slice(model);
    body.extend_from_slice(rest);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&(model.len() as u64).to_le_bytes());
    out.extend_from_slice(&(optim_len as u64).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

impl Checkpoint {
    /// Reads and checks the checkpoint at `path` (magic, version, lengths, checksum, meta).
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let bytes = fs::read(path).map_err(TrainError::io(path))?;
        let bad = |what: String| TrainError::corrupt(path, what);
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err(bad(
                "not a distill checkpoint (bad magic or too short)".into()
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "checkpoint version {version}, this build reads {VERSION}"
            )));
        }
        let (m, model, optim) = (u32_at(12) as u64, u64_at(16), u64_at(24));
        let body = &bytes[HEADER..];
        let listed = m.checked_add(model).and_then(|s| s.checked_add(optim));
        if listed.is_none_or(|l| l > body.len() as u64) {
            return Err(bad(format!(
                "truncated: header promises {} body bytes, file has {}",
                listed.map_or("too many".into(), |w| w.to_string()),
                body.len()
            )));
        }
        if xxh3_64(body) != u64_at(32) {
            return Err(bad("checksum mismatch: the checkpoint is corrupt".into()));
        }
        let meta: CheckpointMeta =
            serde_json::from_slice(&body[..m as usize]).map_err(|e| bad(format!("meta: {e}")))?;
        let (p, po) = meta.projector.map_or((0, 0), |p| (p.bytes, p.optim_bytes));
        let want = [model, optim, p, po]
            .into_iter()
            .try_fold(m, |a, b| a.checked_add(b));
        if want != Some(body.len() as u64) {
            return Err(bad(format!(
                "truncated or padded: header promises {} body bytes, file has {}",
                want.map_or("too many".into(), |w| w.to_string()),
                body.len()
            )));
        }
        let at = |a: u64, len: u64| body[a as usize..(a + len) as usize].to_vec();
        Ok(Checkpoint {
            path: path.to_path_buf(),
            model: at(m, model),
            optim: at(m + model, optim),
            projector: at(m + model + optim, p),
            projector_optim: at(m + model + optim + p, po),
            meta,
        })
    }

    /// Whether it holds optimizer state (training checkpoints do; final students do not).
    pub fn has_optimizer(&self) -> bool {
        !self.optim.is_empty()
    }

    /// Builds the student it holds on `device`.
    pub fn student(&self, device: &Device) -> Result<Student, TrainError> {
        let model = self
            .meta
            .model
            .init(&self.meta.input, device)
            .map_err(|e| TrainError::corrupt(&self.path, e))?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.model.clone()))
            .map_err(|e| TrainError::corrupt(&self.path, format!("model: {e}")))?;
        model
            .try_load_record(record)
            .map_err(|e| TrainError::corrupt(&self.path, format!("model: {e}")))
    }

    /// The feature term's projector it holds, on `device` (`None` when the student was trained
    /// without one).
    pub fn projector(&self, device: &Device) -> Result<Option<Linear>, TrainError> {
        let Some(p) = self.meta.projector else {
            return Ok(None);
        };
        let fresh = LinearConfig::new(p.inputs, p.outputs).init(device);
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.projector.clone()))
            .map_err(|e| TrainError::corrupt(&self.path, format!("projector: {e}")))?;
        fresh
            .try_load_record(record)
            .map(Some)
            .map_err(|e| TrainError::corrupt(&self.path, format!("projector: {e}")))
    }

    /// Restores the projector optimizer state it holds into `optim`.
    pub fn projector_optimizer(
        &self,
        optim: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, TrainError> {
        if self.projector_optim.is_empty() {
            return Err(TrainError::corrupt(
                &self.path,
                "holds no projector optimizer state",
            ));
        }
        optim
            .from_bytes(Bytes::from_bytes_vec(self.projector_optim.clone()))
            .map_err(|e| TrainError::corrupt(&self.path, format!("projector optimizer: {e}")))
    }

    /// Restores the optimizer state it holds into `optim`.
    pub fn optimizer(&self, optim: ModuleOptimizer) -> Result<ModuleOptimizer, TrainError> {
        if self.optim.is_empty() {
            return Err(TrainError::corrupt(
                &self.path,
                "holds no optimizer state (a final student, not a training checkpoint)",
            ));
        }
        optim
            .from_bytes(Bytes::from_bytes_vec(self.optim.clone()))
            .map_err(|e| TrainError::corrupt(&self.path, format!("optimizer: {e}")))
    }
}
