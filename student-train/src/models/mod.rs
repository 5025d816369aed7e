//! Student model families, one file each, behind one [`Student`] type.

pub mod lenet5;
pub mod mlp;
pub mod norm;
pub mod resnet;

pub use lenet5::{Lenet5, Lenet5Config};
pub use mlp::{Mlp, MlpConfig};
pub use norm::NormKind;
pub use resnet::{Resnet, ResnetConfig};

use burn::module::Module;
use burn::tensor::Tensor;

/// Any student network. (Variants differ in size; a student is one value per run, moved through
/// optimizer steps, so boxing would buy nothing.)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Student {
    Mlp(Mlp),
    Lenet5(Lenet5),
    Resnet(Resnet),
}

impl Student {
    /// Logits for a batch of `[n, c, h, w]` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Student::Mlp(m) => m.forward(x),
            Student::Lenet5(m) => m.forward(x),
            Student::Resnet(m) => m.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::cross_entropy;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::{Device, TensorData};

    fn batch(device: &Device) -> (Tensor<4>, Tensor<2>) {
        let n = 8;
        let x: Vec<f32> = (0..n * 28 * 28)
            .map(|i| ((i * 7919) % 255) as f32 / 255.0)
            .collect();
        let mut y = vec![0f32; n * 10];
        for i in 0..n {
            y[i * 10 + i % 10] = 1.0;
        }
        (
            Tensor::<4>::from_data(TensorData::new(x, [n, 1, 28, 28]), device),
            Tensor::<2>::from_data(TensorData::new(y, [n, 10]), device),
        )
    }

    fn value(t: Tensor<1>) -> f32 {
        t.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn one_step_reduces_the_loss_for_every_family_and_norm() {
        let device = Device::flex().autodiff();
        // Fixed initialization, so the test checks the models, not the luck of a draw.
        device.seed(7);
        for norm in [NormKind::None, NormKind::Batch, NormKind::Layer] {
            let students = vec![
                Student::Mlp(
                    MlpConfig {
                        inputs: 784,
                        classes: 10,
                        hidden: 64,
                        depth: 2,
                        width: 1.0,
                        norm,
                    }
                    .init(&device),
                ),
                Student::Lenet5(
                    Lenet5Config {
                        channels: 1,
                        size: 28,
                        classes: 10,
                        width: 1.0,
                        norm,
                    }
                    .init(&device),
                ),
                Student::Resnet(ResnetConfig::cifar(20, 1, 10, 0.5, norm).init(&device)),
                Student::Resnet(ResnetConfig::resnet18(1, 10, 0.125, norm).init(&device)),
            ];
            for mut model in students {
                let (x, y) = batch(&device);
                let mut optim = SgdConfig::new().init();
                let before = value(cross_entropy(model.forward(x.clone()), y.clone()));
                for _ in 0..3 {
                    let loss = cross_entropy(model.forward(x.clone()), y.clone());
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    model = optim.step(0.01, model, grads);
                }
                let after = value(cross_entropy(model.forward(x.clone()), y.clone()));
                assert!(after < before, "{norm:?}: loss {before} -> {after}");
            }
        }
    }
}
