//! Online distillation's teacher: the teachers of a [`TeacherBank`] run on each batch a student's
//! stream makes (`distill train --teacher`), their output kept as a store would keep it.
//!
//! The stream hands over its u8 pixels; they are normalized here with the teacher's own scale,
//! mean and std through the same function labelling uses, so a view gets the teacher input it
//! would get from `distill label`, bit for bit, and the label passes through the store's top-k
//! and value codec (`--topk`, `--codec`): an online student and an offline one differ only in
//! which views they see, not in how labels are made.

use crate::bank::TeacherBank;
use crate::error::InferError;
use crate::pipeline::{LabelConfig, check_normalization};
use formats::{Record, RecordLayout, SoftLabel, TeacherInfo};
use replay::ReplayError;
use replay::batch::Inputs;
use replay::online::OnlineTeacher;
use std::sync::Mutex;

/// Teachers run on every batch of a training stream.
pub struct OnlineLabeller {
    /// The sessions and their buffers; one batch at a time (ONNX Runtime runs each batch on
    /// its own threads).
    bank: Mutex<TeacherBank>,
    teachers: Vec<TeacherInfo>,
    layout: RecordLayout,
    /// Input channels, height, width.
    chw: [usize; 3],
    scale: f32,
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl OnlineLabeller {
    /// Opens `cfg`'s teachers (as `distill label` would: class checks against `cfg.data`,
    /// ensemble, device) for inputs of `size` (the student's: the views' boxes are in its
    /// pixels), keeping `cfg.k` classes through `cfg.codec`.
    pub fn open(cfg: &LabelConfig, size: (u32, u32)) -> Result<Self, InferError> {
        let bank = TeacherBank::open(cfg)?;
        let (w, h) = bank.input_size(Some(size), cfg.data.as_ref())?;
        if bank.classes() == 0 {
            return Err(InferError::Invalid {
                field: "teachers",
                what: "an online teacher gives soft labels; an embedding-only teacher has no \
                       logits output (label its features offline, with --feature)"
                    .into(),
            });
        }
        let layout = RecordLayout::new(bank.classes(), cfg.k, cfg.codec).map_err(|e| {
            InferError::Invalid {
                field: "k",
                what: e.to_string(),
            }
        })?;
        check_normalization(cfg)?;
        let c = usize::from(cfg.data.channels());
        Ok(OnlineLabeller {
            teachers: bank.sessions().iter().map(|s| s.info()).collect(),
            bank: Mutex::new(bank),
            layout,
            chw: [c, h as usize, w as usize],
            scale: cfg.scale,
            mean: cfg.mean.clone(),
            std: cfg.std.clone(),
        })
    }

    /// What the run records of its teachers (file, SHA-256, input shape, classes).
    pub fn teachers(&self) -> &[TeacherInfo] {
        &self.teachers
    }
}

impl OnlineTeacher for OnlineLabeller {
    fn classes(&self) -> u32 {
        self.layout.classes
    }

    fn label(
        &self,
        inputs: &Inputs,
        samples: &[u32],
        epoch: u32,
    ) -> Result<Vec<SoftLabel>, ReplayError> {
        let Inputs::U8(_) = inputs else {
            return Err(ReplayError::Teacher(
                "it takes u8 pixels, the batch holds a student's normalized inputs".into(),
            ));
        };
        let x = inputs.to_f32_scaled(self.chw[0], self.scale, &self.mean, &self.std);
        let logits = self
            .bank
            .lock()
            .map_err(|_| ReplayError::Teacher("an earlier batch's run panicked".into()))?
            .run(&x, self.chw, samples, epoch)
            .map_err(|e| ReplayError::Teacher(e.to_string()))?;
        let classes = self.layout.classes as usize;
        let mut row = vec![0u8; self.layout.row_bytes()];
        let k = self.layout.k as usize;
        let mut rec = Record::empty(k);
        let mut out = Vec::with_capacity(samples.len());
        for (j, l) in logits.chunks_exact(classes).enumerate() {
            let bad = |e: formats::FormatError| {
                ReplayError::Teacher(format!(
                    "sample {} (epoch {epoch}): {e}",
                    samples.get(j).copied().unwrap_or_default()
                ))
            };
            // Through the store's codec: what an offline store of these settings would hold.
            rec.label = SoftLabel::from_logits(l, k).map_err(bad)?;
            self.layout.encode(&rec, &mut row).map_err(bad)?;
            self.layout.decode_into(&row, &mut rec).map_err(bad)?;
            out.push(rec.label.clone());
        }
        Ok(out)
    }
}
