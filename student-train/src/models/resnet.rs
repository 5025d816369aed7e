//! ResNets with basic blocks: the CIFAR family of He et al. (resnet20 / resnet56: a 3×3 stem of
//! 16 channels, three stages of `n` blocks at 16, 32, 64 channels, the usual KD-paper students)
//! and the ImageNet-style resnet18 (7×7 stride-2 stem, max-pool, four stages of two blocks at
//! 64–512 channels). Shortcuts change shape with a 1×1 convolution and normalization. `width`
//! scales every channel count.

use super::norm::{Norm, NormKind};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// ResNet hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResnetConfig {
    pub channels: usize,
    pub classes: usize,
    /// Blocks per stage: `[3, 3, 3]` is resnet20, `[9, 9, 9]` resnet56, `[2, 2, 2, 2]` resnet18.
    pub blocks: Vec<usize>,
    /// Channels of the first stage (16 for CIFAR ResNets, 64 for resnet18), doubled per stage.
    pub base: usize,
    /// ImageNet-style stem (7×7 stride 2 and a max-pool) instead of one 3×3 convolution.
    pub imagenet_stem: bool,
    pub width: f32,
    pub norm: NormKind,
}

impl ResnetConfig {
    /// resnet20 (`depth = 20`) or resnet56 (`56`): CIFAR ResNets with 6n + 2 layers.
    pub fn cifar(
        depth: usize,
        channels: usize,
        classes: usize,
        width: f32,
        norm: NormKind,
    ) -> Self {
        let n = (depth - 2) / 6;
        ResnetConfig {
            channels,
            classes,
            blocks: vec![n; 3],
            base: 16,
            imagenet_stem: false,
            width,
            norm,
        }
    }

    /// resnet18, ImageNet style.
    pub fn resnet18(channels: usize, classes: usize, width: f32, norm: NormKind) -> Self {
        ResnetConfig {
            channels,
            classes,
            blocks: vec![2; 4],
            base: 64,
            imagenet_stem: true,
            width,
            norm,
        }
    }
}

/// conv 3×3 → norm → ReLU → conv 3×3 → norm, plus the shortcut, then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub(crate) conv1: Conv2d,
    pub(crate) norm1: Norm,
    pub(crate) conv2: Conv2d,
    pub(crate) norm2: Norm,
    pub(crate) shortcut: Option<Conv2d>,
    pub(crate) shortcut_norm: Option<Norm>,
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let p = k / 2;
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

impl BasicBlock {
    fn new(cin: usize, cout: usize, stride: usize, norm: NormKind, device: &Device) -> Self {
        let project = stride != 1 || cin != cout;
        BasicBlock {
            conv1: conv(cin, cout, 3, stride, device),
            norm1: Norm::new(norm, cout, device),
            conv2: conv(cout, cout, 3, 1, device),
            norm2: Norm::new(norm, cout, device),
            shortcut: project.then(|| conv(cin, cout, 1, stride, device)),
            shortcut_norm: project.then(|| Norm::new(norm, cout, device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.norm1.forward(self.conv1.forward(x.clone())));
        let y = self.norm2.forward(self.conv2.forward(y));
        let s = match (&self.shortcut, &self.shortcut_norm) {
            (Some(c), Some(n)) => n.forward(c.forward(x)),
            _ => x,
        };
        relu(y + s)
    }
}

/// A ResNet.
#[derive(Module, Debug)]
pub struct Resnet {
    pub(crate) stem: Conv2d,
    pub(crate) stem_norm: Norm,
    pub(crate) stem_pool: Option<MaxPool2d>,
    pub(crate) blocks: Vec<BasicBlock>,
    pub(crate) pool: AdaptiveAvgPool2d,
    pub(crate) head: Linear,
}

impl ResnetConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Resnet {
        let ch = |c: usize| ((c as f32 * self.width).round() as usize).max(1);
        let base = ch(self.base);
        let (stem, stem_pool) = if self.imagenet_stem {
            (
                conv(self.channels, base, 7, 2, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            )
        } else {
            (conv(self.channels, base, 3, 1, device), None)
        };
        let mut blocks = Vec::new();
        let mut cin = base;
        for (stage, &n) in self.blocks.iter().enumerate() {
            let cout = ch(self.base << stage);
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(cin, cout, stride, self.norm, device));
                cin = cout;
            }
        }
        Resnet {
            stem,
            stem_norm: Norm::new(self.norm, base, device),
            stem_pool,
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(cin, self.classes).init(device),
        }
    }
}

impl Resnet {
    /// Logits for a batch of `[n, channels, h, w]` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.features(x))
    }

    /// The pooled features the classifier reads.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.stem_norm.forward(self.stem.forward(x)));
        if let Some(p) = &self.stem_pool {
            x = p.forward(x);
        }
        for b in &self.blocks {
            x = b.forward(x);
        }
        self.pool.forward(x).flatten(1, 3)
    }
}
