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
                "--device {self} needs LibTorch, which this build does not include: rebuild with \
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

    #[cfg(not(feature = "tch"))]
    #[test]
    fn a_backend_not_built_in_names_its_feature() {
        let e = DeviceChoice::TchCuda(0).training().unwrap_err();
        assert!(e.contains("--features tch"), "{e}");
        assert!(DeviceChoice::Cpu.training().unwrap().is_autodiff());
    }
}
