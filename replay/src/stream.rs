//! The replaying loader both trainers use (`distill train` and the Python package): batches of (augmented input, mixed hard labels, teacher distribution)
//! built on worker threads and handed to the training thread in order through bounded crossbeam
//! channels (the shared [`crate::loader::Loader`]).
//!
//! With a label store, student epoch `e` replays store epoch `e mod E`: the stored augmentation
//! parameters go through the same [`crate::apply::apply`] the teacher's input went through, so
//! the student sees exactly the pixels the teacher labelled. Without a store (hard-label
//! training, e.g. of a first teacher), the parameters are sampled live from a recipe.

use crate::batch::{Inputs, ViewSpec};
use crate::block::{BlockPlan, DecodeCache};
use crate::error::ReplayError;
use crate::loader::Loader;
use crate::online::OnlineTeacher;
use crate::sampler::{Sampler, record_rng};
use datasets::Dataset;
use formats::BlockOrder;
use formats::SampleRange;
use formats::view::ViewRule;
use label_store::{DecodedEpoch, FeatureStore, LabelStore};
use rand::seq::SliceRandom;
use std::sync::Arc;

/// Where a stream's records come from: the realized augmentation of each (epoch, sample) and,
/// when there is one, the teacher's label. A store replays what a teacher labelled offline; a
/// sampler draws fresh views every epoch and the batches carry hard labels only, for a
/// hard-label run, evaluation, or a teacher that labels each batch as it comes (online
/// distillation: [`Stream::with_teacher`]).
pub enum Source {
    /// A label store: stored parameters and soft labels.
    Store(Arc<LabelStore>),
    /// Parameters sampled live from a recipe (`none` for plain images, `center` to evaluate).
    Sampler(Arc<Sampler>),
}

/// How batches are made.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub batch: usize,
    /// Loader worker threads.
    pub threads: usize,
    /// Batches built ahead of the training thread, in all (being built or waiting): the
    /// loader's memory bound, whatever the thread count. Below `threads`, only that many
    /// workers are busy.
    pub prefetch: usize,
    /// Seed of the per-epoch sample order.
    pub seed: u64,
    /// Input = (pixel/255 − mean[c]) / std[c].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Input (width, height).
    pub size: (u32, u32),
    /// Shuffle the sample order each epoch (training) or keep it (evaluation).
    pub shuffle: bool,
    /// With a store labelled in decode-once blocks over a permutation (its partners inside each
    /// block): shuffle the blocks, then the records within windows of this many blocks, so each
    /// image is decoded once per epoch and a partner is decoded when its record comes. 0: shuffle
    /// all records (each decodes its own images). Up to two windows of images are in memory.
    pub window: usize,
    /// FKD's multi-crop: each epoch replays this many consecutive store epochs, one decode of an
    /// image feeding all its crops (with blocks, the crops are shuffled within the window;
    /// without, they come one after another). An epoch then has this many times the records.
    pub multi_crop: u32,
    /// This process's share of every epoch when several train one student (DDP ranks).
    pub part: Part,
    /// Compute each batch's [`Batch::digest`] on the loader thread that builds it (about 18 ms
    /// per 128 images of 224 px on a 2-core VM, so a run asks for it: `--stream-digest`).
    pub digest: bool,
    /// Make batches of u8 pixels ([`Inputs::U8`]) for a device to finish (`distill train`),
    /// rather than normalized f32 ([`Inputs::F32`], what the Python loader hands over).
    pub pixels: bool,
}

/// One rank's share of every epoch: the epoch's order (the same on every rank) cut into `world`
/// contiguous, disjoint parts of equal length, so the ranks' parts cover the epoch (the contract
/// of PyTorch's `DistributedSampler`; contiguous rather than interleaved, so that a rank's
/// records share their decode windows). Without `drop_last` the last parts wrap around to the
/// order's start to be as long as the others and a rank's last batch may be short; with it, the
/// parts are cut to the same length and every batch is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub rank: usize,
    pub world: usize,
    pub drop_last: bool,
}

impl Part {
    /// The whole epoch, last batch kept (one process).
    pub const WHOLE: Part = Part {
        rank: 0,
        world: 1,
        drop_last: false,
    };

    /// Records of this part of an epoch of `n` records, in batches of `batch`.
    pub fn len(&self, n: usize, batch: usize) -> usize {
        if self.drop_last {
            let per = n / self.world.max(1);
            per - per % batch.max(1)
        } else {
            n.div_ceil(self.world.max(1))
        }
    }

    /// Whether the part holds no record of an epoch of `n`.
    pub fn is_empty(&self, n: usize, batch: usize) -> bool {
        self.len(n, batch) == 0
    }
}

impl StreamConfig {
    /// Training defaults around the given batch, threads, seed, normalization and size:
    /// shuffled, windows of two blocks, no multi-crop.
    pub fn training(
        batch: usize,
        threads: usize,
        seed: u64,
        mean: Vec<f32>,
        std: Vec<f32>,
        size: (u32, u32),
    ) -> Self {
        StreamConfig {
            batch,
            threads,
            prefetch: default_prefetch(threads),
            seed,
            mean,
            std,
            size,
            shuffle: true,
            window: DEFAULT_WINDOW,
            multi_crop: 1,
            digest: false,
            pixels: false,
            part: Part::WHOLE,
        }
    }
}

/// Blocks per shuffle window by default.
pub const DEFAULT_WINDOW: usize = 2;

/// Batches in flight by default: one per worker and two ready.
pub fn default_prefetch(threads: usize) -> usize {
    threads.max(1) + 2
}

/// One batch, row-major and ready to become tensors.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Number of samples.
    pub n: usize,
    /// The inputs, in the form [`StreamConfig::pixels`] chose.
    pub inputs: Inputs,
    /// `n × classes` mixed hard labels; a row of zeros for a record without one (its sample,
    /// or its mix partner, is unlabelled).
    pub hard: Vec<f32>,
    /// Whether each row of `hard` holds a label (every row on labelled data); the rows that do
    /// are the records a cross-entropy term averages over ([`Batch::hard_rows`]).
    pub has_hard: Vec<bool>,
    /// `n × classes` teacher distribution at the requested τ, when one was requested: the
    /// store's, or an online teacher's.
    pub teacher: Option<Vec<f32>>,
    /// With an online teacher over a store: the largest difference between its distribution
    /// and the stored one, over the batch's classes and rows (the store's check).
    pub teacher_gap: Option<f32>,
    /// `n × d` teacher features of each record's view, when the stream reads a feature head
    /// ([`Stream::with_features`]).
    pub features: Option<Vec<f32>>,
    /// The dataset index of each sample.
    pub samples: Vec<u32>,
    /// The ground-truth label of each sample's primary image (for accuracy);
    /// [`crate::batch::NO_LABEL`] for a sample without one.
    pub labels: Vec<u32>,
    /// [`Batch::content_digest`] of this batch, computed by the loader thread that built it
    /// when [`StreamConfig::digest`] asks (so a run records what it trained on without hashing
    /// on the training thread).
    pub digest: Option<u64>,
    /// xxh3-64 of the normalized f32 inputs alone (little-endian), computed with `digest`.
    pub inputs_digest: Option<u64>,
}

impl Batch {
    /// xxh3-64 (seed 0) of the batch's bytes, little-endian, in this order: `inputs` (the
    /// normalized f32, computed from the pixels of a u8 batch with `channels`, `mean`, `std`),
    /// `hard` (f32), `teacher` (f32, when present), `features` (f32, when present), `samples`
    /// (u32), `labels` (u32). Python
    /// computes the same from the numpy arrays of a `distill.Loader` batch.
    pub fn content_digest(&self, channels: usize, mean: &[f32], std: &[f32]) -> u64 {
        self.digests(channels, mean, std).0
    }

    /// How many rows hold a hard label (`n` on labelled data).
    pub fn hard_rows(&self) -> usize {
        self.has_hard.iter().filter(|&&h| h).count()
    }

    /// [`Batch::content_digest`] and the digest of the inputs alone (xxh3-64 of the normalized
    /// f32 inputs), the pixels turned into f32 once for both.
    pub fn digests(&self, channels: usize, mean: &[f32], std: &[f32]) -> (u64, u64) {
        let converted;
        let x: &[f32] = match &self.inputs {
            Inputs::F32(v) => v,
            u8_form => {
                converted = u8_form.to_f32(channels, mean, std);
                &converted
            }
        };
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        feed_le(&mut h, x);
        // The digest of the inputs alone is the state so far: one pass over them for both.
        let inputs = h.clone().digest();
        feed_le(&mut h, &self.hard);
        if let Some(t) = &self.teacher {
            feed_le(&mut h, t);
        }
        if let Some(f) = &self.features {
            feed_le(&mut h, f);
        }
        feed_le(&mut h, &self.samples);
        feed_le(&mut h, &self.labels);
        (h.digest(), inputs)
    }
}

/// Hashes 4-byte values as their little-endian bytes: the memory itself on little-endian
/// machines (no copy), converted through a buffer elsewhere.
fn feed_le<T: bytemuck::Pod + ToLe>(h: &mut xxhash_rust::xxh3::Xxh3, v: &[T]) {
    if cfg!(target_endian = "little") {
        h.update(bytemuck::cast_slice(v));
    } else {
        feed_le_buffered(h, v);
    }
}

/// [`feed_le`] by conversion through a buffer, for big-endian machines.
fn feed_le_buffered<T: ToLe>(h: &mut xxhash_rust::xxh3::Xxh3, v: &[T]) {
    let mut buf = [0u8; 1 << 14];
    for chunk in v.chunks(buf.len() / 4) {
        for (b, x) in buf.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&x.to_le());
        }
        h.update(&buf[..chunk.len() * 4]);
    }
}

/// Little-endian bytes of a 4-byte value.
trait ToLe: Copy {
    fn to_le(self) -> [u8; 4];
}

impl ToLe for f32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
}

impl ToLe for u32 {
    fn to_le(self) -> [u8; 4] {
        self.to_le_bytes()
    }
}

/// The digest of a sequence of batches (an epoch as trained): xxh3-64 of the batches'
/// [`Batch::digest`]s as little-endian u64s, in order. Recorded as `stream_xxh3` in
/// `metrics.jsonl`, so a replay elsewhere (`distill.Loader`) can be checked bit for bit.
#[derive(Default)]
pub struct StreamDigest(xxhash_rust::xxh3::Xxh3);

impl StreamDigest {
    /// Adds the next batch's [`Batch::digest`].
    pub fn push(&mut self, digest: u64) {
        self.0.update(&digest.to_le_bytes());
    }

    /// The digest so far, as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0.digest())
    }
}

/// Batches of a dataset, for many epochs.
pub struct Stream {
    data: Arc<dyn Dataset>,
    source: Source,
    cfg: StreamConfig,
    range: SampleRange,
    classes: usize,
    /// The store's decode-once blocks, when the stream groups records by them.
    plan: Option<Arc<BlockPlan>>,
    /// How records become inputs: the view rule (the store's format version and recipe, or
    /// the live recipe), the size, the normalization, the u8 or f32 form.
    spec: ViewSpec,
    /// A teacher run on every batch (online distillation), whose labels the batches carry
    /// instead of a store's.
    teacher: Option<Arc<dyn OnlineTeacher>>,
    /// The store's feature head the batches carry ([`Stream::with_features`]).
    features: Option<Arc<FeatureStore>>,
}

/// One epoch's batches, computed ahead on the worker threads, and the decodes they made.
pub struct EpochBatches {
    loader: Loader<Result<Batch, ReplayError>>,
    cache: Arc<DecodeCache>,
}

impl EpochBatches {
    /// Images decoded so far this epoch.
    pub fn images_decoded(&self) -> u64 {
        self.cache.decoded()
    }
}

impl Iterator for EpochBatches {
    type Item = Result<Batch, ReplayError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.loader.next()
    }
}

/// An epoch's records in stream order, as (sample, crop) — crop `k` replays the `k`-th of the
/// epoch's store epochs — with the decode group of each and the groups' samples.
struct EpochOrder {
    entries: Vec<(u32, u32)>,
    group: Vec<u32>,
    groups: Vec<Vec<u32>>,
}

impl Stream {
    /// A stream over `data` with records from `source`. With a store, the store must have been labelled from
    /// this very data (fingerprint) at this input size.
    pub fn new(
        data: Arc<dyn Dataset>,
        source: Source,
        cfg: StreamConfig,
    ) -> Result<Self, ReplayError> {
        let c = usize::from(data.channels());
        for (name, v) in [("`mean`", &cfg.mean), ("`std`", &cfg.std)] {
            if v.len() != c {
                return Err(ReplayError::config(format!(
                    "{name} has {} values for {c}-channel images",
                    v.len()
                )));
            }
        }
        if cfg.std.iter().any(|s| !(s.is_finite() && *s != 0.0)) {
            return Err(ReplayError::config(
                "`std` values must be finite and non-zero",
            ));
        }
        if cfg.batch == 0 {
            return Err(ReplayError::config("`batch` must be ≥ 1"));
        }
        if cfg.multi_crop == 0 {
            return Err(ReplayError::config("`multi_crop` must be ≥ 1"));
        }
        let p = cfg.part;
        if p.world == 0 || p.rank >= p.world {
            return Err(ReplayError::config(format!(
                "`rank` {} is not one of 0..{} (`world`)",
                p.rank, p.world
            )));
        }
        let (range, plan, rule) = match &source {
            Source::Store(store) => {
                check_store(store, data.as_ref(), cfg.size)?;
                let rule = store.view_rule()?;
                if cfg.multi_crop > store.epochs() {
                    return Err(ReplayError::config(format!(
                        "`multi_crop` {} needs as many stored epochs; {} has {}",
                        cfg.multi_crop,
                        store.dir.display(),
                        store.epochs()
                    )));
                }
                let m = &store.manifest;
                let plan = match m.blocks {
                    Some(b) if b.order == BlockOrder::Permuted && cfg.window > 0 && cfg.shuffle => {
                        let c = u64::from(data.channels());
                        let dims =
                            |s: u32| data.dims(s).map(|(w, h)| u64::from(w) * u64::from(h) * c);
                        Some(Arc::new(
                            BlockPlan::new(b, m.seed, m.samples, &dims).map_err(|e| {
                                ReplayError::Mismatch(format!(
                                    "{}: blocks: {e}",
                                    store.dir.display()
                                ))
                            })?,
                        ))
                    }
                    _ => None,
                };
                (store.samples(), plan, rule)
            }
            Source::Sampler(sampler) => {
                if cfg.multi_crop > 1 {
                    return Err(ReplayError::config(
                        "`multi_crop` replays stored epochs: it needs a store (`labels`)",
                    ));
                }
                let all = SampleRange {
                    start: 0,
                    end: data.len(),
                };
                (all, None, ViewRule::of_recipe(sampler.recipe()))
            }
        };
        // A store's classes are its teacher's (the data's, unless the data has no hard labels).
        // A store without soft labels (an embedding-only teacher's) has no classes: the data's.
        let classes = match &source {
            Source::Store(store) => store.manifest.label_classes(),
            Source::Sampler(_) => None,
        }
        .unwrap_or(data.classes()) as usize;
        let spec = ViewSpec {
            rule,
            size: cfg.size,
            scale: 1.0,
            mean: cfg.mean.clone(),
            std: cfg.std.clone(),
            pixels: cfg.pixels,
        };
        Ok(Stream {
            data,
            source,
            cfg,
            range,
            classes,
            plan,
            spec,
            teacher: None,
            features: None,
        })
    }

    /// The stream with the store's feature head `head` in every batch ([`Batch::features`]):
    /// the decoded epochs handed to [`Stream::epoch`] must carry it
    /// ([`LabelStore::prefetch_with_features`] over [`Stream::feature_store`]).
    pub fn with_features(mut self, head: usize) -> Result<Self, ReplayError> {
        let Source::Store(store) = &self.source else {
            return Err(ReplayError::config(
                "teacher features come from a store labelled with --feature (`labels`)",
            ));
        };
        self.features = Some(Arc::new(store.features(head)?));
        Ok(self)
    }

    /// The feature head the batches carry, when any.
    pub fn feature_store(&self) -> Option<&Arc<FeatureStore>> {
        self.features.as_ref()
    }

    /// The stream with `teacher` run on every batch (online distillation): the batches' teacher
    /// distributions are its labels of their views, on fresh views from a sampler or on a
    /// store's replayed views (then each batch also says how far they are from the stored
    /// ones, [`Batch::teacher_gap`], when the store has soft labels). The batches must be u8
    /// pixels (`pixels`), which the teacher normalizes its own way; its classes must be the
    /// store's (when it has soft labels), or the data's unless the data has no hard labels.
    pub fn with_teacher(mut self, teacher: Arc<dyn OnlineTeacher>) -> Result<Self, ReplayError> {
        if !self.cfg.pixels {
            return Err(ReplayError::config(
                "an online teacher takes the u8 pixels of a batch: set `pixels`",
            ));
        }
        let tc = teacher.classes();
        let want = match &self.source {
            // A store without soft labels: its views (and features) with the teacher's labels.
            Source::Store(store) if !store.manifest.has_labels() => self
                .data
                .labelled()
                .then(|| (self.data.classes(), "the data")),
            Source::Store(store) => Some((store.manifest.classes, "the store")),
            Source::Sampler(_) if self.data.labelled() => Some((self.data.classes(), "the data")),
            Source::Sampler(_) => None,
        };
        if let Some((c, whose)) = want
            && c != tc
        {
            return Err(ReplayError::Mismatch(format!(
                "the online teacher has {tc} classes, {whose} {c} (data read `unlabelled` is a \
                 transfer set for a teacher of any classes)"
            )));
        }
        self.classes = tc as usize;
        self.teacher = Some(teacher);
        Ok(self)
    }

    /// Whether the data has hard labels (read without them, every batch's `hard` is zeros).
    pub fn labelled(&self) -> bool {
        self.data.labelled()
    }

    /// Records per epoch (samples × multi-crop; this rank's part of them).
    pub fn samples(&self) -> usize {
        let all = self.range.len() as usize * self.cfg.multi_crop as usize;
        self.cfg.part.len(all, self.cfg.batch)
    }

    /// Whether records come grouped by the store's decode-once blocks.
    pub fn block_grouped(&self) -> bool {
        self.plan.is_some()
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

    /// The store epochs that student epoch `epoch` replays: `epoch mod E`, or with multi-crop K
    /// the K epochs from `epoch · K` on (mod E).
    pub fn store_epochs(&self, epoch: u32) -> Vec<u32> {
        match &self.source {
            Source::Store(s) => {
                let k = self.cfg.multi_crop;
                (0..k)
                    .map(|i| {
                        ((u64::from(epoch) * u64::from(k) + u64::from(i)) % u64::from(s.epochs()))
                            as u32
                    })
                    .collect()
            }
            Source::Sampler(_) => Vec::new(),
        }
    }

    /// The (first) store epoch that student epoch `epoch` replays.
    pub fn store_epoch(&self, epoch: u32) -> Option<u32> {
        self.store_epochs(epoch).first().copied()
    }

    /// The sample order of `epoch` (the first crop of each record): a permutation drawn from
    /// (seed, epoch), block-grouped when the stream follows the store's blocks, or sample order
    /// when not shuffling.
    pub fn order(&self, epoch: u32) -> Vec<u32> {
        let o = self.epoch_order(epoch);
        o.entries.iter().filter(|e| e.1 == 0).map(|e| e.0).collect()
    }

    /// The epoch's order cut to this rank's part.
    fn epoch_order(&self, epoch: u32) -> EpochOrder {
        let mut o = self.whole_order(epoch);
        let p = self.cfg.part;
        if p == Part::WHOLE {
            return o;
        }
        let n = o.entries.len();
        let per = p.len(n, self.cfg.batch);
        let from = if p.drop_last {
            p.rank * (n / p.world)
        } else {
            p.rank * per
        };
        let take = |v: &[(u32, u32)]| (from..from + per).map(|i| v[i % n]).collect();
        let entries = take(&o.entries);
        o.group = (from..from + per).map(|i| o.group[i % n]).collect();
        o.entries = entries;
        o
    }

    fn whole_order(&self, epoch: u32) -> EpochOrder {
        let k = self.cfg.multi_crop;
        // A stream no augmentation record uses (index u32::MAX is never a sample).
        let mut r = record_rng(self.cfg.seed, epoch, u32::MAX);
        if let Some(plan) = &self.plan {
            let mut blocks: Vec<usize> = (0..plan.len()).collect();
            blocks.shuffle(&mut r);
            let (mut entries, mut group, mut groups) = (Vec::new(), Vec::new(), Vec::new());
            for (g, w) in blocks.chunks(self.cfg.window.max(1)).enumerate() {
                let members: Vec<u32> = w
                    .iter()
                    .flat_map(|&b| plan.block(b).iter().copied())
                    .collect();
                let mut win: Vec<(u32, u32)> = members
                    .iter()
                    .flat_map(|&s| (0..k).map(move |c| (s, c)))
                    .collect();
                win.shuffle(&mut r);
                group.extend(std::iter::repeat_n(g as u32, win.len()));
                entries.extend(win);
                groups.push(members);
            }
            return EpochOrder {
                entries,
                group,
                groups,
            };
        }
        let mut order: Vec<u32> = (self.range.start..self.range.end).collect();
        if self.cfg.shuffle {
            order.shuffle(&mut r);
        }
        let entries: Vec<(u32, u32)> = order
            .iter()
            .flat_map(|&s| (0..k).map(move |c| (s, c)))
            .collect();
        if k == 1 {
            // No grouping: every record decodes its own images.
            return EpochOrder {
                group: vec![u32::MAX; entries.len()],
                entries,
                groups: Vec::new(),
            };
        }
        // Multi-crop without blocks: a sample's crops come together; each batch is a group.
        let b = self.cfg.batch;
        let group = (0..entries.len()).map(|i| (i / b) as u32).collect();
        let groups = entries
            .chunks(b)
            .map(|c| c.iter().map(|e| e.0).collect())
            .collect();
        EpochOrder {
            entries,
            group,
            groups,
        }
    }

    /// Refuses a teacher distribution (`tau`) that neither the source nor an online teacher
    /// gives: sampled views have none, nor does a store without soft labels.
    fn check_teacher(&self, tau: Option<f32>) -> Result<(), ReplayError> {
        if tau.is_none() || self.teacher.is_some() {
            return Ok(());
        }
        match &self.source {
            Source::Sampler(_) => Err(ReplayError::config(
                "this loss needs teacher labels: give a store (`labels`) or a teacher \
                 (`teachers`)",
            )),
            Source::Store(store) if !store.manifest.has_labels() => Err(no_soft_labels(store)),
            Source::Store(_) => Ok(()),
        }
    }

    /// The batches of student epoch `epoch`, computed ahead on the worker threads. `decoded`
    /// holds the store epochs [`Stream::store_epochs`] names, in that order (from a
    /// prefetcher); `tau` asks for the teacher distribution at that temperature.
    pub fn epoch(
        self: &Arc<Self>,
        epoch: u32,
        decoded: Vec<Arc<DecodedEpoch>>,
        tau: Option<f32>,
    ) -> Result<EpochBatches, ReplayError> {
        let want = self.store_epochs(epoch);
        let got: Vec<u32> = decoded.iter().map(|d| d.epoch).collect();
        if matches!(self.source, Source::Store(_)) && got != want {
            return Err(ReplayError::config(format!(
                "student epoch {epoch} needs store epochs {want:?}, got {got:?}"
            )));
        }
        self.check_teacher(tau)?;
        let o = self.epoch_order(epoch);
        let b = self.cfg.batch;
        let n = o.entries.len().div_ceil(b);
        let mut items = vec![0usize; o.groups.len()];
        for chunk in o.group.chunks(b) {
            let mut seen: Vec<u32> = chunk.iter().copied().filter(|&g| g != u32::MAX).collect();
            seen.dedup();
            for g in seen {
                items[g as usize] += 1;
            }
        }
        let cache = Arc::new(DecodeCache::new(
            Arc::clone(&self.data),
            self.range,
            &o.groups,
            &items,
        ));
        let me = Arc::clone(self);
        let (order, c) = (Arc::new(o), Arc::clone(&cache));
        let loader = Loader::new(n, self.cfg.threads, self.cfg.prefetch, move |i| {
            let span = i * b..((i + 1) * b).min(order.entries.len());
            let refs: Vec<&DecodedEpoch> = decoded.iter().map(|d| d.as_ref()).collect();
            let out = me.build(
                epoch,
                &order.entries[span.clone()],
                &order.group[span.clone()],
                &refs,
                tau,
                &c,
            );
            let mut seen: Vec<u32> = order.group[span]
                .iter()
                .copied()
                .filter(|&g| g != u32::MAX)
                .collect();
            seen.dedup();
            for g in seen {
                c.item_done(g);
            }
            out
        });
        Ok(EpochBatches { loader, cache })
    }

    /// Builds the batch of `samples` (exposed for tests and evaluation): each record of
    /// `decoded` (or sampled live), decoding its own images.
    pub fn make_batch(
        &self,
        epoch: u32,
        samples: &[u32],
        decoded: Option<&DecodedEpoch>,
        tau: Option<f32>,
    ) -> Result<Batch, ReplayError> {
        let entries: Vec<(u32, u32)> = samples.iter().map(|&s| (s, 0)).collect();
        let group = vec![u32::MAX; entries.len()];
        let cache = DecodeCache::uncached(Arc::clone(&self.data));
        self.build(epoch, &entries, &group, decoded.as_slice(), tau, &cache)
    }

    /// The batch of `entries` ((sample, crop) with the decode group of each).
    fn build(
        &self,
        epoch: u32,
        entries: &[(u32, u32)],
        groups: &[u32],
        decoded: &[&DecodedEpoch],
        tau: Option<f32>,
        cache: &DecodeCache,
    ) -> Result<Batch, ReplayError> {
        self.check_teacher(tau)?;
        let c = usize::from(self.data.channels());
        let n = entries.len();
        let cl = self.classes;
        let mut batch = Batch {
            n,
            inputs: Inputs::default(),
            hard: vec![0.0; n * cl],
            has_hard: Vec::with_capacity(n),
            teacher: tau.map(|_| vec![0.0; n * cl]),
            teacher_gap: None,
            features: self.features.as_ref().map(|f| vec![0.0; n * f.dim()]),
            samples: entries.iter().map(|e| e.0).collect(),
            labels: Vec::with_capacity(n),
            digest: None,
            inputs_digest: None,
        };
        let mut rec = formats::Record::empty(0);
        let mut params = Vec::with_capacity(n);
        for (i, &(s, crop)) in entries.iter().enumerate() {
            params.push(match &self.source {
                Source::Store(_) => {
                    let d = decoded.get(crop as usize).ok_or_else(|| {
                        ReplayError::config("a store-fed epoch needs its decoded records")
                    })?;
                    d.get_into(s, &mut rec)?;
                    if let (Some(t), Some(tau), true) =
                        (batch.teacher.as_mut(), tau, rec.label.k() > 0)
                    {
                        rec.label.dense_into(tau, &mut t[i * cl..(i + 1) * cl]);
                    }
                    if let Some(f) = batch.features.as_mut() {
                        let df = d.features.as_ref().ok_or_else(|| {
                            ReplayError::config(
                                "a stream with features needs decoded epochs that carry them \
                                 (prefetch_with_features)",
                            )
                        })?;
                        let dim = df.dim();
                        df.get_into(s, &mut f[i * dim..(i + 1) * dim])?;
                    }
                    rec.aug
                }
                Source::Sampler(sampler) => sampler
                    .sample(epoch, s, &|j| self.data.dims(j))
                    .map_err(|e| ReplayError::sample(s, e.to_string()))?,
            });
        }
        let rows: Vec<(u32, u32)> = entries.iter().zip(groups).map(|(e, &g)| (e.0, g)).collect();
        let built = crate::batch::build(
            &self.spec,
            self.data.as_ref(),
            cache,
            &rows,
            &params,
            Vec::new(),
        )?;
        for (i, m) in built.mixed.iter().enumerate() {
            if let Some(m) = m {
                m.dense_into(&mut batch.hard[i * cl..(i + 1) * cl]);
            }
            batch.has_hard.push(m.is_some());
        }
        if let (Some(teacher), Some(t), Some(tau)) = (&self.teacher, batch.teacher.as_mut(), tau) {
            let labels = teacher.label(&built.inputs, &batch.samples, epoch)?;
            let stored = matches!(&self.source, Source::Store(s) if s.manifest.has_labels());
            let mut row = vec![0f32; cl];
            let mut gap = 0f32;
            for (i, label) in labels.iter().enumerate() {
                label.dense_into(tau, &mut row);
                let out = &mut t[i * cl..(i + 1) * cl];
                if stored {
                    let d = out
                        .iter()
                        .zip(&row)
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    gap = gap.max(d);
                }
                out.copy_from_slice(&row);
            }
            batch.teacher_gap = stored.then_some(gap);
        }
        batch.inputs = built.inputs;
        batch.labels = built.labels;
        if self.cfg.digest {
            let (all, inputs) = batch.digests(c, &self.cfg.mean, &self.cfg.std);
            batch.digest = Some(all);
            batch.inputs_digest = Some(inputs);
        }
        Ok(batch)
    }
}

/// The error of asking a store without soft labels for a teacher distribution.
pub fn no_soft_labels(store: &LabelStore) -> ReplayError {
    ReplayError::config(format!(
        "{} holds no soft labels (an embedding-only teacher's views and features, k = 0), \
         and teacher labels were asked for",
        store.dir.display()
    ))
}

/// Refuses a store that was not labelled from `data` at input size `size`, naming the field.
pub fn check_store(
    store: &LabelStore,
    data: &dyn Dataset,
    size: (u32, u32),
) -> Result<(), ReplayError> {
    let m = &store.manifest;
    let dir = store.dir.display();
    if let Some(diff) = formats::manifest::parts_mismatch(&m.datasets, data.parts()) {
        return Err(ReplayError::Mismatch(format!(
            "{dir} was not labelled from this data: {diff}"
        )));
    }
    if let Some(diff) = m.dataset.mismatch(data.fingerprint()) {
        return Err(ReplayError::Mismatch(format!(
            "{dir} was not labelled from this data: {diff}"
        )));
    }
    if let Some(probe) = &m.decode_probe
        && let Some((sample, then, now)) = datasets::probe::probe_mismatch(data, probe)?
    {
        return Err(ReplayError::Mismatch(format!(
            "{dir}: sample {sample} decodes to other pixels than when the store was labelled \
             (decode_probe: {then} with {}, now {now} with {}): replayed inputs would differ from \
             what the teacher saw; train with the build that labelled the store, or label again",
            probe.decoder,
            data.decoder()
        )));
    }
    if data.labelled() && m.has_labels() && m.classes != data.classes() {
        return Err(ReplayError::Mismatch(format!(
            "{dir}: field classes is {} but the data has {} classes",
            m.classes,
            data.classes()
        )));
    }
    if m.samples.end > data.len() {
        return Err(ReplayError::Mismatch(format!(
            "{dir}: field samples is {} but the data has {} samples",
            m.samples,
            data.len()
        )));
    }
    let Some((w, h)) = store_input_size(store) else {
        return Err(ReplayError::Mismatch(format!(
            "{dir}: field teacher_input is missing, so the input size its crop and mix boxes \
             belong to is unknown (a store distill label did not write?); label the data again"
        )));
    };
    if (w, h) != size {
        return Err(ReplayError::Mismatch(format!(
            "{dir}: field teacher_input is {w}x{h} but the student input is {}x{} (mix boxes \
             and crops are stored for the teacher's size)",
            size.0, size.1
        )));
    }
    Ok(())
}

/// The decoder `store`'s inputs were made with (its decode probe's, or its format version's):
/// replay must read the data with it to see what the teacher saw. A decoder this build lacks
/// is an error naming the store and the field.
pub fn store_decoder(store: &LabelStore) -> Result<datasets::ImageDecoder, ReplayError> {
    let m = &store.manifest;
    datasets::ImageDecoder::of_store(m.format_version, m.decode_probe.as_ref())
        .map_err(|e| ReplayError::Mismatch(format!("{}: {e}", store.dir.display())))
}

/// The input size the store's records were made for (`teacher_input` in the manifest).
pub fn store_input_size(store: &LabelStore) -> Option<(u32, u32)> {
    let t = store.manifest.teacher_input.as_ref()?;
    Some((t.width, t.height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le<T: Copy>(v: &[T], f: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }

    #[test]
    fn digest_is_xxh3_of_the_fields_in_order() {
        // More floats than the 16 KiB buffer holds, so the flush is exercised.
        let mut inputs: Vec<f32> = (0..10_000).map(|i| i as f32 * 0.25 - 7.0).collect();
        let mut b = Batch {
            n: 2,
            inputs: Inputs::F32(inputs.clone()),
            hard: vec![0.0, 1.0, 0.3, 0.7],
            has_hard: vec![true, true],
            teacher: Some(vec![0.5, 0.5, 0.9, 0.1]),
            teacher_gap: None,
            features: Some(vec![0.25, -1.5, 3.0, 0.0, 7.0, -0.125]),
            samples: vec![3, 9],
            labels: vec![1, 0],
            digest: None,
            inputs_digest: None,
        };
        let mut bytes = le(&inputs, f32::to_le_bytes);
        bytes.extend(le(&b.hard, f32::to_le_bytes));
        bytes.extend(le(b.teacher.as_ref().unwrap(), f32::to_le_bytes));
        bytes.extend(le(b.features.as_ref().unwrap(), f32::to_le_bytes));
        bytes.extend(le(&b.samples, u32::to_le_bytes));
        bytes.extend(le(&b.labels, u32::to_le_bytes));
        assert_eq!(
            b.content_digest(1, &[0.0], &[1.0]),
            xxhash_rust::xxh3::xxh3_64(&bytes)
        );
        let with_teacher = b.content_digest(1, &[0.0], &[1.0]);
        b.teacher = None;
        b.features = None;
        assert_ne!(b.content_digest(1, &[0.0], &[1.0]), with_teacher);
        inputs[9_999] = f32::from_bits(inputs[9_999].to_bits() ^ 1);
        b.inputs = Inputs::F32(inputs.clone());
        let mut bytes = le(&inputs, f32::to_le_bytes);
        bytes.extend(le(&b.hard, f32::to_le_bytes));
        bytes.extend(le(&b.samples, u32::to_le_bytes));
        bytes.extend(le(&b.labels, u32::to_le_bytes));
        assert_eq!(
            b.content_digest(1, &[0.0], &[1.0]),
            xxhash_rust::xxh3::xxh3_64(&bytes)
        );

        // The buffered path (big-endian machines) gives the same bytes.
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        feed_le_buffered(&mut h, &inputs);
        assert_eq!(
            h.digest(),
            xxhash_rust::xxh3::xxh3_64(&le(&inputs, f32::to_le_bytes))
        );

        let mut s = StreamDigest::default();
        s.push(0x0123_4567_89ab_cdef);
        s.push(42);
        let mut words = 0x0123_4567_89ab_cdef_u64.to_le_bytes().to_vec();
        words.extend(42u64.to_le_bytes());
        assert_eq!(
            s.hex(),
            format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&words))
        );
    }
}
