//! The training loader: batches of (augmented input, mixed hard labels, teacher distribution)
//! built on worker threads and handed to the training thread in order through bounded crossbeam
//! channels (the shared [`formats::loader::Loader`]).
//!
//! With a label store, student epoch `e` replays store epoch `e mod E`: the stored augmentation
//! parameters go through the same [`formats::apply::apply`] the teacher's input went through, so
//! the student sees exactly the pixels the teacher labelled. Without a store (hard-label
//! training, e.g. of a first teacher), the parameters are sampled live from a recipe.

use crate::error::TrainError;
use formats::apply::apply;
use formats::augment::{MixedLabel, Sampler, record_rng};
use formats::dataset::{Dataset, Image};
use formats::loader::Loader;
use formats::{AugParams, SampleRange};
use label_store::{DecodedEpoch, LabelStore};
use rand::seq::SliceRandom;
use std::sync::Arc;

/// Where a stream's augmentation parameters and teacher labels come from.
pub enum Labels {
    /// A label store: stored parameters and soft labels.
    Store(Arc<LabelStore>),
    /// Hard labels only, parameters sampled live (recipe `none` for plain images).
    Live(Arc<Sampler>),
}

/// How batches are made.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub batch: usize,
    /// Loader worker threads.
    pub threads: usize,
    /// Finished batches each worker may hold ahead of the training thread.
    pub capacity: usize,
    /// Seed of the per-epoch sample order.
    pub seed: u64,
    /// Input = (pixel/255 − mean[c]) / std[c].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Input (width, height).
    pub size: (u32, u32),
    /// Shuffle the sample order each epoch (training) or keep it (evaluation).
    pub shuffle: bool,
}

/// One batch, row-major and ready to become tensors.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Number of samples.
    pub n: usize,
    /// `n × c × h × w` normalized inputs.
    pub inputs: Vec<f32>,
    /// `n × classes` mixed hard labels.
    pub hard: Vec<f32>,
    /// `n × classes` teacher distribution at the requested τ, when one was requested.
    pub teacher: Option<Vec<f32>>,
    /// The dataset index of each sample.
    pub samples: Vec<u32>,
    /// The ground-truth label of each sample's primary image (for accuracy).
    pub labels: Vec<u32>,
}

/// Batches of a dataset, for many epochs.
pub struct Stream {
    data: Arc<dyn Dataset>,
    labels: Labels,
    cfg: StreamConfig,
    range: SampleRange,
    classes: usize,
}

impl Stream {
    /// A stream over `data` with `labels`. With a store, the store must have been labelled from
    /// this very data (fingerprint) at this input size.
    pub fn new(
        data: Arc<dyn Dataset>,
        labels: Labels,
        cfg: StreamConfig,
    ) -> Result<Self, TrainError> {
        let c = usize::from(data.channels());
        for (name, v) in [("--mean", &cfg.mean), ("--std", &cfg.std)] {
            if v.len() != c {
                return Err(TrainError::config(format!(
                    "{name} has {} values for {c}-channel images",
                    v.len()
                )));
            }
        }
        if cfg.std.iter().any(|s| !(s.is_finite() && *s != 0.0)) {
            return Err(TrainError::config(
                "--std values must be finite and non-zero",
            ));
        }
        if cfg.batch == 0 {
            return Err(TrainError::config("--batch must be ≥ 1"));
        }
        let range = match &labels {
            Labels::Store(store) => {
                check_store(store, data.as_ref(), cfg.size)?;
                store.samples()
            }
            Labels::Live(_) => SampleRange {
                start: 0,
                end: data.len(),
            },
        };
        let classes = data.classes() as usize;
        Ok(Stream {
            data,
            labels,
            cfg,
            range,
            classes,
        })
    }

    /// Samples per epoch.
    pub fn samples(&self) -> usize {
        self.range.len() as usize
    }

    /// Batches per epoch (the last one may be short).
    pub fn batches(&self) -> usize {
        self.samples().div_ceil(self.cfg.batch)
    }

    /// Input (width, height).
    pub fn size(&self) -> (u32, u32) {
        self.cfg.size
    }

    /// Classes of the data.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The store epoch that student epoch `epoch` replays (`epoch mod E`).
    pub fn store_epoch(&self, epoch: u32) -> Option<u32> {
        match &self.labels {
            Labels::Store(s) => Some(epoch % s.epochs()),
            Labels::Live(_) => None,
        }
    }

    /// The sample order of `epoch`: a permutation of the samples drawn from (seed, epoch), or
    /// sample order when not shuffling.
    pub fn order(&self, epoch: u32) -> Vec<u32> {
        let mut order: Vec<u32> = (self.range.start..self.range.end).collect();
        if self.cfg.shuffle {
            // A stream no augmentation record uses (index u32::MAX is never a sample).
            order.shuffle(&mut record_rng(self.cfg.seed, epoch, u32::MAX));
        }
        order
    }

    /// The batches of student epoch `epoch`, computed ahead on the worker threads. `decoded` is
    /// the store epoch [`Stream::store_epoch`] names (from a prefetcher); `tau` asks for the
    /// teacher distribution at that temperature.
    pub fn epoch(
        self: &Arc<Self>,
        epoch: u32,
        decoded: Option<Arc<DecodedEpoch>>,
        tau: Option<f32>,
    ) -> Result<Loader<Result<Batch, TrainError>>, TrainError> {
        if let (Some(want), Some(d)) = (self.store_epoch(epoch), &decoded)
            && d.epoch != want
        {
            return Err(TrainError::config(format!(
                "student epoch {epoch} needs store epoch {want}, got {}",
                d.epoch
            )));
        }
        if matches!(self.labels, Labels::Store(_)) && decoded.is_none() {
            return Err(TrainError::config(
                "a store-fed epoch needs its decoded records",
            ));
        }
        if tau.is_some() && matches!(self.labels, Labels::Live(_)) {
            return Err(TrainError::config(
                "this loss needs teacher labels: pass --labels STORE",
            ));
        }
        let order = Arc::new(self.order(epoch));
        let me = Arc::clone(self);
        let n = self.batches();
        Ok(Loader::new(
            n,
            self.cfg.threads,
            self.cfg.capacity,
            move |b| {
                let at = b * me.cfg.batch;
                let samples = &order[at..(at + me.cfg.batch).min(order.len())];
                me.make_batch(epoch, samples, decoded.as_deref(), tau)
            },
        ))
    }

    /// Builds the batch of `samples` (exposed for tests and evaluation).
    pub fn make_batch(
        &self,
        epoch: u32,
        samples: &[u32],
        decoded: Option<&DecodedEpoch>,
        tau: Option<f32>,
    ) -> Result<Batch, TrainError> {
        let (w, h) = self.cfg.size;
        let c = usize::from(self.data.channels());
        let per = c * (w * h) as usize;
        let n = samples.len();
        let cl = self.classes;
        let mut batch = Batch {
            n,
            inputs: vec![0.0; n * per],
            hard: vec![0.0; n * cl],
            teacher: tau.map(|_| vec![0.0; n * cl]),
            samples: samples.to_vec(),
            labels: Vec::with_capacity(n),
        };
        let mut rec = formats::Record::empty(0);
        for (i, &s) in samples.iter().enumerate() {
            let params = match (&self.labels, decoded) {
                (Labels::Store(_), Some(d)) => {
                    d.get_into(s, &mut rec)?;
                    if let (Some(t), Some(tau)) = (batch.teacher.as_mut(), tau) {
                        rec.label.dense_into(tau, &mut t[i * cl..(i + 1) * cl]);
                    }
                    rec.aug
                }
                (Labels::Live(sampler), _) => sampler
                    .sample(epoch, s, &|j| self.data.dims(j))
                    .map_err(|e| TrainError::sample(s, e.to_string()))?,
                (Labels::Store(_), None) => unreachable!("checked in Stream::epoch"),
            };
            let label = self.data.label(s);
            batch.labels.push(label);
            let out = &mut batch.inputs[i * per..(i + 1) * per];
            let partner_label = self.render(s, &params, out)?;
            MixedLabel::new(&params, label, partner_label.unwrap_or(label), w, h)
                .dense_into(&mut batch.hard[i * cl..(i + 1) * cl]);
            normalize(out, c, &self.cfg.mean, &self.cfg.std);
        }
        Ok(batch)
    }

    /// Replays `params` on sample `s` (and its partner) into `out` as [0, 1] pixels; returns the
    /// partner's label when mixed.
    fn render(
        &self,
        s: u32,
        params: &AugParams,
        out: &mut [f32],
    ) -> Result<Option<u32>, TrainError> {
        let (w, h) = self.cfg.size;
        let image = |j: u32| -> Result<Image, TrainError> {
            self.data
                .image(j)
                .map_err(|e| TrainError::sample(j, e.to_string()))
        };
        let primary = image(s)?;
        let (partner, partner_label) = match &params.mix {
            Some(m) => {
                if m.partner >= self.data.len() {
                    return Err(TrainError::sample(
                        s,
                        format!(
                            "its mix partner {} is beyond the {} samples of the data",
                            m.partner,
                            self.data.len()
                        ),
                    ));
                }
                (Some(image(m.partner)?), Some(self.data.label(m.partner)))
            }
            None => (None, None),
        };
        apply(params, &primary, partner.as_ref(), w, h, out)
            .map_err(|e| TrainError::sample(s, e.to_string()))?;
        Ok(partner_label)
    }
}

/// `(v − mean[c]) / std[c]` over each channel plane of a CHW buffer of [0, 1] pixels.
pub fn normalize(chw: &mut [f32], channels: usize, mean: &[f32], std: &[f32]) {
    let plane = chw.len() / channels.max(1);
    for (ch, p) in chw.chunks_mut(plane).enumerate() {
        let (m, inv) = (mean[ch], 1.0 / std[ch]);
        for v in p {
            *v = (*v - m) * inv;
        }
    }
}

/// Refuses a store that was not labelled from `data` at input size `size`, naming the field.
pub fn check_store(
    store: &LabelStore,
    data: &dyn Dataset,
    size: (u32, u32),
) -> Result<(), TrainError> {
    let m = &store.manifest;
    let dir = store.dir.display();
    if let Some(diff) = m.dataset.mismatch(data.fingerprint()) {
        return Err(TrainError::Mismatch(format!(
            "{dir} was not labelled from this data: {diff}"
        )));
    }
    if let Some(probe) = &m.decode_probe
        && let Some((sample, then, now)) = formats::dataset::probe::probe_mismatch(data, probe)?
    {
        return Err(TrainError::Mismatch(format!(
            "{dir}: sample {sample} decodes to other pixels than when the store was labelled \
             (decode_probe: {then} with {}, now {now} with {}): replayed inputs would differ from \
             what the teacher saw; train with the build that labelled the store, or label again",
            probe.decoder,
            data.decoder()
        )));
    }
    if m.classes != data.classes() {
        return Err(TrainError::Mismatch(format!(
            "{dir}: field classes is {} but the data has {} classes",
            m.classes,
            data.classes()
        )));
    }
    if m.samples.end > data.len() {
        return Err(TrainError::Mismatch(format!(
            "{dir}: field samples is {} but the data has {} samples",
            m.samples,
            data.len()
        )));
    }
    if let Some((w, h)) = store_input_size(store)
        && (w, h) != size
    {
        return Err(TrainError::Mismatch(format!(
            "{dir}: field teacher_input is {w}x{h} but the student input is {}x{} (mix boxes \
             and crops are stored for the teacher's size)",
            size.0, size.1
        )));
    }
    Ok(())
}

/// The input size the store's records were made for (`teacher_input` in the manifest).
pub fn store_input_size(store: &LabelStore) -> Option<(u32, u32)> {
    let t = store.manifest.extra.get("teacher_input")?;
    let w = t.get("width")?.as_u64()?;
    let h = t.get("height")?.as_u64()?;
    Some((u32::try_from(w).ok()?, u32::try_from(h).ok()?))
}
