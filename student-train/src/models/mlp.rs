//! A multi-layer perceptron over flattened pixels: `depth` hidden layers of `hidden · width`
//! units with ReLU (and layer-style normalization when asked; BatchNorm is applied per unit).

use burn::module::Module;
use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::norm::NormKind;

/// Epsilon of the MLP's LayerNorm (burn's default, named so the ONNX export uses the same).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// MLP hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    /// Input features (channels × height × width).
    pub inputs: usize,
    pub classes: usize,
    pub hidden: usize,
    pub depth: usize,
    pub width: f32,
    pub norm: NormKind,
}

/// The MLP.
#[derive(Module, Debug)]
pub struct Mlp {
    pub(crate) layers: Vec<Linear>,
    pub(crate) batch: Vec<BatchNorm>,
    pub(crate) layer: Vec<LayerNorm>,
    pub(crate) head: Linear,
}

impl MlpConfig {
    /// Builds the network on `device`.
    pub fn init(&self, device: &Device) -> Mlp {
        let h = ((self.hidden as f32 * self.width).round() as usize).max(1);
        let mut layers = Vec::new();
        let (mut batch, mut layer) = (Vec::new(), Vec::new());
        let mut d = self.inputs;
        for _ in 0..self.depth {
            layers.push(LinearConfig::new(d, h).init(device));
            match self.norm {
                NormKind::Batch => batch.push(BatchNormConfig::new(h).init(device)),
                NormKind::Layer => layer.push(
                    LayerNormConfig::new(h)
                        .with_epsilon(LAYER_NORM_EPS)
                        .init(device),
                ),
                NormKind::None => {}
            }
            d = h;
        }
        Mlp {
            layers,
            batch,
            layer,
            head: LinearConfig::new(d, self.classes).init(device),
        }
    }
}

impl Mlp {
    /// Logits for a batch of images (flattened here).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.features(x))
    }

    /// The last hidden layer's activations.
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x: Tensor<2> = x.flatten(1, 3);
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(x);
            if let Some(b) = self.batch.get(i) {
                x = b.forward(x);
            }
            if let Some(n) = self.layer.get(i) {
                x = n.forward(x);
            }
            x = relu(x);
        }
        x
    }
}
