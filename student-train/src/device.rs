//! Which backend and device a student trains on.
//!
//! burn 0.22 has no backend type parameter: the backend is a property of the [`Device`], so one
//! training loop serves every backend and this module only turns the CLI's choice into a device.

use burn::tensor::Device;
use std::fmt;
use std::str::FromStr;

/// A backend choice: `cpu` (the pure-Rust default, burn-flex), `ndarray` (burn-ndarray, kept for
/// comparison), `tch:cpu` and `tch:cuda:N` (LibTorch, behind the cargo feature `tch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DeviceChoice {
    Cpu,
    Ndarray,
    TchCpu,
    TchCuda(usize),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => write!(f, "cpu"),
            DeviceChoice::Ndarray => write!(f, "ndarray"),
            DeviceChoice::TchCpu => write!(f, "tch:cpu"),
            DeviceChoice::TchCuda(i) => write!(f, "tch:cuda:{i}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" | "flex" => Ok(DeviceChoice::Cpu),
            "ndarray" => Ok(DeviceChoice::Ndarray),
            "tch:cpu" => Ok(DeviceChoice::TchCpu),
            "tch:cuda" => Ok(DeviceChoice::TchCuda(0)),
            _ => match s.strip_prefix("tch:cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceChoice::TchCuda(i)),
                _ => Err(format!(
                    "unknown device {s:?} (cpu, ndarray, tch:cpu, tch:cuda[:N])"
                )),
            },
        }
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl DeviceChoice {
    /// Whether this choice needs LibTorch (the `tch` feature).
    pub fn is_tch(&self) -> bool {
        matches!(self, DeviceChoice::TchCpu | DeviceChoice::TchCuda(_))
    }

    /// The device without autodiff (for evaluation and export), or an error naming the cargo
    /// feature a LibTorch choice needs when this build lacks it.
    pub fn inference(&self) -> Result<Device, String> {
        match *self {
            DeviceChoice::Cpu => Ok(Device::flex()),
            // burn marks the ndarray backend deprecated in favour of flex; it stays selectable
            // for the backend comparison in BENCHMARKS.md.
            #[allow(deprecated)]
            DeviceChoice::Ndarray => Ok(Device::ndarray()),
            // burn marks burn-tch deprecated in favour of CubeCL backends, which cannot be built
            // offline here; LibTorch is the GPU backend that works (../shared/docs/gpu.md).
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            DeviceChoice::TchCpu => Ok(Device::libtorch()),
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            DeviceChoice::TchCuda(i) => Ok(Device::libtorch_cuda(i)),
            #[cfg(not(feature = "tch"))]
            DeviceChoice::TchCpu | DeviceChoice::TchCuda(_) => Err(format!(
                "`device` {self} needs LibTorch, which this build does not include: rebuild with \
                 `cargo build --release --features tch` and LIBTORCH pointing at a libtorch \
                 (see README, \"On a GPU\")"
            )),
        }
    }

    /// The device with autodiff, for training.
    pub fn training(&self) -> Result<Device, String> {
        Ok(self.inference()?.autodiff())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_choice() {
        for s in ["cpu", "ndarray", "tch:cpu", "tch:cuda:3"] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap().to_string(), s);
        }
        assert_eq!("tch:cuda".parse(), Ok(DeviceChoice::TchCuda(0)));
        assert!(
            "cuda"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("tch:cuda")
        );
        assert!("tch:cuda:x".parse::<DeviceChoice>().is_err());
    }

    /// The vendored burn-tch's batch norm, ReLU and convolution backward (vendor/README.md) against
    /// burn's composed defaults on burn-flex: output, batch statistics and every gradient, on
    /// channels with means far from zero (where a shortcut through uncentred sums would cancel).
    #[cfg(feature = "tch")]
    #[test]
    fn patched_tch_ops_match_flex() {
        use burn::tensor::activation::relu;
        use burn::tensor::module::{batch_norm_train, conv2d};
        use burn::tensor::ops::ConvOptions;
        use burn::tensor::{Tensor, TensorData};
        let shape = [4, 3, 5, 6];
        let n: usize = shape.iter().product();
        let xs: Vec<f32> = (0..n)
            .map(|i| (i * 37 % 101) as f32 / 25.0 - 2.0 + ((i / 30) % 3) as f32 * 40.0)
            .collect();
        let ws: Vec<f32> = (0..n).map(|i| (i * 53 % 89) as f32 / 44.0 - 1.0).collect();
        let run = |device: Device| -> Vec<Vec<f32>> {
            let x =
                Tensor::<4>::from_data(TensorData::new(xs.clone(), shape), &device).require_grad();
            let per_channel = |v: [f32; 3]| {
                Tensor::<1>::from_data(TensorData::new(v.to_vec(), [3]), &device).require_grad()
            };
            let kernel: Vec<f32> = (0..81)
                .map(|i| (i * 29 % 31) as f32 / 150.0 - 0.1)
                .collect();
            let weight = Tensor::<4>::from_data(TensorData::new(kernel, [3, 3, 3, 3]), &device)
                .require_grad();
            let bias = per_channel([0.2, -0.1, 0.05]);
            let gamma = per_channel([0.5, 1.5, -2.0]);
            let beta = per_channel([0.1, -0.3, 0.7]);
            let w = Tensor::<4>::from_data(TensorData::new(ws.clone(), shape), &device);
            let conv = conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            );
            let out = batch_norm_train(x.clone() + conv, gamma.clone(), beta.clone(), 1e-5);
            let y = relu(out.output.clone());
            // A strided convolution with asymmetric padding too (the backward pads, then crops).
            let strided = conv2d(
                x.clone(),
                weight.clone(),
                None,
                ConvOptions {
                    stride: [2, 2],
                    padding: [(0, 1), (1, 0)],
                    dilation: [1, 1],
                    groups: 1,
                },
            );
            assert_eq!(strided.dims(), [4, 3, 2, 3]);
            let grads = ((y * w).sum() + (strided.clone() * strided).sum() * 0.1).backward();
            let v4 = |t: Tensor<4>| t.into_data().try_to_vec::<f32>().unwrap();
            let v1 = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
            vec![
                v4(out.output),
                v1(out.mean),
                v1(out.variance),
                v4(x.grad(&grads).unwrap()),
                v4(weight.grad(&grads).unwrap()),
                v1(bias.grad(&grads).unwrap()),
                v1(gamma.grad(&grads).unwrap()),
                v1(beta.grad(&grads).unwrap()),
            ]
        };
        let flex = run(DeviceChoice::Cpu.training().unwrap());
        let tch = run(DeviceChoice::TchCpu.training().unwrap());
        let names = [
            "output",
            "mean",
            "variance",
            "x grad",
            "weight grad",
            "bias grad",
            "gamma grad",
            "beta grad",
        ];
        for ((name, a), b) in names.iter().zip(&flex).zip(&tch) {
            let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 2e-5 * scale,
                "{name}: max |flex - tch| {worst} (scale {scale})"
            );
        }
        // The channel statistics are what the data says, not just equal to each other.
        assert!(flex[1][1] > 30.0 && flex[1][2] > 70.0, "{:?}", flex[1]);
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn a_backend_not_built_in_names_its_feature() {
        let e = DeviceChoice::TchCuda(0).training().unwrap_err();
        assert!(e.contains("--features tch"), "{e}");
        assert!(DeviceChoice::Cpu.training().unwrap().is_autodiff());
    }
}
