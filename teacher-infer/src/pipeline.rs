//! `distill label`: loader threads sample and apply the augmentation of each (epoch, sample),
//! assemble normalized batches, this thread runs the teachers, and a writer thread computes
//! top-k and quality figures and appends records in order. Bounded channels between the stages
//! keep memory flat.
//!
//! Batches are cut block by block: a block of `batch` samples is labelled for every epoch
//! before the next block, so the store's epoch streams fill together (and so a resumed run, which
//! skips records already on disk, repeats the same sequence).

use crate::bank::TeacherBank;
use crate::error::InferError;
use crate::session::{Device, TeacherSession};
use crate::sink::{RecordSink, store_err};
use datasets::Dataset;
use formats::Recipe;
use formats::{AugParams, FORMAT_NAME, FORMAT_VERSION, Manifest, Quality, SampleRange, ValueCodec};
use formats::{BlockConfig, BlockOrder};
use label_store::{OpenMode, StoreWriter, WriterLock};
use replay::ReplayError;
use replay::batch::{Inputs, ViewSpec};
use replay::block::{BlockPlan, DecodeCache};
use replay::loader::Loader;
use replay::sampler::{MixedLabel, Sampler};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// How several teachers' outputs become one label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ensemble {
    /// Mean of the teachers' probabilities (stored as its logarithm).
    Probs,
    /// Mean of the teachers' logits.
    Logits,
}

impl Ensemble {
    /// The name the manifest records.
    pub fn name(self) -> &'static str {
        match self {
            Ensemble::Probs => "probs",
            Ensemble::Logits => "logits",
        }
    }
}

/// Everything one labelling run needs.
pub struct LabelConfig {
    pub teachers: Vec<PathBuf>,
    pub data: Arc<dyn Dataset>,
    pub out: PathBuf,
    pub epochs: u32,
    pub k: u32,
    pub recipe: Recipe,
    pub seed: u64,
    pub batch: usize,
    /// Loader threads.
    pub threads: usize,
    /// ONNX Runtime intra-op threads (0: its default).
    pub session_threads: usize,
    pub device: Device,
    /// CUDA execution provider options (ignored on the CPU).
    pub cuda: crate::session::CudaOptions,
    /// Teacher input (width, height); `None`: the model's fixed size, else the images' size.
    pub size: Option<(u32, u32)>,
    /// Input = (pixel / 255 · scale − mean[c]) / std[c].
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Where `mean`, `std`, the recipe's filter and crop came from (`flag`, `model`, …), as
    /// the manifest's `teacher_input.sources` records it.
    pub sources: std::collections::BTreeMap<String, String>,
    /// `(i, n)`: label only the i-th of n contiguous sample ranges.
    pub shard: Option<(u32, u32)>,
    pub mode: OpenMode,
    pub codec: ValueCodec,
    pub chunk_records: u32,
    pub ensemble: Ensemble,
    /// `--ort-lib`: the ONNX Runtime library to load instead of searching.
    pub ort_lib: Option<PathBuf>,
    /// Decode-once blocks (each image decoded once for all epochs of its block); `None`: every
    /// record decodes its own images. See [`default_blocks`].
    pub blocks: Option<BlockConfig>,
    /// The teachers' outputs to read: logits by name, and a feature output to store.
    pub outputs: crate::session::Outputs,
    /// How stored features are encoded.
    pub feature_codec: formats::FeatureCodec,
    /// A basis file (`distill features fit`): each head's vectors are stored as its `d` PCA
    /// coefficients.
    pub feature_basis: Option<PathBuf>,
}

impl LabelConfig {
    /// A configuration with `distill label`'s defaults: one epoch, top-10, recipe `none`, seed
    /// 0, batches of 64, a loader thread per core, the CPU, inputs of the model's size scaled to
    /// [0, 1], the whole dataset, a new store, q8 values, and no decode-once blocks (set
    /// `blocks` from [`default_blocks`] once the recipe is chosen).
    pub fn new(teachers: Vec<PathBuf>, data: Arc<dyn Dataset>, out: PathBuf) -> Self {
        let channels = usize::from(data.channels());
        LabelConfig {
            teachers,
            data,
            out,
            epochs: 1,
            k: 10,
            recipe: Recipe::none(),
            seed: 0,
            batch: 64,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            session_threads: 0,
            device: Device::Cpu,
            cuda: Default::default(),
            size: None,
            scale: 1.0,
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
            sources: Default::default(),
            shard: None,
            mode: OpenMode::Create,
            codec: ValueCodec::Q8,
            chunk_records: label_store::DEFAULT_CHUNK_RECORDS,
            ensemble: Ensemble::Probs,
            ort_lib: None,
            blocks: None,
            outputs: Default::default(),
            feature_codec: formats::FeatureCodec::Q8,
            feature_basis: None,
        }
    }
}

/// The blocks `distill label` uses by default: decode-once blocks of
/// [`replay::block::DEFAULT_BLOCK_IMAGES`] for datasets of encoded images (image folders),
/// over a permutation when the recipe mixes (partners from all classes); none for datasets held
/// decoded in memory, where a decode costs nothing.
pub fn default_blocks(data: &dyn Dataset, recipe: &Recipe) -> Option<BlockConfig> {
    data.encoded().then(|| {
        block_config(
            replay::block::DEFAULT_BLOCK_IMAGES,
            replay::block::DEFAULT_BLOCK_BYTES,
            recipe,
        )
    })
}

/// Blocks of at most `images` samples and `bytes` decoded bytes, in the order `recipe` needs.
pub fn block_config(images: u32, bytes: u64, recipe: &Recipe) -> BlockConfig {
    BlockConfig {
        images,
        bytes,
        order: if recipe.mix.is_some() {
            BlockOrder::Permuted
        } else {
            BlockOrder::Sequential
        },
    }
}

/// How far a run is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records of the shard done (on disk before this run, or labelled by it).
    pub records: u64,
    /// Images this run decoded.
    pub images_decoded: u64,
}

/// What a finished run reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LabelSummary {
    pub out: PathBuf,
    pub records: u64,
    /// Records labelled by this run (fewer than `records` when resuming).
    pub labelled: u64,
    /// The store was already finished with the same settings (`--resume` of a done job).
    pub already_complete: bool,
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Images this run decoded (with decode-once blocks about one per sample, whatever the
    /// epoch count; without, one or two per record).
    pub images_decoded: u64,
    /// The decode-once blocks of the store, if any.
    pub blocks: Option<BlockConfig>,
    pub samples: SampleRange,
    /// Classes kept per record; 0 for a store without soft labels (embedding-only teachers).
    pub k: u32,
    pub quality: Quality,
}

/// The sample range of shard `i` of `n` of `data`: equal contiguous ranges, or, where the samples
/// lie in files (tar shards, [`Dataset::file_starts`]) and there are at least `n` of them, ranges
/// cut on file boundaries (each as near the equal cut as the files allow), so each job reads
/// whole files. A pure function of the data and `(i, n)`: every job computes the same tiling.
pub fn shard_range(
    data: &dyn Dataset,
    shard: Option<(u32, u32)>,
) -> Result<SampleRange, InferError> {
    let len = data.len();
    let Some((i, n)) = shard else {
        return Ok(SampleRange { start: 0, end: len });
    };
    if n == 0 || i >= n || n > len {
        return Err(InferError::Invalid {
            field: "shard",
            what: format!("shard {i}/{n} is not one of 0..{n} over {len} samples"),
        });
    }
    let even = |j: u32| (u64::from(len) * u64::from(j) / u64::from(n)) as u32;
    let cuts = match data.file_starts() {
        Some(starts) if starts.len() >= n as usize => file_cuts(starts, len, n),
        Some(starts) => {
            tracing::warn!(
                "shard {i}/{n}: the data has only {} files, so jobs split files",
                starts.len()
            );
            (0..=n).map(even).collect()
        }
        None => (0..=n).map(even).collect(),
    };
    Ok(SampleRange {
        start: cuts[i as usize],
        end: cuts[i as usize + 1],
    })
}

/// `n + 1` cuts (0 first, `len` last) on the file starts `starts` (at least `n` files): cut `j` is
/// the file start nearest `len · j / n` that leaves every job at least one file.
fn file_cuts(starts: &[u32], len: u32, n: u32) -> Vec<u32> {
    let files = starts.len();
    let mut cuts = vec![0u32];
    let mut prev = 0usize;
    for j in 1..n as usize {
        let target = u64::from(len) * j as u64 / u64::from(n);
        // Files prev+1 ..= files-(n-j) may start job j.
        let (lo, hi) = (prev + 1, files - (n as usize - j));
        let k = (lo..=hi)
            .min_by_key(|&k| u64::from(starts[k]).abs_diff(target))
            .expect("a file for every job");
        cuts.push(starts[k]);
        prev = k;
    }
    cuts.push(len);
    cuts
}

/// One labelled batch: consecutive samples of one block in one epoch, their augmentation, the
/// normalized inputs and their (mixed) true classes.
pub(crate) struct Batch {
    pub(crate) epoch: u32,
    pub(crate) block: u32,
    pub(crate) samples: Vec<u32>,
    pub(crate) pixels: Vec<f32>,
    pub(crate) aug: Vec<AugParams>,
    pub(crate) truth: Vec<Option<MixedLabel>>,
}

/// Runs the teachers over the dataset and writes (or resumes) the store. `progress` is called
/// with the records of the shard that are done (on disk or labelled) and the images decoded.
///
/// Takes the output directory's writer lock first: a second run on the same directory fails
/// at once, naming the process that holds it.
pub fn label(
    cfg: &LabelConfig,
    progress: impl FnMut(Progress),
) -> Result<LabelSummary, InferError> {
    let lock = WriterLock::acquire(&cfg.out).map_err(|e| store_err(&cfg.out, e))?;
    label_locked(cfg, lock, progress)
}

/// [`label`] with the lock of `cfg.out` already held (the command line takes it before it
/// opens the dataset, which can take a while on a large folder): the plan (what to label, and
/// the store opened or resumed), the teacher bank, the record sink, composed.
pub fn label_locked(
    cfg: &LabelConfig,
    lock: WriterLock,
    mut progress: impl FnMut(Progress),
) -> Result<LabelSummary, InferError> {
    let t0 = Instant::now();
    let mut bank = TeacherBank::open(cfg)?;
    let (plan, writer) = LabelPlan::prepare(cfg, &bank, lock)?;
    let already_complete = writer.already_complete();
    progress(Progress {
        records: plan.already,
        images_decoded: 0,
    });
    // Input buffers go back to the loader threads once the teachers have run on them.
    let (recycle, spare) = crossbeam_channel::bounded::<Vec<f32>>(2 * cfg.threads.max(1) + 2);
    let loader = plan.batches(cfg, spare);
    let sink = RecordSink::start(
        writer,
        &cfg.out,
        bank.classes(),
        bank.kept(cfg.k),
        cfg.epochs,
        Arc::clone(&plan.blocks),
    );
    let chw = [
        plan.channels as usize,
        plan.size.1 as usize,
        plan.size.0 as usize,
    ];
    let mut done = 0u64;
    let mut failure = None;
    for item in loader {
        let mut b = match item {
            Ok(b) => b,
            Err(what) => {
                failure = Some(InferError::Model {
                    file: PathBuf::from("dataset"),
                    what,
                });
                break;
            }
        };
        let n = b.samples.len() as u64;
        match bank.run_with_features(&b.pixels, chw, &b.samples, b.epoch) {
            Ok((logits, features)) => {
                let _ = recycle.try_send(std::mem::take(&mut b.pixels));
                if !sink.send(b, logits, features) {
                    break; // the writer stopped with an error; it is reported below
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        done += n;
        progress(Progress {
            records: plan.already + done,
            images_decoded: plan.images.decoded(),
        });
    }
    let writer = sink.finish()?;
    if let Some(e) = failure {
        // Chunks already complete stay on disk: `--resume` continues from them.
        return Err(e);
    }
    let m = writer.finish().map_err(|e| store_err(&cfg.out, e))?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(LabelSummary {
        out: cfg.out.clone(),
        records: m.records(),
        labelled: plan.labelled,
        already_complete,
        seconds,
        images_per_sec: plan.labelled as f64 / seconds,
        images_decoded: plan.images.decoded(),
        blocks: m.blocks,
        samples: m.samples,
        k: m.k,
        quality: m.quality,
    })
}

/// What a run labels and how: the teachers' input, the sampler, the blocks, the loader items
/// still to do (a resumed run skips what is on disk) and the decode cache they share.
struct LabelPlan {
    channels: u32,
    /// Input (width, height).
    size: (u32, u32),
    sampler: Arc<Sampler>,
    blocks: Arc<BlockPlan>,
    todo: Vec<Item>,
    images: Arc<DecodeCache>,
    /// Records this run labels.
    labelled: u64,
    /// Records of the shard already on disk.
    already: u64,
}

impl LabelPlan {
    /// Checks the run's settings against the teachers and the data, and opens (or resumes) the
    /// store with the manifest the run will write.
    fn prepare(
        cfg: &LabelConfig,
        bank: &TeacherBank,
        lock: WriterLock,
    ) -> Result<(Self, StoreWriter), InferError> {
        let data = &cfg.data;
        let c = u32::from(data.channels());
        let (w, h) = bank.input_size(cfg.size, data.as_ref())?;
        check_normalization(cfg)?;
        let range = shard_range(data.as_ref(), cfg.shard)?;
        let sampler = Sampler::new(&cfg.recipe, cfg.seed, data.len(), w, h).map_err(|e| {
            InferError::Invalid {
                field: "recipe",
                what: e.to_string(),
            }
        })?;
        // What this build's decoder makes of a few samples, so students can refuse data that
        // their build decodes differently (the replay would no longer be what the teacher saw).
        let probe =
            datasets::probe::decode_probe(data.as_ref()).map_err(|e| InferError::Model {
                file: PathBuf::from("dataset"),
                what: format!("decode probe: {e}"),
            })?;
        let mut draft = draft_manifest(
            cfg,
            bank.sessions(),
            range,
            (bank.classes(), bank.kept(cfg.k)),
            (w, h),
            probe,
        );
        let bases = head_bases(cfg, &mut draft)?;
        let writer = StoreWriter::open_with_bases(
            lock,
            draft,
            cfg.mode,
            label_store::DEFAULT_ZSTD_LEVEL,
            bases,
        )
        .map_err(|e| store_err(&cfg.out, e))?;
        let plan = Self::cut(cfg, c, (w, h), range, sampler, &writer)?;
        Ok((plan, writer))
    }

    /// The blocks over `range`, the items still to label in them, and the decode cache.
    fn cut(
        cfg: &LabelConfig,
        c: u32,
        size: (u32, u32),
        range: SampleRange,
        sampler: Sampler,
        writer: &StoreWriter,
    ) -> Result<Self, InferError> {
        let data = &cfg.data;
        // The blocks: decode-once blocks when configured; otherwise runs of `batch` samples in
        // order whose records each decode their own images (the per-record path).
        let per_record = cfg.blocks.is_none();
        let blocks = Arc::new(
            BlockPlan::new(
                cfg.blocks.unwrap_or(BlockConfig {
                    images: cfg.batch.max(1) as u32,
                    bytes: u64::MAX,
                    order: BlockOrder::Sequential,
                }),
                cfg.seed,
                range,
                // Without a byte bound (the per-record path) sizes decide nothing: read none.
                &|s| match per_record {
                    true => Ok(0),
                    false => data
                        .dims(s)
                        .map(|(w, h)| u64::from(w) * u64::from(h) * u64::from(c)),
                },
            )
            .map_err(|e| InferError::Model {
                file: PathBuf::from("dataset"),
                what: e.to_string(),
            })?,
        );
        // With blocks, partners come from the record's own block, so they are decoded already.
        let sampler = Arc::new(if per_record {
            sampler
        } else {
            sampler.with_plan(Arc::clone(&blocks))
        });
        let todo = plan_items(&blocks, writer, cfg.epochs, cfg.batch);
        let labelled: u64 = todo.iter().map(|it| it.positions.len() as u64).sum();
        // Records a resumed run finds already on disk count as done for the progress callback.
        let already = u64::from(range.len()) * u64::from(cfg.epochs) - labelled;
        // Each block's images are decoded by the first item that needs them and kept until the
        // block's last item is done (about two blocks in memory); the per-record path decodes
        // every use.
        let images = Arc::new(if per_record {
            DecodeCache::uncached(Arc::clone(data))
        } else {
            let mut items = vec![0usize; blocks.len()];
            for it in &todo {
                items[it.block as usize] += 1;
            }
            let members: Vec<Vec<u32>> = (0..blocks.len())
                .map(|b| blocks.block(b).to_vec())
                .collect();
            DecodeCache::new(Arc::clone(data), range, &members, &items)
        });
        Ok(LabelPlan {
            channels: c,
            size,
            sampler,
            blocks,
            todo,
            images,
            labelled,
            already,
        })
    }

    /// The batches, built in order on `cfg.threads` loader threads: each item's records
    /// sampled, then made into the teacher's inputs by the one batch builder
    /// ([`replay::batch::build`], images through the shared decode cache), in a buffer from
    /// `spare` when the teacher thread has returned one.
    fn batches(
        &self,
        cfg: &LabelConfig,
        spare: crossbeam_channel::Receiver<Vec<f32>>,
    ) -> Loader<Result<Batch, String>> {
        let (sampler, todo, images) = (
            Arc::clone(&self.sampler),
            self.todo.clone(),
            Arc::clone(&self.images),
        );
        let (data, plan) = (Arc::clone(&cfg.data), Arc::clone(&self.blocks));
        let spec = ViewSpec {
            rule: formats::view::ViewRule::of_recipe(&cfg.recipe),
            size: self.size,
            scale: cfg.scale,
            mean: cfg.mean.clone(),
            std: cfg.std.clone(),
            pixels: false,
        };
        Loader::new(
            todo.len(),
            cfg.threads,
            // Each worker a batch in hand and two waiting, as before the gate was global.
            3 * cfg.threads.max(1),
            move |i| -> Result<Batch, String> {
                let it = &todo[i];
                let (epoch, block) = (it.epoch, it.block);
                let samples = plan.block(block as usize)[it.positions.clone()].to_vec();
                let at = |e: ReplayError| match e {
                    ReplayError::Sample { sample, what } => {
                        format!("sample {sample} (epoch {epoch}): {what}")
                    }
                    other => format!("epoch {epoch}: {other}"),
                };
                let result = (|| {
                    let dims = |j: u32| data.dims(j);
                    let aug = samples
                        .iter()
                        .map(|&s| {
                            sampler
                                .sample(epoch, s, &dims)
                                .map_err(|e| format!("sample {s} (epoch {epoch}): {e}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let rows: Vec<(u32, u32)> = samples.iter().map(|&s| (s, block)).collect();
                    // A buffer the teacher thread is done with, when there is one.
                    let reuse = spare.try_recv().unwrap_or_default();
                    let built =
                        replay::batch::build(&spec, data.as_ref(), &images, &rows, &aug, reuse)
                            .map_err(at)?;
                    let Inputs::F32(pixels) = built.inputs else {
                        unreachable!("a ViewSpec without `pixels` builds f32 inputs")
                    };
                    Ok(Batch {
                        epoch,
                        block,
                        samples,
                        pixels,
                        aug,
                        truth: built.mixed,
                    })
                })();
                images.item_done(block);
                result
            },
        )
    }
}

/// One loader item: a batch of consecutive positions of one block, in one epoch.
#[derive(Clone, Debug)]
struct Item {
    block: u32,
    epoch: u32,
    positions: Range<usize>,
}

/// The batches still to label: block by block, and within a block epoch by epoch, so each epoch
/// stream gets its samples in order (sequential blocks) and a block's records all come before
/// the next block's (staged blocks). A resumed run skips what is on disk: records before each
/// epoch's next sample (in order), or whole staged blocks.
fn plan_items(plan: &BlockPlan, writer: &StoreWriter, epochs: u32, batch: usize) -> Vec<Item> {
    let batch = batch.max(1);
    let staged = writer.staged_groups();
    let mut todo = Vec::new();
    for b in 0..plan.len() {
        if staged.is_some_and(|g| (b as u64) < g) {
            continue;
        }
        let block = plan.block(b);
        for epoch in 0..epochs {
            // Sequential blocks are contiguous runs of samples: skip those already written.
            let from = match staged {
                Some(_) => 0,
                None => block.partition_point(|&s| s < writer.next_sample(epoch)),
            };
            let mut at = from;
            while at < block.len() {
                let end = (at + batch).min(block.len());
                todo.push(Item {
                    block: b as u32,
                    epoch,
                    positions: at..end,
                });
                at = end;
            }
        }
    }
    todo
}

/// Checks `cfg.mean` and `cfg.std` have a value per channel of the data and no zero std.
pub(crate) fn check_normalization(cfg: &LabelConfig) -> Result<(), InferError> {
    let c = cfg.data.channels();
    for (field, v) in [("mean", &cfg.mean), ("std", &cfg.std)] {
        if v.len() != usize::from(c) {
            return Err(InferError::Invalid {
                field,
                what: format!("{} values for {c} channels", v.len()),
            });
        }
    }
    if cfg.std.contains(&0.0) {
        return Err(InferError::Invalid {
            field: "std",
            what: "a standard deviation of 0".into(),
        });
    }
    Ok(())
}

/// With `feature_basis`, each feature head's basis from the file (matched by teacher and output;
/// a head without one is an error naming it), recorded in the draft (`stored_dim` d, the file's
/// checksum); empty without.
fn head_bases(
    cfg: &LabelConfig,
    draft: &mut Manifest,
) -> Result<Vec<Option<Arc<formats::basis::Basis>>>, InferError> {
    let (Some(path), Some(f)) = (&cfg.feature_basis, draft.features.as_mut()) else {
        return Ok(Vec::new());
    };
    let bytes = std::fs::read(path).map_err(|source| InferError::Io {
        path: path.clone(),
        source,
    })?;
    let file = formats::basis::BasisFile::from_bytes(&bytes).map_err(|e| InferError::Model {
        file: path.clone(),
        what: e.to_string(),
    })?;
    let checksum = file.checksum();
    let mut out = Vec::with_capacity(f.heads.len());
    for head in &mut f.heads {
        let teacher = &draft.teachers[head.teacher as usize];
        let b = file.find(&teacher.sha256, &head.output).ok_or_else(|| InferError::Model {
            file: path.clone(),
            what: format!(
                "has no basis for output {:?} of {} (fit one with `distill features fit` on this teacher)",
                head.output, teacher.file
            ),
        })?;
        if b.dim != head.dim {
            return Err(InferError::Model {
                file: path.clone(),
                what: format!(
                    "its basis for {:?} projects {} dimensions, the output has {}",
                    head.output, b.dim, head.dim
                ),
            });
        }
        head.stored_dim = b.stored_dim() as u32;
        head.basis = Some(formats::basis::BasisRef {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            checksum: checksum.clone(),
        });
        out.push(Some(Arc::new(b.clone())));
    }
    Ok(out)
}

fn draft_manifest(
    cfg: &LabelConfig,
    sessions: &[TeacherSession],
    range: SampleRange,
    (classes, k): (u32, u32),
    (w, h): (u32, u32),
    probe: formats::DecodeProbe,
) -> Manifest {
    let heads: Vec<formats::FeatureHead> = sessions
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.feature.as_ref().map(|f| formats::FeatureHead {
                teacher: i as u32,
                output: f.name.clone(),
                dim: f.dim,
                stored_dim: f.dim,
                basis: None,
                shards: vec![],
                quality: Default::default(),
            })
        })
        .collect();
    let mut m = Manifest {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        creator: concat!("distill ", env!("CARGO_PKG_VERSION")).into(),
        created: formats::manifest::now_rfc3339(),
        teachers: sessions.iter().map(TeacherSession::info).collect(),
        dataset: cfg.data.fingerprint().clone(),
        datasets: cfg.data.parts().to_vec(),
        recipe: serde_json::to_value(&cfg.recipe).unwrap_or_default(),
        seed: cfg.seed,
        epochs: cfg.epochs,
        classes,
        k,
        codec: cfg.codec,
        chunk_records: cfg.chunk_records,
        samples: range,
        shards: vec![],
        quality: Quality::default(),
        decode_probe: Some(probe),
        blocks: cfg.blocks,
        teacher_input: Some(formats::manifest::TeacherInput {
            width: w,
            height: h,
            scale: Some(cfg.scale),
            mean: Some(cfg.mean.clone()),
            std: Some(cfg.std.clone()),
            ensemble: Some(cfg.ensemble.name().into()),
            sources: cfg.sources.clone(),
        }),
        features: (!heads.is_empty()).then_some(formats::Features {
            codec: cfg.feature_codec,
            heads,
        }),
        extra: Default::default(),
    };
    // The lowest version that describes it, so older readers read what they can.
    m.format_version = m.needed_version();
    m
}

#[cfg(test)]
mod tests {
    use super::file_cuts;

    #[test]
    fn jobs_cut_on_the_file_start_nearest_the_even_cut_and_each_gets_a_file() {
        assert_eq!(
            file_cuts(&[0, 10, 20, 30, 40], 50, 5),
            [0, 10, 20, 30, 40, 50]
        );
        assert_eq!(file_cuts(&[0, 10, 20, 30, 40], 50, 2), [0, 20, 50]);
        assert_eq!(file_cuts(&[0, 10, 20, 30, 40], 50, 1), [0, 50]);
        // Uneven files: the nearest start, even when that leaves one job far larger.
        assert_eq!(file_cuts(&[0, 1, 2, 100], 101, 2), [0, 2, 101]);
        // As many jobs as files: one file each, however near the even cuts are.
        assert_eq!(file_cuts(&[0, 1, 2, 100], 101, 4), [0, 1, 2, 100, 101]);
    }
}
