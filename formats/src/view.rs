//! How a store's records become pixels: the resampling kernel and the centre-crop rule, derived
//! from the store's format version and recipe (FORMAT.md §4.1), never from the record. The replay
//! crate's `apply` carries the rule out.

use crate::error::FormatError;
use crate::recipe::{Interpolation, Recipe};

/// The resampling kernel a store's records are replayed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Pillow's convolution with this filter (format version 2 on).
    Pillow(Interpolation),
    /// Format version 1's 2×2 bilinear (the replay crate's `resample::legacy`).
    Legacy,
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kernel::Pillow(i) => write!(f, "{i} (Pillow)"),
            Kernel::Legacy => f.write_str("bilinear 2x2 (format version 1)"),
        }
    }
}

/// How a record's crop box becomes pixels: the kernel, and for a centre-crop recipe the rule
/// that replaces the box (torchvision's `Resize(floor(size / crop_pct))` of the whole image,
/// then `CenterCrop(size)`; the stored box stays as a description of the region). Derived
/// from the recipe and the store's format version, so records carry no field for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewRule {
    pub kernel: Kernel,
    /// `crop_pct` of a centre-crop recipe (Pillow kernels only).
    pub center: Option<f64>,
}

impl ViewRule {
    /// The rule of records made now with `recipe`.
    pub fn of_recipe(recipe: &Recipe) -> Self {
        ViewRule {
            kernel: Kernel::Pillow(recipe.interpolation),
            center: recipe.center.as_ref().map(|c| c.crop_pct),
        }
    }

    /// The rule a store of `format_version` with `recipe` (its manifest's JSON) was labelled
    /// with: version 1 resized every crop box with the 2×2 kernel; version 2 names its filter in
    /// `recipe.interpolation`, and a filter this build lacks is an error naming it.
    pub fn of_store(format_version: u32, recipe: &serde_json::Value) -> Result<Self, FormatError> {
        if format_version < 2 {
            return Ok(ViewRule {
                kernel: Kernel::Legacy,
                center: None,
            });
        }
        let name = recipe
            .get("interpolation")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                FormatError::invalid(
                    "recipe.interpolation",
                    format!("a format version {format_version} store must name its filter"),
                )
            })?;
        let f = Interpolation::parse(name, "recipe.interpolation")?;
        let center = match recipe.get("center") {
            None | Some(serde_json::Value::Null) => None,
            Some(c) => Some(c.get("crop_pct").and_then(|v| v.as_f64()).ok_or_else(|| {
                FormatError::invalid("recipe.center.crop_pct", "missing or not a number")
            })?),
        };
        Ok(ViewRule {
            kernel: Kernel::Pillow(f),
            center,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_name_their_rule() {
        let v1 = ViewRule::of_store(1, &serde_json::json!({"name": "usi"})).unwrap();
        assert_eq!(v1.kernel, Kernel::Legacy);
        let r = serde_json::to_value(Recipe::center(0.9)).unwrap();
        assert_eq!(r["interpolation"], "bilinear");
        // Version 1's centre crop was a crop box like any other.
        assert_eq!(ViewRule::of_store(1, &r).unwrap().center, None);
        let v2 = ViewRule::of_store(2, &r).unwrap();
        assert_eq!(v2, ViewRule::of_recipe(&Recipe::center(0.9)));
        assert_eq!(v2.center, Some(0.9));
        let mut usi = Recipe::usi();
        usi.interpolation = Interpolation::Bicubic;
        let r = serde_json::to_value(&usi).unwrap();
        let v2 = ViewRule::of_store(2, &r).unwrap();
        assert_eq!(v2.kernel, Kernel::Pillow(Interpolation::Bicubic));
        assert_eq!(v2.center, None);
        let e = ViewRule::of_store(2, &serde_json::json!({"interpolation": "lanczos"}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("recipe.interpolation") && e.contains("\"lanczos\""),
            "{e}"
        );
        let e = ViewRule::of_store(2, &serde_json::json!({"name": "usi"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipe.interpolation"), "{e}");
    }
}
