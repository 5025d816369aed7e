//! The one batch builder: how every stage turns records (a sample, the decode group its images
//! are cached under, and its realized augmentation) into a batch's inputs. Labelling (the
//! teacher's inputs), the training stream, evaluation and the Python loader all build here, so
//! the teacher and every student see the same bits.
//!
//! Each row is replayed into u8 pixels ([`crate::apply::apply_u8`]); it either stays u8 (the
//! form a batch crosses to a device in) or becomes f32 at once: `v / 255`, a mixup's
//! `λ·a + (1−λ)·b` ([`crate::apply::combine_into`]), then `(v · scale − mean[c]) / std[c]`.

use crate::apply::apply_u8;
use crate::block::DecodeCache;
use crate::error::ReplayError;
use crate::sampler::MixedLabel;
use datasets::Dataset;
use formats::AugParams;
use formats::view::ViewRule;

/// How records become a batch's inputs.
#[derive(Clone, Debug)]
pub struct ViewSpec {
    /// The resize and centre-crop rule of the records (a store's, or the recipe's).
    pub rule: ViewRule,
    /// Input (width, height).
    pub size: (u32, u32),
    /// Input = (pixel / 255 · scale − mean[c]) / std[c]; students use 1, a teacher whatever
    /// it was trained with.
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Keep the u8 pixels ([`Inputs::U8`]) instead of normalized f32 inputs.
    pub pixels: bool,
}

/// What [`Built::labels`] holds for a sample without a hard label (unlabelled data).
pub const NO_LABEL: u32 = u32::MAX;

/// A built batch: its inputs, and each row's label and mixed label.
#[derive(Debug)]
pub struct Built {
    pub inputs: Inputs,
    /// The ground-truth label of each row's primary image; [`NO_LABEL`] where it has none.
    pub labels: Vec<u32>,
    /// Each row's hard label as mixed by its augmentation; `None` unless the primary image and
    /// (when mixed) its partner both have one.
    pub mixed: Vec<Option<MixedLabel>>,
}

/// Builds the batch of `rows` (sample, decode group; `u32::MAX`: none) with `params`, images
/// from `cache`. `floats` is reused for f32 inputs when it has the right length (every element
/// is written). Errors name the sample.
pub fn build(
    spec: &ViewSpec,
    data: &dyn Dataset,
    cache: &DecodeCache,
    rows: &[(u32, u32)],
    params: &[AugParams],
    mut floats: Vec<f32>,
) -> Result<Built, ReplayError> {
    let (w, h) = spec.size;
    let c = usize::from(data.channels());
    let per = c * (w * h) as usize;
    let n = rows.len();
    prefetch(cache, rows, params);
    // u8 rows for the whole batch (pixels), or one row at a time turned into f32 at once.
    let mut pixels = vec![0u8; if spec.pixels { n * per } else { per }];
    if spec.pixels {
        floats = Vec::new();
    } else if floats.len() != n * per {
        floats = vec![0f32; n * per];
    }
    let mut mix: Option<PixelMix> = None;
    let mut partner = vec![0u8; per];
    let mut labels = Vec::with_capacity(n);
    let mut mixed = Vec::with_capacity(n);
    for (i, (&(s, g), p)) in rows.iter().zip(params).enumerate() {
        let label = data.label(s);
        labels.push(label.unwrap_or(NO_LABEL));
        let row = i * per..(i + 1) * per;
        let px = if spec.pixels {
            &mut pixels[row.clone()]
        } else {
            &mut pixels[..]
        };
        let (lambda, partner_label) = render(spec, data, cache, s, g, p, px, &mut partner)?;
        if spec.pixels {
            if let Some(lam) = lambda {
                let m = mix.get_or_insert_with(|| PixelMix {
                    partner: vec![0; n * per],
                    lambda: vec![1.0; n],
                    rest: vec![0.0; n],
                });
                m.partner[row].copy_from_slice(&partner);
                m.lambda[i] = lam;
                m.rest[i] = 1.0 - lam;
            }
        } else {
            let out = &mut floats[row];
            let mix = lambda.map(|l| (&partner[..], l));
            finish_row(px, mix, out, c, spec.scale, &spec.mean, &spec.std);
        }
        mixed.push(match (label, partner_label) {
            (Some(l), None) => Some(MixedLabel::new(p, l, l, w, h)),
            (Some(l), Some(Some(pl))) => Some(MixedLabel::new(p, l, pl, w, h)),
            _ => None,
        });
    }
    let inputs = if spec.pixels {
        Inputs::U8(Pixels { n, pixels, mix })
    } else {
        Inputs::F32(floats)
    };
    Ok(Built {
        inputs,
        labels,
        mixed,
    })
}

/// Starts decoding every image the rows need (primaries and partners), group by group: what no
/// other thread is decoding first; [`DecodeCache::get`] then waits for the rest.
fn prefetch(cache: &DecodeCache, rows: &[(u32, u32)], params: &[AugParams]) {
    let mut wanted: Vec<(u32, u32)> = rows
        .iter()
        .map(|&(s, g)| (g, s))
        .chain(
            rows.iter()
                .zip(params)
                .filter_map(|(&(_, g), p)| p.mix.map(|m| (g, m.partner))),
        )
        .filter(|&(g, _)| g != u32::MAX)
        .collect();
    wanted.sort_unstable_by_key(|&(g, _)| g);
    for run in wanted.chunk_by(|a, b| a.0 == b.0) {
        let samples: Vec<u32> = run.iter().map(|&(_, s)| s).collect();
        cache.prefetch(run[0].0, &samples);
    }
}

/// Replays `params` on sample `s` (and its partner) into `out` and `partner_out` as u8 pixels,
/// images from `cache` for decode group `group`; returns λ for a mixup and, when mixed, the
/// partner's label (if it has one).
#[allow(clippy::too_many_arguments)] // the spec, the data, a record and two outputs
fn render(
    spec: &ViewSpec,
    data: &dyn Dataset,
    cache: &DecodeCache,
    s: u32,
    group: u32,
    params: &AugParams,
    out: &mut [u8],
    partner_out: &mut [u8],
) -> Result<(Option<f32>, Option<Option<u32>>), ReplayError> {
    let (w, h) = spec.size;
    let image = |j: u32| cache.get(group, j).map_err(|e| ReplayError::sample(j, e));
    let primary = image(s)?;
    let (partner, partner_label) = match &params.mix {
        Some(m) => {
            if m.partner >= data.len() {
                return Err(ReplayError::sample(
                    s,
                    format!(
                        "its mix partner {} is beyond the {} samples of the data",
                        m.partner,
                        data.len()
                    ),
                ));
            }
            (Some(image(m.partner)?), Some(data.label(m.partner)))
        }
        None => (None, None),
    };
    let lambda = apply_u8(
        &spec.rule,
        params,
        &primary,
        partner.as_deref(),
        w,
        h,
        out,
        partner_out,
    )
    .map_err(|e| ReplayError::sample(s, e.to_string()))?;
    Ok((lambda, partner_label))
}

/// A batch's inputs: f32 and normalized, or u8 pixels for a device to finish (a quarter of the
/// bytes to keep in memory and to upload).
#[derive(Clone, Debug)]
pub enum Inputs {
    /// `n × c × h × w` normalized inputs.
    F32(Vec<f32>),
    /// The u8 form of `crate::apply::apply_u8`.
    U8(Pixels),
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs::F32(Vec::new())
    }
}

/// A batch's inputs as u8 pixels (FORMAT.md §4.1 "Replaying in u8"): the input of row `i` is
/// `pixels/255`, or with `mix`, `λ_i·(pixels/255) + rest_i·(partner/255)` (λ = 1, rest = 0 and
/// a zero partner for rows that are not mixups), then normalized; each step the same IEEE
/// operation as [`Inputs::F32`] was made with, so a device gets the same bits.
#[derive(Clone, Debug)]
pub struct Pixels {
    /// Rows.
    pub n: usize,
    /// `n × c × h × w`.
    pub pixels: Vec<u8>,
    /// Present when a row of the batch is a mixup.
    pub mix: Option<PixelMix>,
}

/// The mixup half of [`Pixels`].
#[derive(Clone, Debug)]
pub struct PixelMix {
    /// `n × c × h × w` partner pixels (zero in rows that are not mixups).
    pub partner: Vec<u8>,
    /// λ per row, and `1 − λ` computed in f32 (as `apply` computes it).
    pub lambda: Vec<f32>,
    pub rest: Vec<f32>,
}

impl Inputs {
    /// The normalized f32 inputs, computing them from the pixels when the batch holds those:
    /// the same bits either way.
    pub fn to_f32(&self, channels: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
        self.to_f32_scaled(channels, 1.0, mean, std)
    }

    /// [`Inputs::to_f32`] as `(v · scale − mean[c]) / std[c]`: a teacher's inputs from the
    /// pixels a student's batch was built as, the bits labelling gives them.
    pub fn to_f32_scaled(
        &self,
        channels: usize,
        scale: f32,
        mean: &[f32],
        std: &[f32],
    ) -> Vec<f32> {
        match self {
            Inputs::F32(v) => v.clone(),
            Inputs::U8(p) => {
                let mut out = vec![0f32; p.pixels.len()];
                let per = p.pixels.len() / p.n.max(1);
                for (i, o) in out.chunks_mut(per.max(1)).enumerate() {
                    let row = i * per..(i + 1) * per;
                    // A row that is not a mixup has λ = 1 and a zero partner: 1·x + 0·0 = x.
                    let mix = p
                        .mix
                        .as_ref()
                        .map(|m| (&m.partner[row.clone()], m.lambda[i]));
                    finish_row(&p.pixels[row], mix, o, channels, scale, mean, std);
                }
                out
            }
        }
    }

    /// The f32 inputs, moved out when the batch holds them.
    pub fn into_f32(self, channels: usize, mean: &[f32], std: &[f32]) -> Vec<f32> {
        match self {
            Inputs::F32(v) => v,
            other => other.to_f32(channels, mean, std),
        }
    }
}

/// One record's normalized f32 input from its u8 form (`crate::apply::combine_into`, then
/// [`normalize`]): the single definition the f32 batches and [`Inputs::to_f32`] use.
fn finish_row(
    pixels: &[u8],
    mix: Option<(&[u8], f32)>,
    out: &mut [f32],
    channels: usize,
    scale: f32,
    mean: &[f32],
    std: &[f32],
) {
    crate::apply::combine_into(pixels, mix, out);
    normalize(out, channels, scale, mean, std);
}

/// `(v · scale − mean[c]) / std[c]` over each channel plane of a CHW buffer of [0, 1] pixels
/// (with scale 1, `v · 1` is `v` exactly: students' inputs are `(v − mean[c]) / std[c]`).
pub fn normalize(chw: &mut [f32], channels: usize, scale: f32, mean: &[f32], std: &[f32]) {
    let plane = chw.len() / channels.max(1);
    for (ch, p) in chw.chunks_mut(plane).enumerate() {
        let (m, inv) = (mean[ch], 1.0 / std[ch]);
        // `v · 1` is `v`: students' inputs skip the multiply (same bits, less work per pixel).
        if scale == 1.0 {
            for v in p {
                *v = (*v - m) * inv;
            }
        } else {
            for v in p {
                *v = (*v * scale - m) * inv;
            }
        }
    }
}
