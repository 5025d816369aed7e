//! LeNet-5 (LeCun et al.), the architecture of the MNIST experiments in "Does Knowledge
//! Distillation Really Work?": conv 6@5×5 (padding 2 for 28×28 inputs), max-pool, conv 16@5×5,
//! max-pool, then 120, 84 and `classes` units, ReLU activations. `width` scales every layer.

use super::norm::{Norm, NormKind};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// LeNet-5 hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lenet5Config {
    pub channels: usize,
    /// Input side (28 for MNIST, 32 for CIFAR).
    pub size: usize,
    pub classes: usize,
    pub width: f32,
    pub norm: NormKind,
}

/// The LeNet-5 network.
#[derive(Module, Debug)]
pub struct Lenet5 {
    pub(crate) conv1: Conv2d,
    pub(crate) norm1: Norm,
    pub(crate) conv2: Conv2d,
    pub(crate) norm2: Norm,
    pub(crate) pool: MaxPool2d,
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
    pub(crate) fc3: Linear,
}

fn scaled(n: usize, w: f32) -> usize {
    ((n as f32 * w).round() as usize).max(1)
}

impl Lenet5Config {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Lenet5 {
        let (c1, c2) = (scaled(6, self.width), scaled(16, self.width));
        // 28×28 inputs are padded by 2 so that both sizes reach a 5×5 map before the classifier.
        let pad = if self.size <= 28 { 2 } else { 0 };
        let side = ((self.size + 2 * pad - 4) / 2 - 4) / 2;
        Lenet5 {
            conv1: Conv2dConfig::new([self.channels, c1], [5, 5])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device),
            norm1: Norm::new(self.norm, c1, device),
            conv2: Conv2dConfig::new([c1, c2], [5, 5]).init(device),
            norm2: Norm::new(self.norm, c2, device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(c2 * side * side, scaled(120, self.width)).init(device),
            fc2: LinearConfig::new(scaled(120, self.width), scaled(84, self.width)).init(device),
            fc3: LinearConfig::new(scaled(84, self.width), self.classes).init(device),
        }
    }
}

impl Lenet5 {
    /// Logits for a batch of `[n, channels, size, size]` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc3.forward(self.features(x))
    }

    /// The penultimate features (the 84 · width units after `fc2`'s ReLU).
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self
            .pool
            .forward(relu(self.norm1.forward(self.conv1.forward(x))));
        let x = self
            .pool
            .forward(relu(self.norm2.forward(self.conv2.forward(x))));
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(self.fc1.forward(x));
        relu(self.fc2.forward(x))
    }
}
