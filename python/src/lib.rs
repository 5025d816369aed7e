//! `distill._native`: the Rust label-store reader for Python (PyO3, abi3). `Store` opens a store
//! through `label_store::LabelStore` (the reader `distill train` uses) and hands records and
//! teacher distributions over as numpy arrays, built without the GIL and moved into numpy without a
//! copy; `Loader` replays a store through the replay crate's stream (the one `distill train`
//! uses). Errors become `distill.StoreError` (a `ValueError`) with the store's own message, or
//! a `ValueError` for a bad argument, its settings named by their keyword arguments. Never
//! depends on burn or ONNX Runtime.

use formats::{PixelBox, SoftLabel};
use label_store::LabelStore;
use numpy::ndarray::{Array1, Array2, Array4};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use replay::batch::Inputs;
use replay::stream::{
    DEFAULT_WINDOW, EpochBatches, Part, Source, Stream, StreamConfig, store_input_size,
};
use std::path::PathBuf;
use std::sync::Arc;

create_exception!(
    distill,
    StoreError,
    PyValueError,
    "A label store that cannot be read, or does not fit what it is used with; the message names the file, field, shard or chunk."
);

/// `message` (a library error) with each config field it names put as the keyword argument
/// that sets it (see `formats::field`).
fn keyword_names(message: &str) -> String {
    formats::field::rename(message, |f| {
        Some(
            match f {
                "batch" => "batch_size",
                "world" => "world_size",
                "labels" => "store",
                other => other,
            }
            .to_string(),
        )
    })
}

fn store_err(e: impl std::fmt::Display) -> PyErr {
    StoreError::new_err(keyword_names(&e.to_string()))
}

/// A finished label store, opened read-only (any number of processes may open one at once).
#[pyclass(frozen)]
struct Store {
    store: Arc<LabelStore>,
}

/// The columns of `records`, filled without the GIL.
struct Columns {
    sample: Vec<u32>,
    indices: Vec<u32>,
    logits: Vec<f32>,
    tail: Vec<f32>,
    crop: Vec<i32>,
    flip: Vec<bool>,
    cutout: Vec<i32>,
    mix: Vec<u8>,
    partner: Vec<i64>,
    partner_crop: Vec<i32>,
    partner_flip: Vec<bool>,
    mixup_lambda: Vec<f32>,
    cutmix_region: Vec<i32>,
}

/// `[x, y, w, h]`, or `[-1; 4]` for none.
fn boxed(b: Option<PixelBox>, out: &mut Vec<i32>) {
    match b {
        Some(b) => out.extend([b.x, b.y, b.w, b.h].map(i32::from)),
        None => out.extend([-1; 4]),
    }
}

impl Store {
    /// Checks `epoch` and `start..stop` against the store, naming the argument at fault.
    fn span(&self, epoch: u32, start: u32, stop: u32) -> PyResult<(u32, u32)> {
        let (e, r) = (self.store.epochs(), self.store.samples());
        if epoch >= e {
            return Err(PyValueError::new_err(format!(
                "epoch {epoch} is not one of the store's 0..{e}"
            )));
        }
        if start > stop || start < r.start || stop > r.end {
            return Err(PyValueError::new_err(format!(
                "start..stop {start}..{stop} is not inside the store's samples {r}"
            )));
        }
        Ok((start, stop))
    }

    fn labels(
        &self,
        epoch: u32,
        start: u32,
        stop: u32,
    ) -> Result<Vec<(u32, formats::Record)>, String> {
        (start..stop)
            .map(|s| {
                self.store
                    .get(epoch, s)
                    .map(|r| (s, r))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}

#[pymethods]
impl Store {
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        let store = LabelStore::open(&path).map_err(store_err)?;
        Ok(Store {
            store: Arc::new(store),
        })
    }

    /// The manifest, as a dict (FORMAT.md §2), parsed by Python from the file's own text (so
    /// every number is exactly what was written).
    #[getter]
    fn manifest<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let path = self.store.dir.join(label_store::MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| store_err(format!("{}: {e}", path.display())))?;
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Records in the store: epochs × samples.
    fn __len__(&self) -> usize {
        self.store.records() as usize
    }

    #[getter]
    fn epochs(&self) -> u32 {
        self.store.epochs()
    }

    /// The samples covered, as `(start, end)`.
    #[getter]
    fn samples(&self) -> (u32, u32) {
        let r = self.store.samples();
        (r.start, r.end)
    }

    #[getter]
    fn classes(&self) -> u32 {
        self.store.manifest.classes
    }

    #[getter]
    fn k(&self) -> u32 {
        self.store.manifest.k
    }

    /// Reads every chunk and checks every checksum and record; raises `StoreError` naming the
    /// shard and chunk of each fault, else returns the counts checked.
    fn verify<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dir = self.store.dir.clone();
        let r = py.detach(|| label_store::verify(&dir));
        if !r.ok {
            return Err(StoreError::new_err(r.errors.join("\n")));
        }
        let d = PyDict::new(py);
        d.set_item("chunks_checked", r.chunks_checked)?;
        d.set_item("records_checked", r.records_checked)?;
        Ok(d)
    }

    /// The records of samples `start..stop` of `epoch` as numpy arrays: `sample`, `indices`
    /// and `logits` (`[n, k]`, the top-k classes and their logits minus the top one), `tail`
    /// (`[n, 2]`: t(1), t(4)), and the realized augmentation: `crop`, `cutout`, `partner_crop`,
    /// `cutmix_region` (`[n, 4]` x, y, w, h; −1 for none), `flip`, `partner_flip`, `mix` (0 none,
    /// 1 mixup, 2 cutmix), `partner` (−1 for none), `mixup_lambda` (NaN unless mixup).
    #[pyo3(signature = (epoch, start, stop))]
    fn records<'py>(
        &self,
        py: Python<'py>,
        epoch: u32,
        start: u32,
        stop: u32,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (start, stop) = self.span(epoch, start, stop)?;
        let k = self.store.manifest.k as usize;
        let cols = py
            .detach(|| -> Result<Columns, String> {
                let recs = self.labels(epoch, start, stop)?;
                let n = recs.len();
                let mut c = Columns {
                    sample: Vec::with_capacity(n),
                    indices: Vec::with_capacity(n * k),
                    logits: Vec::with_capacity(n * k),
                    tail: Vec::with_capacity(n * 2),
                    crop: Vec::with_capacity(n * 4),
                    flip: Vec::with_capacity(n),
                    cutout: Vec::with_capacity(n * 4),
                    mix: Vec::with_capacity(n),
                    partner: Vec::with_capacity(n),
                    partner_crop: Vec::with_capacity(n * 4),
                    partner_flip: Vec::with_capacity(n),
                    mixup_lambda: Vec::with_capacity(n),
                    cutmix_region: Vec::with_capacity(n * 4),
                };
                for (s, r) in recs {
                    let SoftLabel {
                        indices,
                        logits,
                        tail,
                    } = r.label;
                    c.sample.push(s);
                    c.indices.extend(indices);
                    c.logits.extend(logits);
                    c.tail.extend(tail);
                    let a = r.aug;
                    boxed(a.crop, &mut c.crop);
                    c.flip.push(a.flip);
                    boxed(a.cutout, &mut c.cutout);
                    match a.mix {
                        None => {
                            c.mix.push(0);
                            c.partner.push(-1);
                            boxed(None, &mut c.partner_crop);
                            c.partner_flip.push(false);
                            c.mixup_lambda.push(f32::NAN);
                            boxed(None, &mut c.cutmix_region);
                        }
                        Some(m) => {
                            c.partner.push(i64::from(m.partner));
                            boxed(m.partner_crop, &mut c.partner_crop);
                            c.partner_flip.push(m.partner_flip);
                            match m.kind {
                                formats::MixKind::Mixup { lambda_q } => {
                                    c.mix.push(1);
                                    c.mixup_lambda.push(f32::from(lambda_q) / 65535.0);
                                    boxed(None, &mut c.cutmix_region);
                                }
                                formats::MixKind::Cutmix { region } => {
                                    c.mix.push(2);
                                    c.mixup_lambda.push(f32::NAN);
                                    boxed(Some(region), &mut c.cutmix_region);
                                }
                            }
                        }
                    }
                }
                Ok(c)
            })
            .map_err(store_err)?;
        let n = cols.sample.len();
        let d = PyDict::new(py);
        let two = |v: Vec<i32>, w: usize| Array2::from_shape_vec((n, w), v).expect("n × w values");
        d.set_item("sample", cols.sample.into_pyarray(py))?;
        d.set_item(
            "indices",
            Array2::from_shape_vec((n, k), cols.indices)
                .expect("n × k")
                .into_pyarray(py),
        )?;
        d.set_item(
            "logits",
            Array2::from_shape_vec((n, k), cols.logits)
                .expect("n × k")
                .into_pyarray(py),
        )?;
        d.set_item(
            "tail",
            Array2::from_shape_vec((n, 2), cols.tail)
                .expect("n × 2")
                .into_pyarray(py),
        )?;
        d.set_item("crop", two(cols.crop, 4).into_pyarray(py))?;
        d.set_item("flip", Array1::from(cols.flip).into_pyarray(py))?;
        d.set_item("cutout", two(cols.cutout, 4).into_pyarray(py))?;
        d.set_item("mix", cols.mix.into_pyarray(py))?;
        d.set_item("partner", cols.partner.into_pyarray(py))?;
        d.set_item("partner_crop", two(cols.partner_crop, 4).into_pyarray(py))?;
        d.set_item("partner_flip", cols.partner_flip.into_pyarray(py))?;
        d.set_item("mixup_lambda", cols.mixup_lambda.into_pyarray(py))?;
        d.set_item("cutmix_region", two(cols.cutmix_region, 4).into_pyarray(py))?;
        Ok(d)
    }

    /// The teacher distribution of samples `start..stop` of `epoch` at `temperature`, rebuilt
    /// from the stored top-k (FORMAT.md §5): `[n, classes]` float32.
    #[pyo3(signature = (epoch, start, stop, temperature = 1.0))]
    fn probs<'py>(
        &self,
        py: Python<'py>,
        epoch: u32,
        start: u32,
        stop: u32,
        temperature: f32,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (start, stop) = self.span(epoch, start, stop)?;
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "temperature {temperature} must be > 0"
            )));
        }
        if !self.store.manifest.has_labels() {
            return Err(store_err(format!(
                "{}: the store holds no soft labels (an embedding-only teacher's views and \
                 features; read them with features())",
                self.store.dir.display()
            )));
        }
        let classes = self.store.manifest.classes as usize;
        let out = py
            .detach(|| -> Result<Vec<f32>, String> {
                let recs = self.labels(epoch, start, stop)?;
                let mut out = vec![0f32; recs.len() * classes];
                for ((_, r), row) in recs.iter().zip(out.chunks_exact_mut(classes)) {
                    r.label.dense_into(temperature, row);
                }
                Ok(out)
            })
            .map_err(store_err)?;
        let n = out.len() / classes.max(1);
        Ok(Array2::from_shape_vec((n, classes), out)
            .expect("n × classes")
            .into_pyarray(py))
    }

    /// The teacher features of samples `start..stop` of `epoch`, feature head `head` (a store
    /// labelled with `--feature`; `manifest["features"]["heads"]` lists them): `[n, d]` float32,
    /// decoded from the stored codec.
    #[pyo3(signature = (epoch, start, stop, head = 0))]
    fn features<'py>(
        &self,
        py: Python<'py>,
        epoch: u32,
        start: u32,
        stop: u32,
        head: usize,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (start, stop) = self.span(epoch, start, stop)?;
        let (out, d) = py
            .detach(|| -> Result<(Vec<f32>, usize), label_store::StoreError> {
                let fs = self.store.features(head)?;
                let d = fs.dim();
                let epoch = fs.decode_epoch(epoch)?;
                let mut out = vec![0f32; (stop - start) as usize * d];
                for (s, row) in (start..stop).zip(out.chunks_exact_mut(d)) {
                    epoch.get_into(s, row)?;
                }
                Ok((out, d))
            })
            .map_err(store_err)?;
        let n = out.len() / d.max(1);
        Ok(Array2::from_shape_vec((n, d), out)
            .expect("n × d")
            .into_pyarray(py))
    }

    /// The pixels record (`epoch`, `sample`) replays to — what the teacher was shown — as u8
    /// `[height, width(, channels)]` at the store's input size, from `data` (the dataset the
    /// store was labelled from; checked by fingerprint). A mixup's input is a blend of two
    /// images: it comes back rounded to u8 (`255 · (λ·a + (1−λ)·b)`, half to even); every other record
    /// is exact.
    #[pyo3(signature = (epoch, sample, data, label_key = None))]
    fn view<'py>(
        &self,
        py: Python<'py>,
        epoch: u32,
        sample: u32,
        data: PathBuf,
        label_key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let store = &self.store;
        let size = store_input_size(store).ok_or_else(|| {
            StoreError::new_err(format!(
                "{}: the store names no teacher input size (a synthetic store): nothing to view",
                store.dir.display()
            ))
        })?;
        let (c, px) = py.detach(|| -> Result<(usize, Vec<u8>), PyErr> {
            let opts = datasets::OpenOptions {
                label_key,
                classes: None,
                default_classes: store.manifest.label_classes(),
                decoder: replay::stream::store_decoder(store).map_err(store_err)?,
                unlabelled: !store.manifest.dataset.labelled,
            };
            let split = &store.manifest.dataset.split;
            let ds = datasets::open_with(&data, None, split, &opts)
                .map_err(|e| PyValueError::new_err(format!("data: {e}")))?;
            replay::stream::check_store(store, ds.as_ref(), size).map_err(store_err)?;
            let rec = store.get(epoch, sample).map_err(store_err)?;
            let rule = store.view_rule().map_err(store_err)?;
            let image = |s: u32| {
                ds.image(s)
                    .map_err(|e| PyValueError::new_err(format!("data: sample {s}: {e}")))
            };
            let primary = image(sample)?;
            let partner = rec.aug.mix.map(|m| image(m.partner)).transpose()?;
            let c = usize::from(primary.channels);
            let n = c * (size.0 * size.1) as usize;
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            let lambda = replay::apply::apply_u8(
                &rule,
                &rec.aug,
                &primary,
                partner.as_ref(),
                size.0,
                size.1,
                &mut a,
                &mut b,
            )
            .map_err(|e| store_err(format!("record (epoch {epoch}, sample {sample}): {e}")))?;
            if let Some(lam) = lambda {
                let mut x = vec![0f32; n];
                replay::apply::combine_into(&a, Some((&b, lam)), &mut x);
                for (o, v) in a.iter_mut().zip(&x) {
                    *o = (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8;
                }
            }
            Ok((c, a))
        })?;
        hwc_array(py, &px, c, (size.0 as usize, size.1 as usize), c == 1)
    }

    fn __repr__(&self) -> String {
        let r = self.store.samples();
        format!(
            "distill.Store({:?}: {} epochs × samples {r}, {} classes, top-{})",
            self.store.dir,
            self.store.epochs(),
            self.store.manifest.classes,
            self.store.manifest.k
        )
    }
}

/// Batches of a store replayed on its data, as `distill train` makes them: each record's stored
/// augmentation applied to its images (bit-identical to what the teacher saw), normalized, with
/// the mixed hard labels and the teacher distribution at `temperature`. Epoch `e` (see
/// `set_epoch`) replays store epoch `e mod E` in an order drawn from (`seed`, `e`), the same on
/// every rank; rank `rank` of `world_size` gets its contiguous part of it. The work runs on
/// `threads` Rust threads with the GIL released; arrays are handed over without a copy.
/// `shuffle_window` and `multi_crop` are `distill train`'s `--shuffle-window` and
/// `--multi-crop`; with the same settings the batches equal `distill train`'s bit for bit.
/// `pixels=True` hands over u8 `pixels` instead of `inputs` (and for batches with mixups the
/// partner's `partner` pixels, `lambda` and `rest` = 1 − λ per row), a quarter of the bytes to
/// move to a GPU: `inputs = ((pixels/255)·λ + (partner/255)·rest − mean) · (1/std)` per
/// channel, in f32 in that order, gives the same bits (FORMAT.md §4.1 "Replaying in u8").
/// `data` may be WebDataset tar shards (a directory, a `.tar` or a brace pattern); `label_key`
/// is then the extension of their label members (default `cls`, `distill label --label-key`).
/// A store labelled from data without hard labels (`distill label --unlabelled`) reads its data
/// so (`unlabelled` defaults to the store's); its batches have `hard = None` and
/// `labels = None`. A store of a list of datasets (`distill label --data A --data B …`) takes
/// `data` as the list of their paths, each read as the store records it; where some rows have
/// no hard label, batches carry `labelled` (a bool per row; the others' `hard` rows are zeros
/// and their `labels` 2^32 − 1). `features=H` (a store labelled with `--feature`) adds the
/// teacher's stored features of each record's view, feature head `H`, as `features` (float32
/// `[n, d]`, decoded in Rust), for `distill.torch.feature_loss`.
#[pyclass]
struct Loader {
    stream: Arc<Stream>,
    store: Arc<LabelStore>,
    temperature: f32,
    epoch: u32,
    current: Option<EpochBatches>,
    shape: (usize, usize, usize),
    /// The normalization (the stream makes f32 inputs with it already).
    mean: Vec<f32>,
    std: Vec<f32>,
}

#[pymethods]
impl Loader {
    #[new]
    #[pyo3(signature = (store, data, batch_size, shuffle = true, seed = 0, temperature = 1.0,
        threads = None, rank = 0, world_size = 1, drop_last = false, size = None, mean = None,
        std = None, shuffle_window = None, multi_crop = 1, pixels = false, label_key = None,
        unlabelled = None, features = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        temperature: f32,
        threads: Option<usize>,
        rank: usize,
        world_size: usize,
        drop_last: bool,
        size: Option<(u32, u32)>,
        mean: Option<Vec<f32>>,
        std: Option<Vec<f32>>,
        shuffle_window: Option<usize>,
        multi_crop: u32,
        pixels: bool,
        label_key: Option<String>,
        unlabelled: Option<bool>,
        features: Option<usize>,
    ) -> PyResult<Self> {
        let store = match store.extract::<PyRef<'_, Store>>() {
            Ok(s) => Arc::clone(&s.store),
            Err(_) => {
                let path: PathBuf = store.extract().map_err(|_| {
                    PyValueError::new_err("store must be a distill.Store or a path")
                })?;
                Arc::new(LabelStore::open(&path).map_err(store_err)?)
            }
        };
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "temperature {temperature} must be > 0"
            )));
        }
        let paths: Vec<PathBuf> = match data.extract::<PathBuf>() {
            Ok(p) => vec![p],
            Err(_) => data.extract().map_err(|_| {
                PyValueError::new_err("data must be a path or a list of paths (a --data list)")
            })?,
        };
        // Tar shards: the class count is the store's (a subset of shards may lack a class).
        let opts = datasets::OpenOptions {
            label_key,
            classes: None,
            default_classes: store.manifest.label_classes(),
            decoder: replay::stream::store_decoder(&store).map_err(store_err)?,
            // As the store's data was read, unless told (then the store checks it).
            unlabelled: unlabelled.unwrap_or(!store.manifest.dataset.labelled),
        };
        let ds = py
            .detach(|| open_data(&store, &paths, &opts))
            .map_err(|e| PyValueError::new_err(format!("data: {e}")))?;
        let c = usize::from(ds.channels());
        let size = match size.or_else(|| store_input_size(&store)) {
            Some(s) => s,
            None => ds
                .uniform_dims()
                .map_err(|e| PyValueError::new_err(format!("size: {e}")))?,
        };
        let threads = threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let mean = mean.unwrap_or_else(|| vec![0.5; c]);
        let std = std.unwrap_or_else(|| vec![0.5; c]);
        let cfg = StreamConfig {
            shuffle,
            window: shuffle_window.unwrap_or(DEFAULT_WINDOW),
            multi_crop,
            pixels,
            part: Part {
                rank,
                world: world_size,
                drop_last,
            },
            ..StreamConfig::training(batch_size, threads, seed, mean.clone(), std.clone(), size)
        };
        let stream = py
            .detach(|| {
                let s = Stream::new(ds, Source::Store(Arc::clone(&store)), cfg)?;
                match features {
                    Some(h) => s.with_features(h),
                    None => Ok(s),
                }
            })
            .map_err(|e| match e {
                // The stream checks the settings; its messages name its fields.
                replay::ReplayError::Config(m) => PyValueError::new_err(keyword_names(&m)),
                other => store_err(other),
            })?;
        Ok(Loader {
            stream: Arc::new(stream),
            store,
            temperature,
            epoch: 0,
            current: None,
            shape: (c, size.1 as usize, size.0 as usize),
            mean,
            std,
        })
    }

    /// The temperature of the `teacher` arrays (the losses check it against theirs).
    #[getter]
    fn temperature(&self) -> f32 {
        self.temperature
    }

    /// The per-channel normalization of the inputs (`pixels=True` batches leave it to the
    /// consumer: `distill.torch.ReplayDataset` applies it on the device).
    #[getter]
    fn mean(&self) -> Vec<f32> {
        self.mean.clone()
    }

    #[getter]
    fn std(&self) -> Vec<f32> {
        self.std.clone()
    }

    /// Batches per epoch (of this rank).
    fn __len__(&self) -> usize {
        self.stream.batches()
    }

    /// The epoch the next iteration replays (as `DistributedSampler.set_epoch`).
    fn set_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
        self.current = None;
    }

    /// The store epoch that epoch `epoch` replays.
    fn store_epoch(&self, epoch: u32) -> Option<u32> {
        self.stream.store_epoch(epoch)
    }

    /// Images decoded so far in the current epoch.
    #[getter]
    fn images_decoded(&self) -> u64 {
        self.current
            .as_ref()
            .map_or(0, EpochBatches::images_decoded)
    }

    fn __iter__(mut slf: PyRefMut<'_, Self>) -> PyResult<PyRefMut<'_, Self>> {
        let (stream, store, epoch, tau) = (
            Arc::clone(&slf.stream),
            Arc::clone(&slf.store),
            slf.epoch,
            slf.temperature,
        );
        let batches = slf
            .py()
            .detach(move || -> Result<EpochBatches, String> {
                let decoded = stream
                    .store_epochs(epoch)
                    .into_iter()
                    .map(|e| {
                        let mut d = store.decode_epoch(e)?;
                        if let Some(f) = stream.feature_store() {
                            d.features = Some(f.decode_epoch(e)?);
                        }
                        Ok(Arc::new(d))
                    })
                    .collect::<Result<Vec<_>, label_store::StoreError>>()
                    .map_err(|e| e.to_string())?;
                // A store without soft labels gives views and features only.
                let tau = store.manifest.has_labels().then_some(tau);
                stream.epoch(epoch, decoded, tau).map_err(|e| e.to_string())
            })
            .map_err(store_err)?;
        slf.current = Some(batches);
        Ok(slf)
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(batches) = self.current.as_mut() else {
            return Ok(None);
        };
        let Some(next) = py.detach(|| batches.next()) else {
            return Ok(None);
        };
        let b = next.map_err(store_err)?;
        let (c, h, w) = self.shape;
        let classes = b.hard.len() / b.n.max(1);
        let d = PyDict::new(py);
        let shape = (b.n, c, h, w);
        let bad = |e: numpy::ndarray::ShapeError| store_err(format!("inputs: {e}"));
        match b.inputs {
            Inputs::F32(v) => {
                let a = Array4::from_shape_vec(shape, v).map_err(bad)?;
                d.set_item("inputs", a.into_pyarray(py))?;
            }
            Inputs::U8(p) => {
                let a = Array4::from_shape_vec(shape, p.pixels).map_err(bad)?;
                d.set_item("pixels", a.into_pyarray(py))?;
                if let Some(m) = p.mix {
                    let a = Array4::from_shape_vec(shape, m.partner).map_err(bad)?;
                    d.set_item("partner", a.into_pyarray(py))?;
                    d.set_item("lambda", m.lambda.into_pyarray(py))?;
                    d.set_item("rest", m.rest.into_pyarray(py))?;
                }
            }
        }
        // Data without hard labels: no hard labels to hand over.
        if self.stream.labelled() {
            // A list with unlabelled data: which rows hold a hard label (the others are zeros,
            // their `labels` 2^32 − 1).
            if b.has_hard.iter().any(|&h| !h) {
                d.set_item("labelled", b.has_hard.into_pyarray(py))?;
            }
            d.set_item(
                "hard",
                Array2::from_shape_vec((b.n, classes), b.hard)
                    .expect("n × classes")
                    .into_pyarray(py),
            )?;
            d.set_item("labels", b.labels.into_pyarray(py))?;
        } else {
            d.set_item("hard", py.None())?;
            d.set_item("labels", py.None())?;
        }
        if let Some(t) = b.teacher {
            d.set_item(
                "teacher",
                Array2::from_shape_vec((b.n, classes), t)
                    .expect("n × classes")
                    .into_pyarray(py),
            )?;
        }
        if let Some(f) = b.features {
            let dim = f.len() / b.n.max(1);
            d.set_item(
                "features",
                Array2::from_shape_vec((b.n, dim), f)
                    .expect("n × d")
                    .into_pyarray(py),
            )?;
        }
        d.set_item("samples", b.samples.into_pyarray(py))?;
        Ok(Some(d))
    }
}

/// The data of `store` at `paths`: one dataset (its split the store's, read with `opts`), or a
/// list, each part read as the store's manifest records it (format, split, hard labels or none).
fn open_data(
    store: &LabelStore,
    paths: &[PathBuf],
    opts: &datasets::OpenOptions,
) -> Result<Arc<dyn datasets::Dataset>, datasets::DataError> {
    let m = &store.manifest;
    if let ([one], true) = (paths, m.datasets.is_empty()) {
        return Ok(datasets::open_with(one, None, &m.dataset.split, opts)?.into());
    }
    if paths.len() != m.datasets.len() {
        return Err(datasets::DataError::invalid(
            "data",
            format!(
                "{} data paths for a store labelled from {} datasets",
                paths.len(),
                m.datasets.len().max(1)
            ),
        ));
    }
    let parts = paths
        .iter()
        .zip(&m.datasets)
        .map(|(p, f)| {
            let part = datasets::OpenOptions {
                unlabelled: !f.labelled,
                ..opts.clone()
            };
            datasets::open_with(p, f.format.parse().ok(), &f.split, &part)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(datasets::DataList::new(parts)?))
}

/// u8 pixels `[h, w]` or `[h, w, c]` (c ≤ 4), or the box `(x, y, w, h)` of them (copied as
/// `PIL.Image.crop` copies), as an image; errors name the argument.
fn image_arg(
    pixels: &PyReadonlyArrayDyn<'_, u8>,
    region: Option<(u32, u32, u32, u32)>,
) -> PyResult<datasets::Image> {
    let shape = pixels.shape().to_vec();
    let (h, w, c) = match shape[..] {
        [h, w] => (h, w, 1),
        [h, w, c] => (h, w, c),
        _ => {
            return Err(PyValueError::new_err(format!(
                "pixels: shape {shape:?} is not [h, w] or [h, w, c]"
            )));
        }
    };
    let side = |v: usize, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|&v| (1..=65535).contains(&v))
            .ok_or_else(|| PyValueError::new_err(format!("pixels: {what} {v} is not 1..=65535")))
    };
    let (w, h) = (side(w, "width")?, side(h, "height")?);
    let c = u8::try_from(c)
        .ok()
        .filter(|&c| (1..=4).contains(&c))
        .ok_or_else(|| PyValueError::new_err(format!("pixels: {c} channels, not 1 to 4")))?;
    let (x0, y0, bw, bh) = region.unwrap_or((0, 0, w, h));
    let fits = bw >= 1
        && bh >= 1
        && u64::from(x0) + u64::from(bw) <= u64::from(w)
        && u64::from(y0) + u64::from(bh) <= u64::from(h);
    if !fits {
        return Err(PyValueError::new_err(format!(
            "box: ({x0}, {y0}, {bw}, {bh}) does not lie inside the {w}x{h} image"
        )));
    }
    // Row by row from the contiguous array (numpy's default layout), else element-wise.
    let (row, c8) = (w as usize * usize::from(c), usize::from(c));
    let data = match pixels.as_slice() {
        Ok(all) => {
            let mut data = Vec::with_capacity(bw as usize * bh as usize * c8);
            for y in y0..y0 + bh {
                let at = y as usize * row + x0 as usize * c8;
                data.extend_from_slice(&all[at..at + bw as usize * c8]);
            }
            data
        }
        Err(_) => {
            let a = pixels.as_array();
            let view = a.slice_each_axis(|ax| match ax.axis.index() {
                0 => numpy::ndarray::Slice::from(y0 as usize..(y0 + bh) as usize),
                1 => numpy::ndarray::Slice::from(x0 as usize..(x0 + bw) as usize),
                _ => numpy::ndarray::Slice::from(..),
            });
            view.iter().copied().collect()
        }
    };
    datasets::Image::new(bw, bh, c, data).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// `[h, w, c]` (or `[h, w]` for one channel) from CHW u8.
fn hwc_array<'py>(
    py: Python<'py>,
    chw: &[u8],
    c: usize,
    (w, h): (usize, usize),
    flat: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let plane = w * h;
    let mut hwc = vec![0u8; chw.len()];
    for (i, px) in hwc.chunks_exact_mut(c).enumerate() {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = chw[ch * plane + i];
        }
    }
    let shape: Vec<usize> = if flat { vec![h, w] } else { vec![h, w, c] };
    let a = numpy::ndarray::ArrayD::from_shape_vec(shape, hwc)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any())
}

/// Renders the whole of `img` under `rule` (flipped if asked) at `size`, as `[h, w(, c)]` u8.
fn render_view<'py>(
    py: Python<'py>,
    img: datasets::Image,
    rule: formats::view::ViewRule,
    flip: bool,
    (ow, oh): (u32, u32),
    flat: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if ow == 0 || oh == 0 {
        return Err(PyValueError::new_err(format!(
            "size: {ow}x{oh} has no pixels"
        )));
    }
    let c = usize::from(img.channels);
    let n = c * ow as usize * oh as usize;
    let params = formats::AugParams {
        flip,
        ..Default::default()
    };
    let out = py
        .detach(|| -> Result<Vec<u8>, String> {
            let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
            replay::apply::apply_u8(&rule, &params, &img, None, ow, oh, &mut a, &mut b)
                .map_err(|e| e.to_string())?;
            Ok(a)
        })
        .map_err(PyValueError::new_err)?;
    hwc_array(py, &out, c, (ow as usize, oh as usize), flat)
}

fn interpolation_arg(name: &str) -> PyResult<formats::Interpolation> {
    formats::Interpolation::parse(name, "interpolation")
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// `pixels` (u8 `[h, w]` or `[h, w, c]`) cropped to `box` (`(x, y, w, h)`, or `None` for the
/// whole image), resized to `size` (`(width, height)`) with Pillow's `interpolation` and
/// flipped if asked: the pixels `PIL.Image.crop(...).resize(size, filter)` gives, byte for
/// byte, and what distill feeds a teacher for such a crop. Returns `[height, width(, c)]`.
#[pyfunction]
#[pyo3(signature = (pixels, box_, size, interpolation = "bilinear", flip = false))]
fn resized_crop<'py>(
    py: Python<'py>,
    pixels: PyReadonlyArrayDyn<'py, u8>,
    box_: Option<(u32, u32, u32, u32)>,
    size: (u32, u32),
    interpolation: &str,
    flip: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let f = interpolation_arg(interpolation)?;
    let flat = pixels.ndim() == 2;
    // Cropped first, as torchvision crops a PIL image: taps stop at the box's edges.
    let img = image_arg(&pixels, box_)?;
    let rule = formats::view::ViewRule {
        kernel: formats::view::Kernel::Pillow(f),
        center: None,
    };
    render_view(py, img, rule, flip, size, flat)
}

/// torchvision's evaluation view of `pixels` (u8 `[h, w]` or `[h, w, c]`): `Resize(floor(
/// min(size) / crop_pct))` of the whole image with Pillow's `interpolation`, then
/// `CenterCrop(size)` (`size` = `(width, height)`), byte for byte; what `distill label --aug
/// center` feeds a teacher. Returns `[height, width(, c)]`.
#[pyfunction]
#[pyo3(signature = (pixels, size, crop_pct = 0.875, interpolation = "bilinear"))]
fn center_crop<'py>(
    py: Python<'py>,
    pixels: PyReadonlyArrayDyn<'py, u8>,
    size: (u32, u32),
    crop_pct: f64,
    interpolation: &str,
) -> PyResult<Bound<'py, PyAny>> {
    let f = interpolation_arg(interpolation)?;
    if !(crop_pct > 0.0 && crop_pct <= 1.0) {
        return Err(PyValueError::new_err(format!(
            "crop_pct: {crop_pct} is not in (0, 1]"
        )));
    }
    let flat = pixels.ndim() == 2;
    let img = image_arg(&pixels, None)?;
    let rule = formats::view::ViewRule {
        kernel: formats::view::Kernel::Pillow(f),
        center: Some(crop_pct),
    };
    render_view(py, img, rule, false, size, flat)
}

/// The RGB pixels (u8 `[h, w, 3]`) distill's image folders and tar shards decode `data` (the
/// encoded bytes of a JPEG or PNG file) to: what the teacher is shown before any crop, equal to
/// Pillow's `Image.open(f).convert("RGB")` (FORMAT.md §4.1, "Decoding").
#[pyfunction]
fn decode_image<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let img = py
        .detach(|| datasets::ImageDecoder::default().decode(data))
        .map_err(PyValueError::new_err)?;
    let (w, h) = (img.width as usize, img.height as usize);
    let a = numpy::ndarray::Array3::from_shape_vec((h, w, 3), img.data)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(a.into_pyarray(py).into_any())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Store>()?;
    m.add_class::<Loader>()?;
    m.add_function(wrap_pyfunction!(resized_crop, m)?)?;
    m.add_function(wrap_pyfunction!(center_crop, m)?)?;
    m.add_function(wrap_pyfunction!(decode_image, m)?)?;
    m.add("StoreError", m.py().get_type::<StoreError>())?;
    Ok(())
}
