//! Synthetic records for tests, benchmarks and trying the store without a teacher.
//!
//! The teacher model is a peaked softmax over `classes`: every logit is Gaussian noise
//! (σ = 1.5), the sample's true class gets a margin of 8–16 nats, two "sibling" classes part of
//! it, and a mixed record scales each class's margin by (1 + w)/2 for its weight w. Augmentations follow
//! the `usi` recipe on ImageNet-sized sources (300–500 px sides, 224 px output): random-resized
//! crop, flip, and always a mix (half mixup with λ ~ Beta(0.8, 0.8), half cutmix with
//! λ ~ Beta(1, 1)) with a uniformly drawn partner. Every draw comes from ChaCha8 keyed by the
//! seed, with the stream chosen by (epoch, sample), so any record can be regenerated alone.

use crate::error::Result;
use crate::writer::{DEFAULT_ZSTD_LEVEL, OpenMode, RecordQuality, StoreWriter};
use formats::{
    AugParams, DatasetFingerprint, FORMAT_NAME, FORMAT_VERSION, Manifest, Mix, MixKind, PixelBox,
    Quality, Record, SampleRange, SoftLabel, ValueCodec,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, StandardNormal};
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

/// timm-style random-resized crop of a `w` × `h` source.
fn random_resized_crop(r: &mut ChaCha8Rng, w: u16, h: u16) -> PixelBox {
    let area = f64::from(w) * f64::from(h);
    for _ in 0..10 {
        let target = area * r.random_range(0.08..1.0);
        let log_ratio = r.random_range((3.0f64 / 4.0).ln()..(4.0f64 / 3.0).ln());
        let ratio = log_ratio.exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw >= 1 && ch >= 1 && cw <= u32::from(w) && ch <= u32::from(h) {
            let x = r.random_range(0..=u32::from(w) - cw);
            let y = r.random_range(0..=u32::from(h) - ch);
            return PixelBox::new(x as u16, y as u16, cw as u16, ch as u16);
        }
    }
    let s = w.min(h);
    PixelBox::new((w - s) / 2, (h - s) / 2, s, s)
}

/// The record of (`epoch`, `sample`).
pub fn sample(cfg: &SynthConfig, epoch: u32, sample: u32) -> SynthSample {
    let (class, w, h) = intrinsic(cfg, sample);
    let mut r = rng(cfg.seed, (u64::from(epoch) << 32) | u64::from(sample));
    let crop = random_resized_crop(&mut r, w, h);
    let flip = r.random_bool(0.5);
    let partner = r.random_range(0..cfg.samples);
    let (pclass, pw, ph) = intrinsic(cfg, partner);
    let partner_crop = random_resized_crop(&mut r, pw, ph);
    let partner_flip = r.random_bool(0.5);
    let kind = if r.random_bool(0.5) {
        let lambda: f64 = Beta::new(0.8, 0.8).expect("valid beta").sample(&mut r);
        MixKind::Mixup {
            lambda_q: (lambda * 65535.0).round() as u16,
        }
    } else {
        let lambda: f64 = Beta::new(1.0, 1.0).expect("valid beta").sample(&mut r);
        let cut = (1.0 - lambda).sqrt();
        let s = f64::from(OUT_SIZE);
        let (cw, ch) = ((s * cut) as i32, (s * cut) as i32);
        let (cx, cy) = (
            r.random_range(0..i32::from(OUT_SIZE)),
            r.random_range(0..i32::from(OUT_SIZE)),
        );
        let clip = |v: i32| v.clamp(0, i32::from(OUT_SIZE)) as u16;
        let (x0, x1) = (clip(cx - cw / 2), clip(cx + cw / 2));
        let (y0, y1) = (clip(cy - ch / 2), clip(cy + ch / 2));
        MixKind::Cutmix {
            region: PixelBox::new(x0, y0, x1 - x0, y1 - y0),
        }
    };
    let mix = Mix {
        partner,
        partner_crop: Some(partner_crop),
        partner_flip,
        kind,
    };
    let lam = mix.primary_weight(u32::from(OUT_SIZE), u32::from(OUT_SIZE));
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
        record: Record {
            aug: AugParams {
                crop: Some(crop),
                flip,
                cutout: None,
                mix: Some(mix),
            },
            label,
        },
        logits,
        class,
    }
}

/// The manifest draft of a synthetic store over all samples.
pub fn draft(cfg: &SynthConfig, epochs: u32, codec: ValueCodec, chunk_records: u32) -> Manifest {
    let labels: Vec<u8> = (0..cfg.samples)
        .flat_map(|s| intrinsic(cfg, s).0.to_le_bytes())
        .collect();
    let content = format!("synthetic seed={} classes={}", cfg.seed, cfg.classes);
    Manifest {
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
        },
        recipe: serde_json::json!({
            "name": "synthetic-usi",
            "out_size": OUT_SIZE,
            "random_resized_crop": {"scale": [0.08, 1.0], "ratio": [0.75, 1.3333]},
            "flip": 0.5, "mix_prob": 1.0, "switch_prob": 0.5, "mixup_alpha": 0.8, "cutmix_alpha": 1.0,
            "interpolation": "bilinear"
        }),
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
        extra: Default::default(),
    }
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
