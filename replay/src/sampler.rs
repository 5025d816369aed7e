//! Augmentation recipes and the sampling of realized parameters.
//!
//! [`Sampler::sample`] is a pure function of (recipe, seed, epoch, sample index, image sizes):
//! every draw comes from ChaCha8 keyed by the seed with the stream `epoch << 32 | index`, so the
//! parameters of a record never depend on thread order or batch position, and the mix partner is
//! drawn the same way. The result is an [`AugParams`] holding realized values; the store keeps
//! it, and both stages hand it to [`crate::apply::apply`].
//!
//! The vocabulary is timm's, as USI uses it: random-resized crop (scale, log-uniform ratio, ten
//! attempts then a centre crop), horizontal flip, random erasing ("cutout": one box;
//! unlike timm, which erases each source before mixing and in normalized space, it is erased
//! after mixing, to pixel value 0),
//! mixup (λ ~ Beta(α, α), a pixel blend) and cutmix (λ ~ Beta(α, α), a box of side √(1−λ) centred
//! uniformly and clipped; the realized weight comes from the clipped area), a switch probability
//! between them and a probability of mixing at all.

use crate::block::BlockPlan;
use crate::error::ReplayError;
use datasets::DataError;
use formats::Recipe;
use formats::aug::{AugParams, Mix, MixKind, PixelBox};
use formats::manifest::SampleRange;
use formats::recipe::{CropConfig, CutoutConfig};
use formats::{BlockConfig, BlockOrder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

use std::sync::Arc;

/// A built-in recipe (`none`, `light`, `usi`, `center`) or a TOML recipe file; a file that
/// cannot be read or is not a recipe is an error naming it.
pub fn load_recipe(name_or_path: &str) -> Result<Recipe, ReplayError> {
    if let Some(r) = Recipe::builtin(name_or_path) {
        return Ok(r);
    }
    let p = std::path::Path::new(name_or_path);
    let text = std::fs::read_to_string(p).map_err(|source| ReplayError::Io {
        path: p.to_path_buf(),
        source,
    })?;
    Recipe::from_toml(&text).map_err(|e| ReplayError::Config(format!("{}: {e}", p.display())))
}

/// Whether the recipe `name_or_path` names its filter itself (a TOML file with an
/// `interpolation` key); the built-in recipes leave it to the flags and the teacher.
pub fn recipe_names_interpolation(name_or_path: &str) -> bool {
    Recipe::builtin(name_or_path).is_none()
        && std::fs::read_to_string(name_or_path).is_ok_and(|t| Recipe::toml_names_interpolation(&t))
}

/// The crop box, in source pixels, of a centre crop (torchvision's `Resize` of the whole image
/// to a shorter side of `floor(min(out) / crop_pct)`, timm's `scale_size`, then `CenterCrop`;
/// [`crate::resample::center_view`]): the region of the source the output covers, rounded to
/// whole pixels. Replay does not resize this box: it recomputes the view from the image size
/// (FORMAT.md §4.1); the box describes the record for `inspect` and readers.
pub fn center_box(
    (w, h): (u32, u32),
    (ow, oh): (u32, u32),
    crop_pct: f64,
    index: u32,
) -> Result<PixelBox, ReplayError> {
    check_source((w, h), index)?;
    let v = crate::resample::center_view((w, h), (ow, oh), crop_pct)
        .map_err(|e| ReplayError::invalid("center", format!("sample {index}: {e}")))?;
    let side = |s: crate::resample::Span| {
        let at = |i: u32| (f64::from(i) * f64::from(s.len) / f64::from(s.full)).round() as u32;
        let a = at(s.start).min(s.len - 1);
        let b = at(s.start + s.count).clamp(a + 1, s.len);
        (a as u16, (b - a) as u16)
    };
    let ((x, cw), (y, ch)) = (side(v.xs), side(v.ys));
    Ok(PixelBox::new(x, y, cw, ch))
}

/// A source image's sides must fit the crop boxes' u16 fields.
fn check_source((w, h): (u32, u32), index: u32) -> Result<(), ReplayError> {
    if w == 0 || h == 0 || w > 65535 || h > 65535 {
        return Err(ReplayError::invalid(
            "image size",
            format!("sample {index} is {w}x{h}; sides must be 1..=65535"),
        ));
    }
    Ok(())
}

/// The RNG of one record.
pub fn record_rng(seed: u64, epoch: u32, index: u32) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream((u64::from(epoch) << 32) | u64::from(index));
    r
}

fn to_u16(v: u32, what: &str) -> Result<u16, ReplayError> {
    u16::try_from(v).map_err(|_| ReplayError::invalid(what, format!("{v} does not fit 16 bits")))
}

/// Samples the parameters of records for one recipe, seed, dataset size and output size.
pub struct Sampler {
    recipe: Recipe,
    seed: u64,
    samples: u32,
    out: (u32, u32),
    /// Partners are drawn inside this plan's blocks.
    plan: Option<Arc<BlockPlan>>,
}

impl Sampler {
    /// A sampler for `samples` samples and outputs of `out_w` × `out_h` pixels.
    pub fn new(
        recipe: &Recipe,
        seed: u64,
        samples: u32,
        out_w: u32,
        out_h: u32,
    ) -> Result<Self, ReplayError> {
        recipe.validate()?;
        if samples == 0 {
            return Err(ReplayError::invalid("samples", "the dataset is empty"));
        }
        if out_w == 0 || out_h == 0 {
            return Err(ReplayError::invalid(
                "output size",
                format!("{out_w}x{out_h} has no pixels"),
            ));
        }
        to_u16(out_w, "output width")?;
        to_u16(out_h, "output height")?;
        // A recipe's own `partner_block`: blocks of that many samples of a permutation of the
        // whole dataset (no byte bound); a labelling pipeline replaces it with its own plan.
        let plan = match recipe.mix.as_ref().and_then(|m| m.partner_block) {
            Some(images) => Some(Arc::new(BlockPlan::new(
                BlockConfig {
                    images,
                    bytes: u64::MAX,
                    order: BlockOrder::Permuted,
                },
                seed,
                SampleRange {
                    start: 0,
                    end: samples,
                },
                &|_| Ok(0),
            )?)),
            None => None,
        };
        Ok(Sampler {
            recipe: recipe.clone(),
            seed,
            samples,
            out: (out_w, out_h),
            plan,
        })
    }

    /// Draws mix partners inside the blocks of `plan` (the labelling pipeline's decode-once
    /// blocks) instead of from the whole dataset.
    pub fn with_plan(mut self, plan: Arc<BlockPlan>) -> Self {
        self.plan = Some(plan);
        self
    }

    /// The recipe records are sampled from.
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The block plan partners are drawn in, if any.
    pub fn plan(&self) -> Option<&BlockPlan> {
        self.plan.as_deref()
    }

    /// The realized augmentation of (`epoch`, `index`); `dims(i)` gives the (width, height) of
    /// sample `i` (the primary and, when mixed, the partner).
    pub fn sample(
        &self,
        epoch: u32,
        index: u32,
        dims: &dyn Fn(u32) -> Result<(u32, u32), DataError>,
    ) -> Result<AugParams, ReplayError> {
        if index >= self.samples {
            return Err(ReplayError::invalid(
                "index",
                format!("sample {index} is beyond the {} samples", self.samples),
            ));
        }
        let rec = &self.recipe;
        if let Some(c) = &rec.center {
            return Ok(AugParams {
                crop: Some(center_box(dims(index)?, self.out, c.crop_pct, index)?),
                ..AugParams::default()
            });
        }
        let r = &mut record_rng(self.seed, epoch, index);
        let crop = match &rec.crop {
            Some(c) => Some(self.crop(r, c, dims(index)?, index)?),
            None => None,
        };
        let flip = r.random::<f32>() < rec.flip;
        let mut mix = None;
        if let Some(m) = &rec.mix
            && r.random::<f32>() < m.prob
            && self.samples > 1
        {
            let partner = self.partner(r, index);
            let partner_crop = match &rec.crop {
                Some(c) => Some(self.crop(r, c, dims(partner)?, partner)?),
                None => None,
            };
            let partner_flip = r.random::<f32>() < rec.flip;
            let cutmix = if m.mixup_alpha > 0.0 && m.cutmix_alpha > 0.0 {
                r.random::<f32>() < m.switch_prob
            } else {
                m.cutmix_alpha > 0.0
            };
            let kind = if cutmix {
                let lam = beta(r, m.cutmix_alpha);
                MixKind::Cutmix {
                    region: self.cutmix_box(r, lam),
                }
            } else {
                let lam = beta(r, m.mixup_alpha);
                MixKind::Mixup {
                    lambda_q: (lam * 65535.0).round().clamp(0.0, 65535.0) as u16,
                }
            };
            mix = Some(Mix {
                partner,
                partner_crop,
                partner_flip,
                kind,
            });
        }
        let cutout = match &rec.cutout {
            Some(c) if r.random::<f32>() < c.prob => self.cutout(r, c),
            _ => None,
        };
        Ok(AugParams {
            crop,
            flip,
            cutout,
            mix,
        })
    }

    fn partner(&self, r: &mut ChaCha8Rng, index: u32) -> u32 {
        if let Some(plan) = &self.plan
            && let Some((b, i)) = plan.locate(index)
        {
            let block = plan.block(b);
            if block.len() >= 2 {
                let j = r.random_range(0..block.len() - 1);
                return block[if j >= i { j + 1 } else { j }];
            }
            // A block of one sample mixes with a sample of the blocks before it.
            let before = plan.before(b);
            if !before.is_empty() {
                return before[r.random_range(0..before.len())];
            }
        }
        let j = r.random_range(0..self.samples - 1);
        if j >= index { j + 1 } else { j }
    }

    /// timm's `RandomResizedCrop.get_params`.
    fn crop(
        &self,
        r: &mut ChaCha8Rng,
        c: &CropConfig,
        (w, h): (u32, u32),
        index: u32,
    ) -> Result<PixelBox, ReplayError> {
        check_source((w, h), index)?;
        let area = f64::from(w) * f64::from(h);
        let (lr0, lr1) = (f64::from(c.ratio[0]).ln(), f64::from(c.ratio[1]).ln());
        for _ in 0..10 {
            let target = area * uniform(r, f64::from(c.scale[0]), f64::from(c.scale[1]));
            let ratio = uniform(r, lr0, lr1).exp();
            let cw = (target * ratio).sqrt().round() as u32;
            let ch = (target / ratio).sqrt().round() as u32;
            if cw > 0 && ch > 0 && cw <= w && ch <= h {
                let x = r.random_range(0..=w - cw);
                let y = r.random_range(0..=h - ch);
                return Ok(PixelBox::new(x as u16, y as u16, cw as u16, ch as u16));
            }
        }
        // Fallback: centre crop at the nearest allowed ratio.
        let in_ratio = f64::from(w) / f64::from(h);
        let (cw, ch) = if in_ratio < f64::from(c.ratio[0]) {
            (
                w,
                ((f64::from(w) / f64::from(c.ratio[0])).round() as u32).clamp(1, h),
            )
        } else if in_ratio > f64::from(c.ratio[1]) {
            (
                ((f64::from(h) * f64::from(c.ratio[1])).round() as u32).clamp(1, w),
                h,
            )
        } else {
            (w, h)
        };
        Ok(PixelBox::new(
            ((w - cw) / 2) as u16,
            ((h - ch) / 2) as u16,
            cw as u16,
            ch as u16,
        ))
    }

    /// timm's `rand_bbox`: a box of side √(1−λ) of the output, centred uniformly, clipped.
    fn cutmix_box(&self, r: &mut ChaCha8Rng, lam: f64) -> PixelBox {
        let (w, h) = (self.out.0 as i64, self.out.1 as i64);
        let cut = (1.0 - lam).sqrt();
        let (cw, ch) = ((w as f64 * cut) as i64, (h as f64 * cut) as i64);
        let (cx, cy) = (r.random_range(0..w), r.random_range(0..h));
        let (x0, x1) = ((cx - cw / 2).clamp(0, w), (cx + cw / 2).clamp(0, w));
        let (y0, y1) = ((cy - ch / 2).clamp(0, h), (cy + ch / 2).clamp(0, h));
        PixelBox::new(x0 as u16, y0 as u16, (x1 - x0) as u16, (y1 - y0) as u16)
    }

    /// timm's `RandomErasing` box (one box, ten attempts).
    fn cutout(&self, r: &mut ChaCha8Rng, c: &CutoutConfig) -> Option<PixelBox> {
        let (w, h) = self.out;
        let area = f64::from(w) * f64::from(h);
        let (lr0, lr1) = (f64::from(c.ratio[0]).ln(), f64::from(c.ratio[1]).ln());
        for _ in 0..10 {
            let target = area * uniform(r, f64::from(c.scale[0]), f64::from(c.scale[1]));
            let ratio = uniform(r, lr0, lr1).exp();
            let eh = (target * ratio).sqrt().round() as u32;
            let ew = (target / ratio).sqrt().round() as u32;
            if ew > 0 && eh > 0 && ew < w && eh < h {
                let x = r.random_range(0..=w - ew);
                let y = r.random_range(0..=h - eh);
                return Some(PixelBox::new(x as u16, y as u16, ew as u16, eh as u16));
            }
        }
        None
    }
}

fn uniform(r: &mut ChaCha8Rng, a: f64, b: f64) -> f64 {
    if a == b { a } else { r.random_range(a..b) }
}

fn beta(r: &mut ChaCha8Rng, alpha: f32) -> f64 {
    Beta::new(f64::from(alpha), f64::from(alpha))
        .expect("validated alpha > 0")
        .sample(r)
}

/// The hard label of a record for cross-entropy: `primary` with weight `primary_weight`, the
/// rest on `partner` (λ·y_i + (1−λ)·y_j; for cutmix λ comes from the real box area).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixedLabel {
    pub primary: u32,
    pub partner: Option<u32>,
    pub primary_weight: f32,
}

impl MixedLabel {
    /// The mixed label of a record with `params`, whose primary has label `primary` and partner
    /// (if mixed) `partner_label`, for an output of `out_w` × `out_h`.
    pub fn new(
        params: &AugParams,
        primary: u32,
        partner_label: u32,
        out_w: u32,
        out_h: u32,
    ) -> Self {
        match &params.mix {
            Some(m) => MixedLabel {
                primary,
                partner: Some(partner_label),
                primary_weight: m.primary_weight(out_w, out_h),
            },
            None => MixedLabel {
                primary,
                partner: None,
                primary_weight: 1.0,
            },
        }
    }

    /// The label as a dense distribution over `classes`.
    pub fn dense_into(&self, out: &mut [f32]) {
        out.fill(0.0);
        out[self.primary as usize] += self.primary_weight;
        if let Some(p) = self.partner {
            out[p as usize] += 1.0 - self.primary_weight;
        }
    }
}
