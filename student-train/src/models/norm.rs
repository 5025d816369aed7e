//! The normalization choice every student family offers: BatchNorm, or a LayerNorm-style
//! normalization over each sample's channels and pixels (GroupNorm with one group), which has no
//! batch statistics (Stanton et al. found BatchNorm statistics alone can make teacher and
//! student disagree).

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, GroupNorm, GroupNormConfig};
use burn::tensor::{Device, Tensor};

/// Which normalization a model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    None,
    Batch,
    Layer,
}

impl std::str::FromStr for NormKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(NormKind::None),
            "batch" => Ok(NormKind::Batch),
            "layer" => Ok(NormKind::Layer),
            _ => Err(format!("unknown normalization {s:?} (none, batch, layer)")),
        }
    }
}

/// A normalization layer over `channels` feature maps (or nothing).
#[derive(Module, Debug)]
pub struct Norm {
    pub(crate) batch: Option<BatchNorm>,
    pub(crate) layer: Option<GroupNorm>,
}

impl Norm {
    /// The layer for `kind` over `channels` channels.
    pub fn new(kind: NormKind, channels: usize, device: &Device) -> Self {
        Norm {
            batch: (kind == NormKind::Batch).then(|| BatchNormConfig::new(channels).init(device)),
            layer: (kind == NormKind::Layer)
                .then(|| GroupNormConfig::new(1, channels).init(device)),
        }
    }

    /// Applies the normalization (identity for `none`).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match (&self.batch, &self.layer) {
            (Some(b), _) => b.forward(x),
            (_, Some(l)) => l.forward(x),
            _ => x,
        }
    }
}
