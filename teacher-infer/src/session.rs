//! One ONNX teacher: its model checked against what labelling needs (one float NCHW input, a
//! `[batch, classes]` float logits output and optionally a `[batch, D]` feature output, both
//! chosen by name), run on the CPU or CUDA execution provider.

use crate::error::InferError;
use formats::TeacherInfo;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{Tensor, TensorElementType, TensorRef, ValueType};
use std::path::{Path, PathBuf};

/// Where a teacher runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// CUDA execution provider on GPU `n`.
    Cuda(i32),
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (cpu, cuda, cuda:N)")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// CUDA execution provider options that matter for teachers (gpu.md measured both on ResNet-50).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// Let cuDNN use NHWC kernels (fastest for fp16 convolution nets).
    pub prefer_nhwc: bool,
    /// Allow TF32 tensor-core math for fp32 models.
    pub tf32: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            prefer_nhwc: false,
            tf32: true,
        }
    }
}

/// Which outputs of a teacher labelling reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    /// The logits output (`--logits`); `None`: the output named `logits`, else the first
    /// output that is not the feature, else none (a model whose one output is the feature is
    /// an embedding-only teacher).
    pub logits: Option<String>,
    /// Read no logits even when the model has them (`--logits none`): the teacher is used for
    /// its feature output alone, and the store holds no soft labels.
    pub no_logits: bool,
    /// A pooled `[batch, D]` output stored per record beside the logits (`--feature`).
    pub feature: Option<String>,
}

/// A teacher's feature output: its name and dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureOutput {
    pub name: String,
    pub dim: u32,
}

/// An opened teacher model.
pub struct TeacherSession {
    pub file: PathBuf,
    pub sha256: String,
    session: Session,
    input_name: String,
    /// The logits output; `None` for an embedding-only teacher (its classes are 0).
    output_name: Option<String>,
    /// The feature output asked for, when this teacher has it.
    pub feature: Option<FeatureOutput>,
    /// Every output of the model, `name [shape]`, for errors that must say what there is.
    pub output_list: Vec<String>,
    /// Run through IoBinding with reused host buffers (always on CUDA; see [`Bound`]).
    use_binding: bool,
    bound: Option<Bound>,
    /// Model input shape, -1 for dynamic dimensions.
    pub input_shape: Vec<i64>,
    /// Classes of the logits output; 0 for an embedding-only teacher.
    pub classes: u32,
    /// The batch size a model exported with a fixed batch dimension accepts.
    pub fixed_batch: Option<usize>,
    pub device: Device,
}

/// The IoBinding path's buffers for one batch shape, bound once and reused by every run: the
/// input and the logits live in host memory ONNX Runtime allocated, pinned (page-locked) on CUDA,
/// so the copy to the device and the logits' copy back are DMA transfers ONNX Runtime queues on
/// its own stream, and no batch is allocated or cloned per run (gpu.md: 4,197 → 5,879 img/s for
/// ResNet-50 fp32 from pinned input alone). The logits come back whole because the writer needs
/// the full distribution for its quality figures; at 1,000 classes that is 4 KB per image.
struct Bound {
    shape: [usize; 4],
    binding: IoBinding,
    input: Tensor<f32>,
    output: Option<Tensor<f32>>,
    feature: Option<Tensor<f32>>,
    // The allocators outlive the tensors they made.
    _allocators: Vec<Allocator>,
}

fn tensor_shape(v: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match v {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

/// The pre-processing (mean, std, interpolation, crop_pct) the ONNX file at `path` declares in
/// its metadata; errors name the file.
pub fn model_preprocessing(path: &Path) -> Result<formats::preprocess::Preprocessing, InferError> {
    let io = |source| InferError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only map of a model file nothing here writes; only its top-level fields are
    // walked, so a large teacher's weights are never paged in.
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
    formats::preprocess::Preprocessing::of_model(&map).map_err(|what| InferError::Model {
        file: path.to_path_buf(),
        what,
    })
}

impl TeacherSession {
    /// Opens `path` on `device` with `threads` intra-op threads (0: ONNX Runtime's default).
    /// Asking for CUDA and not getting it is an error, never a fall back to the CPU.
    pub fn open(
        env: &ort::environment::Environment,
        path: &Path,
        device: Device,
        threads: usize,
    ) -> Result<Self, InferError> {
        Self::open_with(env, path, device, threads, CudaOptions::default())
    }

    /// [`TeacherSession::open`] with explicit CUDA execution provider options.
    pub fn open_with(
        env: &ort::environment::Environment,
        path: &Path,
        device: Device,
        threads: usize,
        cuda: CudaOptions,
    ) -> Result<Self, InferError> {
        Self::open_outputs(env, path, device, threads, cuda, &Outputs::default())
    }

    /// [`TeacherSession::open_with`] reading the outputs `outputs` names. A named logits output
    /// the model lacks is an error listing its outputs; a named feature output it lacks leaves
    /// [`TeacherSession::feature`] empty (an ensemble stores it for the teachers that have it).
    pub fn open_outputs(
        env: &ort::environment::Environment,
        path: &Path,
        device: Device,
        threads: usize,
        cuda: CudaOptions,
        outputs: &Outputs,
    ) -> Result<Self, InferError> {
        let bytes = std::fs::read(path).map_err(|source| InferError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let model = |what: String| InferError::Model {
            file: path.to_path_buf(),
            what,
        };
        let mut b = Session::builder(env).map_err(|e| model(format!("session builder: {e}")))?;
        if threads > 0 {
            b = b
                .with_intra_threads(threads)
                .map_err(|e| model(format!("threads: {e}")))?;
        }
        // Idle ONNX Runtime threads spin by default, taking the cores the loader and writer
        // threads need; labelling runs them side by side, so they sleep instead.
        b = b
            .with_intra_op_spinning(false)
            .map_err(|e| model(format!("spinning: {e}")))?;
        if let Device::Cuda(n) = device {
            // Best effort: an error here shows up below if the EP then cannot load.
            if let Err(e) = crate::runtime::preload_cuda() {
                tracing::warn!("CUDA library preload: {e}");
            }
            let ep = ort::ep::CUDA::default()
                .with_device_id(n)
                .with_prefer_nhwc(cuda.prefer_nhwc)
                .with_tf32(cuda.tf32)
                .build()
                .error_on_failure();
            b = b.with_execution_providers([ep]).map_err(|e| InferError::Device {
                device: device.to_string(),
                reason: format!(
                    "the CUDA execution provider does not load ({e}); it needs onnxruntime-gpu and the CUDA 13 / cuDNN 9 libraries: run `distill doctor`"
                ),
            })?;
        }
        let session = b
            .commit_from_memory(&bytes)
            .map_err(|e| model(format!("not a model ONNX Runtime can load: {e}")))?;
        if session.inputs().len() != 1 {
            let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
            return Err(model(format!(
                "has {} inputs ({}); a teacher takes one image batch",
                names.len(),
                names.join(", ")
            )));
        }
        let input = &session.inputs()[0];
        let (ty, input_shape) = tensor_shape(input.dtype())
            .ok_or_else(|| model(format!("input {:?} is not a tensor", input.name())))?;
        if ty != TensorElementType::Float32 || input_shape.len() != 4 {
            return Err(model(format!(
                "input {:?} is {ty:?} {input_shape:?}; a teacher takes float32 NCHW [batch, channels, height, width]",
                input.name()
            )));
        }
        let output_list: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| match tensor_shape(o.dtype()) {
                Some((ty, shape)) => format!("{} {ty:?} {shape:?}", o.name()),
                None => format!("{} (not a tensor)", o.name()),
            })
            .collect();
        let has = || format!("its outputs: {}", output_list.join(", "));
        let feature = match &outputs.feature {
            None => None,
            Some(name) => match session.outputs().iter().find(|o| o.name() == name) {
                None => None,
                Some(o) => {
                    let shape = tensor_shape(o.dtype()).filter(|(ty, shape)| {
                        *ty == TensorElementType::Float32 && shape.len() == 2 && shape[1] > 0
                    });
                    let Some((_, shape)) = shape else {
                        return Err(model(format!(
                            "feature output {name:?} is not a float32 [batch, D] tensor (a \
                             pooled embedding); {}",
                            has()
                        )));
                    };
                    Some(FeatureOutput {
                        name: name.clone(),
                        dim: shape[1] as u32,
                    })
                }
            },
        };
        let not_feature = |n: &str| outputs.feature.as_deref() != Some(n);
        let output = match &outputs.logits {
            _ if outputs.no_logits => None,
            Some(name) => Some(
                session
                    .outputs()
                    .iter()
                    .find(|o| o.name() == name)
                    .ok_or_else(|| {
                        model(format!("has no output {name:?} (--logits); {}", has()))
                    })?,
            ),
            None => session
                .outputs()
                .iter()
                .find(|o| o.name() == "logits")
                .or_else(|| session.outputs().iter().find(|o| not_feature(o.name()))),
        };
        let classes = match output {
            Some(output) => {
                let (oty, oshape) = tensor_shape(output.dtype())
                    .ok_or_else(|| model(format!("output {:?} is not a tensor", output.name())))?;
                if oty != TensorElementType::Float32 || oshape.len() != 2 || oshape[1] <= 0 {
                    return Err(model(format!(
                        "output {:?} is {oty:?} {oshape:?}; a teacher gives float32 [batch, \
                         classes] with a fixed class count (--logits names another output, \
                         --logits none reads none: an embedding-only teacher); {}",
                        output.name(),
                        has()
                    )));
                }
                oshape[1] as u32
            }
            // Without logits the teacher is its feature output, which must be there.
            None if feature.is_none() => {
                return Err(model(match &outputs.feature {
                    Some(name) => format!(
                        "has no feature output {name:?} (--feature) and {}; {}",
                        if outputs.no_logits {
                            "--logits none reads no logits"
                        } else {
                            "no logits output besides it"
                        },
                        has()
                    ),
                    None => format!(
                        "gives nothing to store: --logits none reads no logits and no --feature \
                         names an output; {}",
                        has()
                    ),
                }));
            }
            None => 0,
        };
        let fixed_batch = (input_shape[0] > 0).then_some(input_shape[0] as usize);
        let sha256 = formats::sha256_hex(&bytes);
        Ok(TeacherSession {
            file: path.to_path_buf(),
            sha256,
            input_name: input.name().to_string(),
            output_name: output.map(|o| o.name().to_string()),
            feature,
            output_list,
            use_binding: matches!(device, Device::Cuda(_)),
            bound: None,
            input_shape,
            classes,
            fixed_batch,
            device,
            session,
        })
    }

    /// Checks that images of `channels × height × width` fit the model's input, naming the
    /// dimensions that do not.
    pub fn check_input(&self, channels: u32, height: u32, width: u32) -> Result<(), InferError> {
        let want = [i64::from(channels), i64::from(height), i64::from(width)];
        let names = ["channels", "height", "width"];
        let bad: Vec<String> = (0..3)
            .filter(|&i| self.input_shape[i + 1] > 0 && self.input_shape[i + 1] != want[i])
            .map(|i| {
                format!(
                    "{} {} (model) vs {} (images)",
                    names[i],
                    self.input_shape[i + 1],
                    want[i]
                )
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(InferError::Model {
                file: self.file.clone(),
                what: format!(
                    "input {:?} {:?} cannot take the images: {}",
                    self.input_name,
                    self.input_shape,
                    bad.join(", ")
                ),
            })
        }
    }

    /// What the manifest records of this teacher.
    pub fn info(&self) -> TeacherInfo {
        TeacherInfo {
            file: self
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: self.sha256.clone(),
            input_shape: self.input_shape.clone(),
            classes: self.classes,
        }
    }

    /// Runs `n` images (`batch` is `n × c × h × w` floats, NCHW) and writes `n × classes`
    /// logits into `logits` (none for an embedding-only teacher). A model with a fixed batch size is run in slices of that size
    /// (padding the last one with copies of its first image).
    pub fn run(
        &mut self,
        batch: &[f32],
        n: usize,
        chw: [usize; 3],
        logits: &mut Vec<f32>,
    ) -> Result<(), InferError> {
        self.run_with_features(batch, n, chw, logits, None)
    }

    /// [`TeacherSession::run`], also writing the feature output's `n × D` values into
    /// `features` when given (the session must have a feature output).
    pub fn run_with_features(
        &mut self,
        batch: &[f32],
        n: usize,
        chw: [usize; 3],
        logits: &mut Vec<f32>,
        mut features: Option<&mut Vec<f32>>,
    ) -> Result<(), InferError> {
        let per = chw[0] * chw[1] * chw[2];
        debug_assert_eq!(batch.len(), n * per);
        let classes = self.classes as usize;
        logits.clear();
        let dim = match (&features, &self.feature) {
            (None, _) => 0,
            (Some(_), Some(f)) => f.dim as usize,
            (Some(_), None) => {
                return Err(InferError::Run {
                    file: self.file.clone(),
                    what: "features asked of a teacher without a feature output".into(),
                });
            }
        };
        if let Some(f) = features.as_deref_mut() {
            f.clear();
        }
        let step = self.fixed_batch.unwrap_or(n.max(1));
        let mut padded = Vec::new();
        for start in (0..n).step_by(step) {
            let m = step.min(n - start);
            let mut slice = &batch[start * per..(start + m) * per];
            if m < step {
                padded.clear();
                padded.extend_from_slice(slice);
                for _ in m..step {
                    padded.extend_from_slice(&slice[..per]);
                }
                slice = &padded;
            }
            let file = &self.file;
            let fail = |what: String| InferError::Run {
                file: file.clone(),
                what,
            };
            let shape = [step, chw[0], chw[1], chw[2]];
            if self.use_binding {
                let want_feature = features.is_some();
                if self.bound.as_ref().map(|b| (b.shape, b.feature.is_some()))
                    != Some((shape, want_feature))
                {
                    self.bound = Some(
                        self.bind(shape, want_feature)
                            .map_err(|e| fail(format!("binding: {e}")))?,
                    );
                }
                let b = self.bound.as_mut().expect("bound above");
                b.input.extract_tensor_mut().1.copy_from_slice(slice);
                b.binding
                    .bind_input(self.input_name.as_str(), &b.input)
                    .map_err(|e| fail(format!("binding the input: {e}")))?;
                self.session
                    .run_binding(&b.binding)
                    .map_err(|e| fail(format!("run failed: {e}")))?;
                if let Some(out) = &b.output {
                    logits.extend_from_slice(&out.extract_tensor().1[..m * classes]);
                }
                if let (Some(f), Some(t)) = (features.as_deref_mut(), &b.feature) {
                    f.extend_from_slice(&t.extract_tensor().1[..m * dim]);
                }
                continue;
            }
            let input = TensorRef::from_array_view((shape, slice))
                .map_err(|e| fail(format!("input tensor: {e}")))?;
            let outputs = self
                .session
                .run(ort::inputs![input])
                .map_err(|e| fail(format!("run failed: {e}")))?;
            if let Some(name) = &self.output_name {
                let (shape, values) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| fail(format!("output is not float32: {e}")))?;
                if shape.len() != 2 || shape[0] as usize != step || shape[1] as usize != classes {
                    return Err(fail(format!(
                        "output shape {shape:?}, expected [{step}, {classes}]"
                    )));
                }
                logits.extend_from_slice(&values[..m * classes]);
            }
            if let (Some(f), Some(out)) = (features.as_deref_mut(), &self.feature) {
                let (shape, values) = outputs[out.name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(|e| fail(format!("feature output is not float32: {e}")))?;
                if shape.len() != 2 || shape[0] as usize != step || shape[1] as usize != dim {
                    return Err(fail(format!(
                        "feature output {:?} shape {shape:?}, expected [{step}, {dim}]",
                        out.name
                    )));
                }
                f.extend_from_slice(&values[..m * dim]);
            }
        }
        Ok(())
    }

    /// Runs through IoBinding with reused host buffers even on the CPU (the CUDA default), so
    /// the path CUDA takes is exercised where no GPU is.
    pub fn set_binding(&mut self, on: bool) {
        self.use_binding = on;
        self.bound = None;
    }

    /// Allocates the input and output buffers for `shape` and binds the outputs (the feature
    /// output too when `feature`).
    fn bind(&self, shape: [usize; 4], feature: bool) -> ort::Result<Bound> {
        let (input_alloc, output_alloc) = match self.device {
            Device::Cuda(n) => {
                let pinned = |kind| {
                    MemoryInfo::new(
                        AllocationDevice::CUDA_PINNED,
                        n,
                        AllocatorType::Device,
                        kind,
                    )
                    .and_then(|info| Allocator::new(&self.session, info))
                };
                (
                    pinned(MemoryType::CPUInput)?,
                    pinned(MemoryType::CPUOutput)?,
                )
            }
            Device::Cpu => (Allocator::default(), Allocator::default()),
        };
        let input = Tensor::<f32>::new(&input_alloc, shape)?;
        let mut binding = self.session.create_binding()?;
        let output = match &self.output_name {
            Some(name) => {
                let mut t = Tensor::<f32>::new(&output_alloc, [shape[0], self.classes as usize])?;
                binding.bind_output(name.as_str(), &mut t)?;
                Some(t)
            }
            None => None,
        };
        let feature = match (&self.feature, feature) {
            (Some(f), true) => {
                let mut t = Tensor::<f32>::new(&output_alloc, [shape[0], f.dim as usize])?;
                binding.bind_output(f.name.as_str(), &mut t)?;
                Some(t)
            }
            _ => None,
        };
        Ok(Bound {
            shape,
            binding,
            input,
            output,
            feature,
            _allocators: vec![input_alloc, output_alloc],
        })
    }
}
