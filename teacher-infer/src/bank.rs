//! The teacher bank: the sessions of one labelling run, checked against each other and the
//! data, run on a batch as one teacher (a single model, or an ensemble whose outputs are
//! combined), every member's output checked finite before it is combined.

use crate::error::InferError;
use crate::pipeline::{Ensemble, LabelConfig};
use crate::session::TeacherSession;
use datasets::Dataset;
use std::path::PathBuf;

/// The teachers of a run, opened on the run's device.
pub struct TeacherBank {
    sessions: Vec<TeacherSession>,
    /// The sessions that have the feature output asked for, in order: one feature head each.
    heads: Vec<usize>,
    ensemble: Ensemble,
    classes: u32,
    /// One member's output (ensembles).
    each: Vec<f32>,
    /// The combined output of the batch being labelled.
    out: Vec<f32>,
}

impl TeacherBank {
    /// Opens every teacher of `cfg` and checks they agree on the class count, and that it is
    /// the dataset's (unless the data is read without hard labels: a transfer set for a
    /// teacher of any classes); errors name the file that differs.
    pub fn open(cfg: &LabelConfig) -> Result<Self, InferError> {
        let env = &crate::runtime::environment(cfg.ort_lib.as_deref())?.1;
        let sessions = cfg
            .teachers
            .iter()
            .map(|p| {
                TeacherSession::open_outputs(
                    env,
                    p,
                    cfg.device,
                    cfg.session_threads,
                    cfg.cuda,
                    &cfg.outputs,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let heads: Vec<usize> = (0..sessions.len())
            .filter(|&i| sessions[i].feature.is_some())
            .collect();
        if let Some(name) = &cfg.outputs.feature
            && heads.is_empty()
        {
            return Err(model_err(
                &sessions[0],
                format!(
                    "has no output {name:?} (--feature){}; its outputs: {}",
                    if sessions.len() > 1 {
                        ", nor has any other teacher"
                    } else {
                        ""
                    },
                    sessions[0].output_list.join(", ")
                ),
            ));
        }
        let classes = sessions[0].classes;
        let gives = |c: u32| {
            if c == 0 {
                "no logits (an embedding-only teacher)".to_string()
            } else {
                format!("{c} classes")
            }
        };
        for s in &sessions {
            if s.classes != classes && (s.classes == 0 || classes == 0) {
                return Err(model_err(
                    s,
                    format!(
                        "gives {}, {} gives {}: an ensemble's teachers all give logits or none",
                        gives(s.classes),
                        sessions[0].file.display(),
                        gives(classes)
                    ),
                ));
            }
            if s.classes != classes {
                return Err(model_err(
                    s,
                    format!(
                        "has {} classes, {} has {classes}",
                        s.classes,
                        sessions[0].file.display()
                    ),
                ));
            }
        }
        let data = &cfg.data;
        // An embedding-only teacher has no classes to check against the data's.
        if data.labelled() && classes > 0 && data.classes() != classes {
            return Err(model_err(
                &sessions[0],
                format!(
                    "has {classes} classes, the dataset {} ({} labels; data read `unlabelled` \
                     is a transfer set for a teacher of any classes)",
                    data.classes(),
                    data.fingerprint().format
                ),
            ));
        }
        Ok(TeacherBank {
            sessions,
            heads,
            ensemble: cfg.ensemble,
            classes,
            each: Vec::new(),
            out: Vec::new(),
        })
    }

    /// The class count every teacher has; 0 for embedding-only teachers.
    pub fn classes(&self) -> u32 {
        self.classes
    }

    /// The classes kept per record when `k` are asked for: `k`, or 0 (no soft labels) for
    /// embedding-only teachers, whatever `--topk` says.
    pub fn kept(&self, k: u32) -> u32 {
        if self.classes == 0 { 0 } else { k }
    }

    /// The indices of the teachers that have the feature output: one feature head each.
    pub fn feature_heads(&self) -> &[usize] {
        &self.heads
    }

    /// The teachers' sessions, in the order given.
    pub fn sessions(&self) -> &[TeacherSession] {
        &self.sessions
    }

    /// The input (width, height): `size` when given, else the first model's fixed size, else
    /// the images' own (uniform) size; every teacher must take it with `data`'s channels.
    pub fn input_size(
        &self,
        size: Option<(u32, u32)>,
        data: &dyn Dataset,
    ) -> Result<(u32, u32), InferError> {
        let (w, h) = match size {
            Some(s) => s,
            None => {
                let shape = &self.sessions[0].input_shape;
                if shape[2] > 0 && shape[3] > 0 {
                    (shape[3] as u32, shape[2] as u32)
                } else {
                    data.uniform_dims().map_err(|e| InferError::Model {
                        file: PathBuf::from("dataset"),
                        what: e.to_string(),
                    })?
                }
            }
        };
        for s in &self.sessions {
            s.check_input(u32::from(data.channels()), h, w)?;
        }
        Ok((w, h))
    }

    /// The teachers' (combined) logits for a batch of `n` inputs of shape `chw`, `n × classes`
    /// long; `samples` and `epoch` name the records when an output is not finite.
    pub fn run(
        &mut self,
        pixels: &[f32],
        chw: [usize; 3],
        samples: &[u32],
        epoch: u32,
    ) -> Result<Vec<f32>, InferError> {
        Ok(self.run_all(pixels, chw, samples, epoch, false)?.0)
    }

    /// [`TeacherBank::run`] and, for each feature head, its teacher's `n × D` feature values.
    pub fn run_with_features(
        &mut self,
        pixels: &[f32],
        chw: [usize; 3],
        samples: &[u32],
        epoch: u32,
    ) -> Result<(Vec<f32>, Vec<Vec<f32>>), InferError> {
        self.run_all(pixels, chw, samples, epoch, true)
    }

    fn run_all(
        &mut self,
        pixels: &[f32],
        chw: [usize; 3],
        samples: &[u32],
        epoch: u32,
        with_features: bool,
    ) -> Result<(Vec<f32>, Vec<Vec<f32>>), InferError> {
        let n = samples.len();
        let mut features = Vec::new();
        let cl = self.classes as usize;
        // Every teacher's output is checked before it is combined: an ensemble must not hide a
        // NaN from one of its members.
        let finite = |s: &TeacherSession, logits: &[f32]| -> Result<(), InferError> {
            match logits.iter().position(|v| !v.is_finite()) {
                None => Ok(()),
                Some(at) => Err(model_err(
                    s,
                    format!(
                        "logit {} of class {} for sample {} (epoch {epoch}): teacher outputs must be finite",
                        logits[at],
                        at % cl,
                        samples[at / cl],
                    ),
                )),
            }
        };
        // Embedding-only teachers have no logits to combine, only features to keep.
        let single = self.sessions.len() == 1 || cl == 0;
        if !single {
            self.out.clear();
            self.out.resize(n * cl, 0.0);
        }
        for s in self.sessions.iter_mut() {
            let mut f = (with_features && s.feature.is_some()).then(Vec::new);
            let logits = if single {
                &mut self.out
            } else {
                &mut self.each
            };
            s.run_with_features(pixels, n, chw, logits, f.as_mut())?;
            finite(s, logits)?;
            if let Some(f) = f {
                finite_features(s, &f, samples, epoch)?;
                features.push(f);
            }
            if !single {
                combine(&mut self.out, &self.each, cl, self.ensemble);
            }
        }
        if !single {
            finish_ensemble(&mut self.out, self.sessions.len(), self.ensemble);
        }
        Ok((std::mem::take(&mut self.out), features))
    }
}

/// Checks a teacher's feature values are finite, naming the record and dimension when not.
fn finite_features(
    s: &TeacherSession,
    f: &[f32],
    samples: &[u32],
    epoch: u32,
) -> Result<(), InferError> {
    let dim = s.feature.as_ref().map_or(1, |o| o.dim as usize);
    match f.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(at) => Err(model_err(
            s,
            format!(
                "feature value {} at dimension {} for sample {} (epoch {epoch}): teacher outputs must be finite",
                f[at],
                at % dim,
                samples[at / dim],
            ),
        )),
    }
}

/// Adds one teacher's output to the running ensemble sum.
fn combine(sum: &mut [f32], logits: &[f32], classes: usize, how: Ensemble) {
    match how {
        Ensemble::Logits => {
            for (s, &l) in sum.iter_mut().zip(logits) {
                *s += l;
            }
        }
        Ensemble::Probs => {
            for (srow, lrow) in sum
                .chunks_exact_mut(classes)
                .zip(logits.chunks_exact(classes))
            {
                let m = lrow.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let z: f32 = lrow.iter().map(|&l| (l - m).exp()).sum();
                for (s, &l) in srow.iter_mut().zip(lrow) {
                    *s += (l - m).exp() / z;
                }
            }
        }
    }
}

/// Turns the ensemble sum into the stored logits (mean logits, or log of mean probabilities).
fn finish_ensemble(sum: &mut [f32], teachers: usize, how: Ensemble) {
    let inv = 1.0 / teachers as f32;
    for s in sum.iter_mut() {
        *s *= inv;
        if how == Ensemble::Probs {
            // Probabilities that underflowed to 0 get the smallest positive logit gap f32 allows.
            *s = s.max(f32::MIN_POSITIVE).ln();
        }
    }
}

fn model_err(s: &TeacherSession, what: String) -> InferError {
    InferError::Model {
        file: s.file.clone(),
        what,
    }
}
