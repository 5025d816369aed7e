//! Augmentation recipes (what a store records as `recipe`) and the resampling filter names.
//!
//! These are values only: the sampler that draws realized parameters from a recipe, and the
//! resampler that applies a filter, live in the replay crate.

use crate::error::FormatError;
use serde::{Deserialize, Serialize};

/// Pillow's resampling filters that distill replays (torchvision's `InterpolationMode`
/// `BILINEAR` and `BICUBIC` on PIL images). Bilinear is torchvision's default; most timm models
/// were trained and are evaluated with bicubic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Triangle filter, support 1 (scaled by the downscale factor).
    #[default]
    Bilinear,
    /// Keys' cubic convolution with a = −0.5, support 2 (scaled by the downscale factor).
    Bicubic,
}

impl Interpolation {
    /// Every filter, in the order `--help` lists them.
    pub const ALL: [Interpolation; 2] = [Interpolation::Bilinear, Interpolation::Bicubic];

    /// The name stores and flags use.
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        }
    }

    /// The filter called `name`; an unknown name is an error naming `field` and listing the
    /// known filters.
    pub fn parse(name: &str, field: &str) -> Result<Self, FormatError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                FormatError::invalid(
                    field,
                    format!("{name:?} is not a filter this build replays (bilinear, bicubic)"),
                )
            })
    }
}

impl std::fmt::Display for Interpolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Random-resized crop settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropConfig {
    /// Range of the crop's area as a fraction of the image.
    pub scale: [f32; 2],
    /// Range of the crop's width / height (sampled log-uniformly).
    pub ratio: [f32; 2],
}

/// Centre-crop evaluation, as timm and torchvision evaluate ImageNet models: resize the shorter
/// side to `output / crop_pct`, take the central output-sized region. Expressed as a crop box in
/// source pixels, so replay (FORMAT.md §4) is unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterConfig {
    /// Fraction of the resized shorter side that the crop keeps (0.875 for ImageNet at 224).
    /// f64, as Python holds it: `floor(size / crop_pct)` must round as timm's does.
    pub crop_pct: f64,
}

/// The default `crop_pct` of centre-crop evaluation (timm's and torchvision's 224/256).
pub const DEFAULT_CROP_PCT: f64 = 0.875;

/// Random erasing settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoutConfig {
    pub prob: f32,
    /// Range of the erased area as a fraction of the output.
    pub scale: [f32; 2],
    pub ratio: [f32; 2],
}

/// Mixup / cutmix settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixConfig {
    /// Probability that a record is mixed at all.
    pub prob: f32,
    /// Probability of cutmix rather than mixup when both alphas are positive.
    pub switch_prob: f32,
    /// Beta(α, α) of mixup's λ; 0 disables mixup.
    pub mixup_alpha: f32,
    /// Beta(α, α) of cutmix's λ; 0 disables cutmix.
    pub cutmix_alpha: f32,
    /// Draw partners only from the same block of this many samples in a per-seed permutation of
    /// the dataset (see [`crate::block`]). `distill label` uses its own byte-bounded plan
    /// instead (the manifest's `blocks`), so this stays unset in the recipes it records.
    #[serde(default)]
    pub partner_block: Option<u32>,
}

/// A named set of augmentations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub crop: Option<CropConfig>,
    /// Centre crop (evaluation); excludes every other augmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center: Option<CenterConfig>,
    /// Probability of a horizontal flip.
    #[serde(default)]
    pub flip: f32,
    #[serde(default)]
    pub cutout: Option<CutoutConfig>,
    #[serde(default)]
    pub mix: Option<MixConfig>,
    /// The filter crops are resized with (Pillow's; FORMAT.md §4.1). Recipes without the key
    /// mean bilinear, torchvision's default.
    #[serde(default)]
    pub interpolation: Interpolation,
}

const IMAGENET_CROP: CropConfig = CropConfig {
    scale: [0.08, 1.0],
    ratio: [3.0 / 4.0, 4.0 / 3.0],
};

impl Recipe {
    /// No augmentation: the whole image resized to the output size.
    pub fn none() -> Self {
        Recipe {
            name: "none".into(),
            crop: None,
            center: None,
            flip: 0.0,
            cutout: None,
            mix: None,
            interpolation: Interpolation::Bilinear,
        }
    }

    /// Centre-crop evaluation keeping `crop_pct` of the resized shorter side: the recipe of
    /// teacher test stores and student evaluation on image folders.
    pub fn center(crop_pct: f64) -> Self {
        Recipe {
            name: "center".into(),
            center: Some(CenterConfig { crop_pct }),
            ..Self::none()
        }
    }

    /// Random-resized crop (scale 0.08–1, ratio 3/4–4/3) and flip 0.5.
    pub fn light() -> Self {
        Recipe {
            name: "light".into(),
            crop: Some(IMAGENET_CROP),
            flip: 0.5,
            ..Self::none()
        }
    }

    /// `light` plus mixup (α 0.8) / cutmix (α 1.0) on every record, switch 0.5: USI's recipe.
    pub fn usi() -> Self {
        Recipe {
            name: "usi".into(),
            mix: Some(MixConfig {
                prob: 1.0,
                switch_prob: 0.5,
                mixup_alpha: 0.8,
                cutmix_alpha: 1.0,
                partner_block: None,
            }),
            ..Self::light()
        }
    }

    /// The built-in recipe called `name` (`none`, `light`, `usi`, `center`), if there is one.
    pub fn builtin(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::none(),
            "light" => Self::light(),
            "usi" => Self::usi(),
            "center" => Self::center(DEFAULT_CROP_PCT),
            _ => return None,
        })
    }

    /// A recipe from the text of a TOML recipe file, checked; the error says what is wrong
    /// (the caller names the file).
    pub fn from_toml(text: &str) -> Result<Self, FormatError> {
        let r: Recipe =
            toml::from_str(text).map_err(|e| FormatError::invalid("recipe", e.to_string()))?;
        r.validate()?;
        Ok(r)
    }

    /// Whether the TOML recipe `text` names its filter itself (an `interpolation` key); the
    /// built-in recipes leave it to the flags and the teacher.
    pub fn toml_names_interpolation(text: &str) -> bool {
        text.parse::<toml::Table>()
            .is_ok_and(|t| t.contains_key("interpolation"))
    }

    /// Whether records get random augmentation (crop, flip, cutout or mixing); `none` and
    /// `center` give every sample the same parameters in every epoch.
    pub fn is_random(&self) -> bool {
        self.crop.is_some() || self.flip > 0.0 || self.cutout.is_some() || self.mix.is_some()
    }

    /// Checks every probability, range and α, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), FormatError> {
        let prob = |f: &str, p: f32| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(FormatError::invalid(f, format!("{p} is not a probability")))
            }
        };
        let range = |f: &str, r: [f32; 2], max: f32| {
            if r[0] > 0.0 && r[0] <= r[1] && r[1] <= max && r.iter().all(|v| v.is_finite()) {
                Ok(())
            } else {
                Err(FormatError::invalid(
                    f,
                    format!("[{}, {}] must satisfy 0 < min ≤ max ≤ {max}", r[0], r[1]),
                ))
            }
        };
        prob("flip", self.flip)?;
        if let Some(c) = &self.center {
            if !(c.crop_pct > 0.0 && c.crop_pct <= 1.0) {
                return Err(FormatError::invalid(
                    "center.crop_pct",
                    format!("{} must be in (0, 1]", c.crop_pct),
                ));
            }
            if self.is_random() {
                return Err(FormatError::invalid(
                    "center",
                    "a centre crop is for evaluation and takes no other augmentation",
                ));
            }
        }
        if let Some(c) = &self.crop {
            range("crop.scale", c.scale, 1.0)?;
            range("crop.ratio", c.ratio, f32::MAX)?;
        }
        if let Some(c) = &self.cutout {
            prob("cutout.prob", c.prob)?;
            range("cutout.scale", c.scale, 1.0)?;
            range("cutout.ratio", c.ratio, f32::MAX)?;
        }
        if let Some(m) = &self.mix {
            prob("mix.prob", m.prob)?;
            prob("mix.switch_prob", m.switch_prob)?;
            for (f, a) in [
                ("mix.mixup_alpha", m.mixup_alpha),
                ("mix.cutmix_alpha", m.cutmix_alpha),
            ] {
                if !(a >= 0.0 && a.is_finite()) {
                    return Err(FormatError::invalid(f, format!("{a} must be ≥ 0")));
                }
            }
            if m.mixup_alpha == 0.0 && m.cutmix_alpha == 0.0 && m.prob > 0.0 {
                return Err(FormatError::invalid(
                    "mix",
                    "mixup_alpha and cutmix_alpha are both 0 but prob > 0",
                ));
            }
            if m.partner_block.is_some_and(|b| b < 2) {
                return Err(FormatError::invalid(
                    "mix.partner_block",
                    "must be at least 2",
                ));
            }
        }
        Ok(())
    }
}
