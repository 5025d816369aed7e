//! Synthetic label stores for tests, benchmarks and trying the store without a teacher.
//!
//! The teacher model is a peaked softmax over `classes`: every logit is Gaussian noise
//! (σ = 1.5), the sample's true class gets a margin of 8–16 nats, two "sibling" classes part of
//! it, and a mixed record scales each class's margin by (1 + w)/2 for its weight w. Augmentations are
//! drawn by distill's own sampler with the `usi` recipe on ImageNet-sized sources (300–500 px
//! sides, 224 px output): random-resized crop, flip, and always a mix (half mixup with
//! λ ~ Beta(0.8, 0.8), half cutmix with λ ~ Beta(1, 1)). Every draw comes from ChaCha8 keyed by
//! the seed, with the stream chosen by (epoch, sample), so any record can be regenerated alone.

use formats::{
    DatasetFingerprint, FORMAT_NAME, FORMAT_VERSION, Manifest, Quality, Recipe, Record,
    SampleRange, SoftLabel, ValueCodec,
};
use label_store::{DEFAULT_ZSTD_LEVEL, OpenMode, RecordQuality, Result, StoreWriter};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use replay::sampler::Sampler;
use std::path::Path;

/// Output side of the synthetic augmentation.
pub const OUT_SIZE: u16 = 224;

/// Shape of a synthetic dataset and its labels.
#[derive(Clone, Copy, Debug)]
pub struct SynthConfig {
    pub samples: u32,
    pub classes: u32,
    pub k: u32,
    pub seed: u64,
}

/// One synthetic record with the full logits it was made from.
pub struct SynthSample {
    pub record: Record,
    pub logits: Vec<f32>,
    /// Ground-truth class of the sample.
    pub class: u32,
}

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Per-sample facts that do not change between epochs: (class, width, height).
fn intrinsic(cfg: &SynthConfig, sample: u32) -> (u32, u16, u16) {
    let mut r = rng(cfg.seed, (1 << 63) | u64::from(sample));
    let class = r.random_range(0..cfg.classes);
    (class, r.random_range(300..=500), r.random_range(300..=500))
}

/// The sampler of a synthetic store: distill's own, with the `usi` recipe (random-resized crop,
/// flip, always a mix: half mixup, half cutmix) at [`OUT_SIZE`].
fn sampler(cfg: &SynthConfig) -> Sampler {
    Sampler::new(
        &Recipe::usi(),
        cfg.seed,
        cfg.samples,
        u32::from(OUT_SIZE),
        u32::from(OUT_SIZE),
    )
    .expect("the usi recipe at 224 px is valid")
}

/// The record of (`epoch`, `sample`).
pub fn sample(cfg: &SynthConfig, epoch: u32, sample: u32) -> SynthSample {
    let (class, _, _) = intrinsic(cfg, sample);
    let dims = |s: u32| {
        let (_, w, h) = intrinsic(cfg, s);
        Ok((u32::from(w), u32::from(h)))
    };
    let aug = sampler(cfg)
        .sample(epoch, sample, &dims)
        .expect("synthetic sources are 300-500 px");
    let mix = aug.mix.expect("the usi recipe mixes every record");
    let (pclass, _, _) = intrinsic(cfg, mix.partner);
    let lam = mix.primary_weight(u32::from(OUT_SIZE), u32::from(OUT_SIZE));
    // The teacher's noise draws from a stream of its own (the sampler's is keyed by the same
    // (seed, epoch, sample)).
    let mut r = rng(
        cfg.seed ^ LOGIT_SEED,
        (u64::from(epoch) << 32) | u64::from(sample),
    );
    let c = cfg.classes as usize;
    let mut logits: Vec<f32> = (0..c)
        .map(|_| 1.5 * r.sample::<f32, _>(StandardNormal))
        .collect();
    for (cls, weight) in [(class, lam), (pclass, 1.0 - lam)] {
        // A teacher still sees both objects of a mixed image: margins shrink sub-linearly.
        let margin =
            r.random_range(8.0f32..16.0) * (0.5 + 0.5 * weight) * (weight > 0.0) as u8 as f32;
        logits[cls as usize] += margin;
        for sib in [1, 2] {
            let s = (cls as usize ^ sib) % c;
            logits[s] += margin * r.random_range(0.0f32..0.6);
        }
    }
    let label = SoftLabel::from_logits(&logits, cfg.k as usize).expect("finite synthetic logits");
    SynthSample {
        record: Record { aug, label },
        logits,
        class,
    }
}

/// Separates the synthetic teacher's random stream from the sampler's.
const LOGIT_SEED: u64 = 0x5eed_1061_7500_u64;

/// The manifest draft of a synthetic store over all samples.
pub fn draft(cfg: &SynthConfig, epochs: u32, codec: ValueCodec, chunk_records: u32) -> Manifest {
    let labels: Vec<u8> = (0..cfg.samples)
        .flat_map(|s| intrinsic(cfg, s).0.to_le_bytes())
        .collect();
    let content = format!("synthetic seed={} classes={}", cfg.seed, cfg.classes);
    let mut m = Manifest {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        creator: concat!("distill ", env!("CARGO_PKG_VERSION"), " synth").into(),
        created: formats::manifest::now_rfc3339(),
        teachers: vec![],
        dataset: DatasetFingerprint {
            format: "synthetic".into(),
            split: "train".into(),
            samples: u64::from(cfg.samples),
            labels_xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&labels)),
            content_xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(content.as_bytes())),
            labelled: true,
        },
        datasets: vec![],
        recipe: serde_json::to_value(Recipe::usi()).expect("a recipe is JSON"),
        seed: cfg.seed,
        epochs,
        classes: cfg.classes,
        k: cfg.k,
        codec,
        chunk_records,
        samples: SampleRange {
            start: 0,
            end: cfg.samples,
        },
        shards: vec![],
        quality: Quality::default(),
        decode_probe: None,
        blocks: None,
        teacher_input: None,
        features: None,
        extra: Default::default(),
    };
    // The lowest version that describes it, as labelling writes (readers of older versions
    // read it).
    m.format_version = m.needed_version();
    m
}

/// What `write_store` measures per record besides writing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Reconstruction KL at τ = 1 and 4 for every record (slow for many classes).
    All,
    /// For every `n`-th sample only.
    Every(u32),
    None,
}

/// How [`write_store`] writes.
#[derive(Clone, Copy, Debug)]
pub struct WriteOptions {
    pub epochs: u32,
    pub codec: ValueCodec,
    pub chunk_records: u32,
    pub measure: Measure,
    /// Threads generating records.
    pub threads: usize,
}

/// Writes a whole synthetic store to `dir` (all epochs interleaved block by block, as a
/// labelling pipeline that decodes each image once would). `on_block` is called with the number
/// of records written after each block.
pub fn write_store(
    dir: &Path,
    cfg: &SynthConfig,
    opts: &WriteOptions,
    mut on_block: impl FnMut(u64),
) -> Result<Manifest> {
    let WriteOptions {
        epochs,
        codec,
        chunk_records,
        measure,
        threads,
    } = *opts;
    let mut w = StoreWriter::open(
        dir,
        draft(cfg, epochs, codec, chunk_records),
        OpenMode::Overwrite,
        DEFAULT_ZSTD_LEVEL,
    )?;
    let block = 4096u32;
    let threads = threads.max(1);
    let mut start = 0;
    while start < cfg.samples {
        let end = (start + block).min(cfg.samples);
        // Generate (epoch, sample) pairs of the block in parallel, then append in order.
        let jobs: Vec<(u32, u32)> = (start..end)
            .flat_map(|s| (0..epochs).map(move |e| (e, s)))
            .collect();
        let per = jobs.len().div_ceil(threads);
        let made: Vec<Vec<(u32, u32, Record, RecordQuality)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .chunks(per.max(1))
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|&(e, s)| {
                                let x = sample(cfg, e, s);
                                let measured = match measure {
                                    Measure::All => true,
                                    Measure::Every(n) => s % n.max(1) == 0,
                                    Measure::None => false,
                                };
                                let q = RecordQuality {
                                    reconstruction_kl: measured.then(|| {
                                        (
                                            x.record.label.kl_from_full(&x.logits, 1.0),
                                            x.record.label.kl_from_full(&x.logits, 4.0),
                                        )
                                    }),
                                    teacher_correct: None,
                                };
                                (e, s, x.record, q)
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("generator thread"))
                .collect()
        });
        for (e, s, rec, q) in made.into_iter().flatten() {
            w.append(e, s, &rec, &q)?;
        }
        on_block(u64::from(end - start) * u64::from(epochs));
        start = end;
    }
    w.finish()
}
