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

    /// The penultimate features (what the classifier reads) and the logits, in one pass.
    pub fn forward_features(&self, x: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let (f, head) = match self {
            Student::Mlp(m) => (m.features(x), &m.head),
            Student::Lenet5(m) => (m.features(x), &m.fc3),
            Student::Resnet(m) => (m.features(x), &m.head),
        };
        (f.clone(), head.forward(f))
    }

    /// Dimensions of [`Student::forward_features`]' features.
    pub fn feature_dim(&self) -> usize {
        let head = match self {
            Student::Mlp(m) => &m.head,
            Student::Lenet5(m) => &m.fc3,
            Student::Resnet(m) => &m.head,
        };
        head.weight.dims()[0]
    }
}

/// A student architecture as the CLI names it (`mlp`, `lenet5`, `resnet20`, `resnet56`,
/// `resnet18`), with its width multiplier and normalization, before the input is known.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    pub family: ModelFamily,
    pub width: f32,
    pub norm: NormKind,
}

/// The student architectures distill trains (recorded by name in run configs and checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// Two hidden layers of 256 × width units.
    Mlp,
    /// LeNet-5 (square inputs of at least 12 px).
    Lenet5,
    /// CIFAR ResNet-20.
    Resnet20,
    /// CIFAR ResNet-56.
    Resnet56,
    /// ImageNet ResNet-18 (inputs of at least 32 px).
    Resnet18,
}

impl ModelFamily {
    /// Every family, in the order `--help` lists them.
    pub const ALL: [ModelFamily; 5] = [
        ModelFamily::Mlp,
        ModelFamily::Lenet5,
        ModelFamily::Resnet20,
        ModelFamily::Resnet56,
        ModelFamily::Resnet18,
    ];

    /// The name flags, configs and checkpoints use.
    pub fn name(self) -> &'static str {
        match self {
            ModelFamily::Mlp => "mlp",
            ModelFamily::Lenet5 => "lenet5",
            ModelFamily::Resnet20 => "resnet20",
            ModelFamily::Resnet56 => "resnet56",
            ModelFamily::Resnet18 => "resnet18",
        }
    }
}

impl std::fmt::Display for ModelFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ModelFamily {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|f| f.name()).collect();
                format!("unknown model {s:?} (one of {})", names.join(", "))
            })
    }
}

/// What a student is built for: image channels, height, width, and classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl InputShape {
    /// Checks that `data` ("the training split", "the test split", …: `what`) has the channels
    /// and (unless it is read without hard labels) the classes this shape was made for, naming
    /// both counts when it does not.
    pub fn check_data(&self, data: &dyn datasets::Dataset, what: &str) -> Result<(), String> {
        let got = (usize::from(data.channels()), data.classes() as usize);
        if got.0 == self.channels && (got.1 == self.classes || !data.labelled()) {
            return Ok(());
        }
        Err(format!(
            "{what} has {} channels and {} classes; the model takes {} channels and predicts {} classes",
            got.0, got.1, self.channels, self.classes
        ))
    }
}

impl ModelSpec {
    /// Checks the width and that the family can take `input`, naming what does not fit.
    pub fn check(&self, input: &InputShape) -> Result<(), String> {
        if !(self.width > 0.0 && self.width <= 64.0) {
            return Err(format!("`width` {} must lie in (0, 64]", self.width));
        }
        if input.channels == 0 || input.classes < 2 {
            return Err(format!(
                "{} channels and {} classes: a classifier needs at least 1 channel and 2 classes",
                input.channels, input.classes
            ));
        }
        let (h, w) = (input.height, input.width);
        let fits = match self.family {
            // Two 5×5 convolutions and two 2×2 pools must leave a map of at least 1×1, and the
            // classifier is sized for square inputs.
            ModelFamily::Lenet5 => h == w && h >= 12,
            ModelFamily::Resnet18 => h >= 32 && w >= 32,
            ModelFamily::Mlp | ModelFamily::Resnet20 | ModelFamily::Resnet56 => h >= 8 && w >= 8,
        };
        if !fits {
            let need = match self.family {
                ModelFamily::Lenet5 => "square images of at least 12x12",
                ModelFamily::Resnet18 => "images of at least 32x32",
                _ => "images of at least 8x8",
            };
            return Err(format!(
                "model {} does not fit {}x{}x{} images: it needs {need}",
                self.family, input.channels, h, w
            ));
        }
        Ok(())
    }

    /// Builds the student for `input` on `device` (after [`ModelSpec::check`]).
    pub fn init(
        &self,
        input: &InputShape,
        device: &burn::tensor::Device,
    ) -> Result<Student, String> {
        self.check(input)?;
        let InputShape {
            channels, classes, ..
        } = *input;
        let (width, norm) = (self.width, self.norm);
        Ok(match self.family {
            ModelFamily::Mlp => Student::Mlp(
                MlpConfig {
                    inputs: channels * input.height * input.width,
                    classes,
                    hidden: 256,
                    depth: 2,
                    width,
                    norm,
                }
                .init(device),
            ),
            ModelFamily::Lenet5 => Student::Lenet5(
                Lenet5Config {
                    channels,
                    size: input.height,
                    classes,
                    width,
                    norm,
                }
                .init(device),
            ),
            ModelFamily::Resnet20 => Student::Resnet(
                ResnetConfig::cifar(20, channels, classes, width, norm).init(device),
            ),
            ModelFamily::Resnet56 => Student::Resnet(
                ResnetConfig::cifar(56, channels, classes, width, norm).init(device),
            ),
            ModelFamily::Resnet18 => {
                Student::Resnet(ResnetConfig::resnet18(channels, classes, width, norm).init(device))
            }
        })
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
