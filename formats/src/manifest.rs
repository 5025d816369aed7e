//! `manifest.json`: what a label store is, where its shards are, and how good its labels are.
//!
//! The manifest is the store's table of contents and its identity: a student run compares the
//! dataset fingerprint in it against its own data before it trusts a single record.

use crate::error::FormatError;
use crate::record::ValueCodec;
use serde::{Deserialize, Serialize};

/// Value of the `format` key.
pub const FORMAT_NAME: &str = "distill-label-store";

/// Current on-disk format version (manifest and shard files). A reader refuses newer versions;
/// adding optional manifest keys does not change it (readers ignore keys they do not know).
/// Version 2: records replay through Pillow's resampling (`recipe.interpolation`, and the
/// centre crop taken from the resized whole image); version 1 stores replay with the 2×2
/// bilinear they were labelled with (the replay crate's `ViewRule::of_store`).
/// Version 3: images decoded as Pillow decodes them (libjpeg-turbo); stores of versions 1 and 2
/// replay with the decoder they were labelled with (the datasets crate's `ImageDecoder::of_store`).
/// Version 4: the data may have no hard labels (`dataset.labelled` false: a transfer set read
/// with `--unlabelled`). Writers record the lowest version that describes a store
/// ([`Manifest::needed_version`]), so stores of labelled data stay readable by version 3 readers
/// while older readers refuse, rather than misread, a store whose data has no hard labels.
/// Version 5: the store may hold teacher features (`features`, in files of their own); older
/// readers would drop them when merging or resuming, so they must refuse such a store.
/// Version 6: the store may hold no soft labels (`classes` and `k` 0: an embedding-only
/// teacher's features, rows of the realized views alone); older readers would take its rows for
/// labels of a layout they cannot build.
pub const FORMAT_VERSION: u32 = 6;

/// The first version whose data may lack hard labels or be a list of datasets.
pub const UNLABELLED_VERSION: u32 = 4;

/// The first version whose stores may hold teacher features.
pub const FEATURES_VERSION: u32 = 5;

/// The first version whose stores may hold no soft labels (views and features only).
pub const VIEWS_ONLY_VERSION: u32 = 6;

/// The last version before data without hard labels: what a store of labelled data is written as.
pub const LABELLED_VERSION: u32 = 3;

/// What a store records of the decoder that produced its inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeProbe {
    /// Decoder crate and version (`none` for raw arrays).
    pub decoder: String,
    /// Probed sample indices, spread evenly over the split.
    pub samples: Vec<u32>,
    /// `xxh3:` + hex of each probed sample's width, height, channels and pixels.
    pub pixels_xxh3: Vec<String>,
}

/// The order blocks walk the samples in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockOrder {
    /// Sample order (recipes without mixing: nothing depends on a block's members).
    Sequential,
    /// A seeded permutation of the samples (recipes that mix draw partners inside the block).
    Permuted,
}

/// How samples are grouped into decode-once blocks (recorded in the manifest as `blocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// At most this many samples per block.
    pub images: u32,
    /// At most this many bytes of decoded u8 pixels per block (width × height × channels).
    pub bytes: u64,
    pub order: BlockOrder,
}

impl BlockConfig {
    /// Checks the bounds, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.images == 0 {
            return Err(FormatError::invalid(
                "blocks.images",
                "a block holds at least one image",
            ));
        }
        if self.bytes == 0 {
            return Err(FormatError::invalid(
                "blocks.bytes",
                "a block needs room for at least one image",
            ));
        }
        Ok(())
    }
}

/// A half-open range of sample indices `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRange {
    pub start: u32,
    pub end: u32,
}

impl SampleRange {
    /// Number of samples in the range.
    pub fn len(&self) -> u32 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the range holds no sample.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `index` lies in the range.
    pub fn contains(&self, index: u32) -> bool {
        (self.start..self.end).contains(&index)
    }
}

impl std::fmt::Display for SampleRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// One teacher model that produced the labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherInfo {
    /// File name as given (no directory).
    pub file: String,
    /// Lower-case hex SHA-256 of the model file.
    pub sha256: String,
    /// Model input shape; -1 for dynamic dimensions.
    pub input_shape: Vec<i64>,
    pub classes: u32,
}

/// Identity of the dataset split the store was made from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetFingerprint {
    /// Reader that produced the samples (`mnist-idx`, `cifar10`, `image-folder`, `synthetic`, …).
    pub format: String,
    /// Split name (`train`, `test`, …).
    pub split: String,
    pub samples: u64,
    /// xxh3-64 (hex) over the labels in sample order.
    pub labels_xxh3: String,
    /// xxh3-64 (hex) over the sample bytes in sample order.
    pub content_xxh3: String,
    /// Whether the samples' hard labels were read. `false` for a transfer set read with
    /// `--unlabelled` (then `labels_xxh3` hashes no label, and the store's classes are its
    /// teacher's); absent (true) in stores of labelled data, so their manifests read as before.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub labelled: bool,
}

impl Default for DatasetFingerprint {
    fn default() -> Self {
        DatasetFingerprint {
            format: String::new(),
            split: String::new(),
            samples: 0,
            labels_xxh3: String::new(),
            content_xxh3: String::new(),
            labelled: true,
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl DatasetFingerprint {
    /// Names the first field in which `self` (the store's) and `data` (the data at hand) differ,
    /// or `None` when they are the same dataset.
    pub fn mismatch(&self, data: &DatasetFingerprint) -> Option<String> {
        if self.labelled != data.labelled {
            let read = |l: bool| {
                if l {
                    "with its hard labels"
                } else {
                    "`unlabelled`"
                }
            };
            return Some(format!(
                "dataset.labelled differs: the store's data was read {}, the data at hand {}",
                read(self.labelled),
                read(data.labelled)
            ));
        }
        let fields: [(&str, String, String); 5] = [
            ("format", self.format.clone(), data.format.clone()),
            ("split", self.split.clone(), data.split.clone()),
            (
                "samples",
                self.samples.to_string(),
                data.samples.to_string(),
            ),
            (
                "labels_xxh3",
                self.labels_xxh3.clone(),
                data.labels_xxh3.clone(),
            ),
            (
                "content_xxh3",
                self.content_xxh3.clone(),
                data.content_xxh3.clone(),
            ),
        ];
        fields
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(f, a, b)| format!("dataset.{f} differs: the store has {a}, the data has {b}"))
    }
}

/// Names the first dataset of a list in which a store's `parts` and the data's differ (each
/// by [`DatasetFingerprint::mismatch`]), or their counts; `None` when they are the same list
/// (or neither is one).
pub fn parts_mismatch(store: &[DatasetFingerprint], data: &[DatasetFingerprint]) -> Option<String> {
    if store.len() != data.len() {
        let n = |v: &[DatasetFingerprint]| match v.len() {
            0 => "one dataset".to_string(),
            n => format!("a list of {n} datasets"),
        };
        return Some(format!(
            "the datasets differ: the store was labelled from {}, the data is {}",
            n(store),
            n(data)
        ));
    }
    store.iter().zip(data).enumerate().find_map(|(i, (a, b))| {
        a.mismatch(b)
            .map(|d| format!("dataset {} of the list: {d}", i + 1))
    })
}

/// One shard file of a store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Path relative to the store directory.
    pub file: String,
    /// Samples the shard holds, for every epoch.
    pub samples: SampleRange,
    /// Records in the shard (`samples.len() × epochs`).
    pub records: u64,
    pub chunks: u32,
    /// File size in bytes.
    pub bytes: u64,
    /// `xxh3:` + hex of the shard's index checksum, which covers every chunk checksum.
    pub checksum: String,
}

/// File name of the shard holding `samples`: `shard-SSSSSSSSSS-EEEEEEEEEE.dls`.
pub fn shard_file_name(samples: SampleRange) -> String {
    format!("shard-{:010}-{:010}.dls", samples.start, samples.end)
}

impl ShardEntry {
    /// Why `file` could lead a reader to a file other than this shard, if it could. Allowed: a
    /// relative path whose last part is [`shard_file_name`] of `samples`, with `..` only as a
    /// leading run (what `merge` writes when it cannot hard-link a shard into the store);
    /// refused: absolute paths, and `.`, empty or `..` parts anywhere else (FORMAT.md §1).
    pub fn file_problem(&self) -> Option<String> {
        self.file_problem_named(&shard_file_name(self.samples))
    }

    /// [`ShardEntry::file_problem`] for a file whose last part must be `want`.
    pub fn file_problem_named(&self, want: &str) -> Option<String> {
        let f = &self.file;
        if f.starts_with('/') || f.contains('\\') || f.contains('\0') {
            return Some(format!(
                "{f:?}: absolute paths, backslashes and NUL are not allowed"
            ));
        }
        let parts: Vec<&str> = f.split('/').collect();
        let (name, dirs) = parts.split_last().expect("split gives one part");
        let ups = dirs.iter().take_while(|p| **p == "..").count();
        if dirs[ups..]
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Some(format!(
                "{f:?}: only a leading run of `..` may leave the store directory"
            ));
        }
        (*name != want).then(|| {
            format!(
                "{f:?}: the shard of samples {} is named {want}",
                self.samples
            )
        })
    }
}

/// Running sums the writer keeps per chunk; FORMAT.md fixes their order in chunk headers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QualitySums {
    /// Records seen.
    pub records: f64,
    /// Σ top-k probability mass at τ = 1 of the stored labels.
    pub top_mass: f64,
    /// Σ entropy (nats) at τ = 1 of the stored labels.
    pub entropy: f64,
    /// Records whose full logits were available to measure reconstruction error.
    pub kl_records: f64,
    /// Σ KL(full softmax ‖ stored) at τ = 1.
    pub kl_tau1: f64,
    /// Σ KL(full softmax ‖ stored) at τ = 4.
    pub kl_tau4: f64,
    /// Un-mixed records with a ground-truth label.
    pub labelled: f64,
    /// Of those, records whose teacher top-1 equals the ground truth.
    pub correct: f64,
}

impl QualitySums {
    /// Number of f64 slots in a chunk header.
    pub const SLOTS: usize = 8;

    /// The sums in their on-disk order.
    pub fn to_array(&self) -> [f64; Self::SLOTS] {
        [
            self.records,
            self.top_mass,
            self.entropy,
            self.kl_records,
            self.kl_tau1,
            self.kl_tau4,
            self.labelled,
            self.correct,
        ]
    }

    /// The sums from their on-disk order.
    pub fn from_array(a: [f64; Self::SLOTS]) -> Self {
        QualitySums {
            records: a[0],
            top_mass: a[1],
            entropy: a[2],
            kl_records: a[3],
            kl_tau1: a[4],
            kl_tau4: a[5],
            labelled: a[6],
            correct: a[7],
        }
    }

    /// Adds another set of sums.
    pub fn add(&mut self, o: &QualitySums) {
        let mut a = self.to_array();
        for (x, y) in a.iter_mut().zip(o.to_array()) {
            *x += y;
        }
        *self = Self::from_array(a);
    }
}

/// Label quality figures measured while writing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub records: u64,
    /// Mean probability mass of the stored top-k at τ = 1.
    pub mean_top_k_mass: f64,
    /// Mean entropy (nats) of the stored distribution at τ = 1.
    pub mean_entropy: f64,
    /// Mean KL(full teacher softmax ‖ stored distribution) at τ = 1, when measured.
    pub reconstruction_kl_tau1: Option<f64>,
    /// Same at τ = 4.
    pub reconstruction_kl_tau4: Option<f64>,
    /// Teacher top-1 accuracy on un-mixed records with ground truth, when there were any.
    pub teacher_top1_accuracy: Option<f64>,
    /// Number of records the accuracy is measured on.
    pub teacher_accuracy_records: u64,
}

impl Quality {
    /// Turns sums into means.
    pub fn from_sums(s: &QualitySums) -> Self {
        let mean = |x: f64, n: f64| if n > 0.0 { x / n } else { 0.0 };
        let opt = |x: f64, n: f64| (n > 0.0).then(|| x / n);
        Quality {
            records: s.records as u64,
            mean_top_k_mass: mean(s.top_mass, s.records),
            mean_entropy: mean(s.entropy, s.records),
            reconstruction_kl_tau1: opt(s.kl_tau1, s.kl_records),
            reconstruction_kl_tau4: opt(s.kl_tau4, s.kl_records),
            teacher_top1_accuracy: opt(s.correct, s.labelled),
            teacher_accuracy_records: s.labelled as u64,
        }
    }
}

/// What the teacher was run on (FORMAT.md §2 `teacher_input`): the input size every stored
/// box (crops, cutmix and cutout regions) is in pixels of, and the teacher's pre-processing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherInput {
    pub width: u32,
    pub height: u32,
    /// Teacher input = (pixel / 255 · scale − mean[c]) / std[c]. Absent in stores no teacher
    /// made (synthetic ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f32>>,
    /// How several teachers' outputs became one label (`probs` or `logits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<String>,
    /// Where each pre-processing setting came from (`mean`, `std`, `interpolation`,
    /// `crop_pct` → `flag`, `model`, `recipe` or `default`), for `inspect` to show.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sources: std::collections::BTreeMap<String, String>,
}

impl TeacherInput {
    /// Only the size (stores no teacher made).
    pub fn size(width: u32, height: u32) -> Self {
        TeacherInput {
            width,
            height,
            scale: None,
            mean: None,
            std: None,
            ensemble: None,
            sources: Default::default(),
        }
    }
}

/// The whole `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    pub format_version: u32,
    /// Program and version that wrote the store, e.g. `distill 0.1.0`.
    pub creator: String,
    /// RFC 3339 UTC time the store was started (kept across resumes).
    pub created: String,
    pub teachers: Vec<TeacherInfo>,
    /// The data's fingerprint (of a list of datasets: format `list`, hashing its parts').
    pub dataset: DatasetFingerprint,
    /// For a list of datasets (`--data` repeated): each one's fingerprint, in order; sample `i`
    /// of the store is sample `i − (samples of the parts before)` of its part. Empty (absent)
    /// for one dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetFingerprint>,
    /// The augmentation recipe, as given (free-form JSON).
    pub recipe: serde_json::Value,
    pub seed: u64,
    pub epochs: u32,
    pub classes: u32,
    pub k: u32,
    pub codec: ValueCodec,
    /// Records per chunk in every epoch stream.
    pub chunk_records: u32,
    /// Samples covered by this store (a shard store covers part of the dataset).
    pub samples: SampleRange,
    /// Shard files in sample order; together they cover `samples` exactly.
    pub shards: Vec<ShardEntry>,
    pub quality: Quality,
    /// Other facts the writer wants to record (teacher pre-processing, …).
    /// The decoder and decoded-pixel hashes of a few samples (FORMAT.md §2), so students can
    /// refuse data their build decodes differently. Absent in stores of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_probe: Option<DecodeProbe>,
    /// The decode-once blocks the records were labelled in (FORMAT.md §2); absent when every
    /// record decoded its own images. Recipes that mix drew partners inside these blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlockConfig>,
    /// The teacher's input size and pre-processing (FORMAT.md §2). Stores of builds before it
    /// was a field kept it as `extra.teacher_input`; [`Manifest::from_json`] moves it here.
    /// Absent only in stores no labeller wrote (synthetic ones), which cannot be replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_input: Option<TeacherInput>,
    /// The teachers' stored features (FORMAT.md §6), in files of their own; absent when the
    /// store holds soft labels only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<crate::feature::Features>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn from_json(text: &str) -> Result<Self, FormatError> {
        // Look at the version before the full schema, so a newer store gets the right error.
        let mut raw: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| FormatError::invalid("manifest", e.to_string()))?;
        // Stores of earlier builds kept teacher_input among the free-form extras.
        if let Some(obj) = raw.as_object_mut()
            && !obj.contains_key("teacher_input")
            && let Some(t) = obj
                .get_mut("extra")
                .and_then(|e| e.as_object_mut())
                .and_then(|e| e.remove("teacher_input"))
        {
            obj.insert("teacher_input".into(), t);
        }
        if let Some(v) = raw.get("format_version").and_then(|v| v.as_u64())
            && v > u64::from(FORMAT_VERSION)
        {
            return Err(FormatError::invalid(
                "format_version",
                format!(
                    "store format version {v} is newer than this reader's {FORMAT_VERSION}: upgrade distill"
                ),
            ));
        }
        let m: Manifest = serde_json::from_value(raw)
            .map_err(|e| FormatError::invalid("manifest", e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// Pretty JSON text, newline-terminated.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serializes");
        s.push('\n');
        s
    }

    /// Bytes of all shard files (what the store costs on disk, manifest aside).
    pub fn stored_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.bytes).sum()
    }

    /// The lowest format version that describes this store: [`VIEWS_ONLY_VERSION`] when it
    /// holds no soft labels, [`FEATURES_VERSION`] when it holds features,
    /// [`UNLABELLED_VERSION`] when its data has no hard labels or is a list of datasets, else
    /// [`LABELLED_VERSION`] (what older readers read correctly).
    pub fn needed_version(&self) -> u32 {
        if !self.has_labels() {
            VIEWS_ONLY_VERSION
        } else if self.features.is_some() {
            FEATURES_VERSION
        } else if self.dataset.labelled && self.datasets.is_empty() {
            LABELLED_VERSION
        } else {
            UNLABELLED_VERSION
        }
    }

    /// Whether records hold soft labels: false for an embedding-only teacher's store (`k` 0),
    /// whose records are views whose teacher features live in the feature files.
    pub fn has_labels(&self) -> bool {
        self.k > 0
    }

    /// The classes of the store's soft labels: `classes`, or `None` for a store without soft
    /// labels (whose `classes` 0 says nothing of the data's or a student's).
    pub fn label_classes(&self) -> Option<u32> {
        self.has_labels().then_some(self.classes)
    }

    /// Bytes of all feature files.
    pub fn feature_bytes(&self) -> u64 {
        self.features
            .iter()
            .flat_map(|f| &f.heads)
            .flat_map(|h| &h.shards)
            .map(|s| s.bytes)
            .sum()
    }

    /// Total records (`samples × epochs`).
    pub fn records(&self) -> u64 {
        u64::from(self.samples.len()) * u64::from(self.epochs)
    }

    /// Checks internal consistency: names, versions, ranges, and that shards tile `samples`.
    pub fn check(&self) -> Result<(), FormatError> {
        self.check_fields()?;
        self.check_shards()
    }

    /// Checks everything but the shard list (what a writer's draft must satisfy).
    pub fn check_fields(&self) -> Result<(), FormatError> {
        if self.format != FORMAT_NAME {
            return Err(FormatError::invalid(
                "format",
                format!("{:?} is not {FORMAT_NAME:?}", self.format),
            ));
        }
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(FormatError::invalid(
                "format_version",
                format!(
                    "{} is not supported (this reader knows 1..={FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        if !self.datasets.is_empty() {
            let sum: u64 = self.datasets.iter().map(|d| d.samples).sum();
            if sum != self.dataset.samples || self.datasets.len() < 2 {
                return Err(FormatError::invalid(
                    "datasets",
                    format!(
                        "{} datasets of {sum} samples in all do not make the {} samples of \
                         dataset",
                        self.datasets.len(),
                        self.dataset.samples
                    ),
                ));
            }
        }
        // Stores of labelled data of versions 1 and 2 stay valid: only what later versions
        // added needs them.
        if self.needed_version() > LABELLED_VERSION && self.format_version < self.needed_version() {
            let what = if !self.has_labels() {
                "a store without soft labels (k 0)"
            } else if self.features.is_some() {
                "teacher features (features)"
            } else {
                "data without hard labels or a list of datasets (dataset.labelled false, or a \
                 datasets list)"
            };
            return Err(FormatError::invalid(
                "format_version",
                format!(
                    "{} cannot describe {what}; that needs {}",
                    self.format_version,
                    self.needed_version()
                ),
            ));
        }
        self.check_feature_heads()?;
        crate::record::RecordLayout::new(self.classes, self.k, self.codec)?;
        if !self.has_labels() && self.features.is_none() {
            return Err(FormatError::invalid(
                "k",
                "0 (no soft labels) in a store without features: its records would hold nothing \
                 a teacher said",
            ));
        }
        if self.epochs == 0 {
            return Err(FormatError::invalid("epochs", "must be at least 1"));
        }
        if self.chunk_records == 0 {
            return Err(FormatError::invalid("chunk_records", "must be at least 1"));
        }
        if let Some(t) = &self.teacher_input
            && (t.width == 0 || t.height == 0)
        {
            return Err(FormatError::invalid(
                "teacher_input",
                format!("size {}x{} is empty", t.width, t.height),
            ));
        }
        if self.samples.is_empty() || u64::from(self.samples.end) > self.dataset.samples {
            return Err(FormatError::invalid(
                "samples",
                format!(
                    "range {} is empty or beyond the dataset's {} samples",
                    self.samples, self.dataset.samples
                ),
            ));
        }
        for t in &self.teachers {
            if t.classes != self.classes {
                return Err(FormatError::invalid(
                    "teachers",
                    format!(
                        "teacher {} has {} classes, the store {}",
                        t.file, t.classes, self.classes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks the feature heads' fields: a teacher that exists, stored dimensions within the
    /// teacher's, distinct outputs.
    fn check_feature_heads(&self) -> Result<(), FormatError> {
        let Some(f) = &self.features else {
            return Ok(());
        };
        if f.heads.is_empty() {
            return Err(FormatError::invalid("features.heads", "no feature head"));
        }
        for (h, head) in f.heads.iter().enumerate() {
            let field = |name: &str| format!("features.heads[{h}].{name}");
            if head.teacher as usize >= self.teachers.len().max(1) {
                return Err(FormatError::invalid(
                    field("teacher"),
                    format!(
                        "teacher {} of a store of {}",
                        head.teacher,
                        self.teachers.len()
                    ),
                ));
            }
            crate::feature::FeatureLayout::new(head.stored_dim, f.codec)
                .map_err(|e| FormatError::invalid(field("stored_dim"), e.to_string()))?;
            if head.stored_dim > head.dim || (head.basis.is_none() && head.stored_dim != head.dim) {
                return Err(FormatError::invalid(
                    field("stored_dim"),
                    format!(
                        "{} for an output of {} (fewer only through a basis)",
                        head.stored_dim, head.dim
                    ),
                ));
            }
            if f.heads[..h]
                .iter()
                .any(|o| o.teacher == head.teacher && o.output == head.output)
            {
                return Err(FormatError::invalid(
                    field("output"),
                    format!("teacher {}'s {:?} appears twice", head.teacher, head.output),
                ));
            }
        }
        Ok(())
    }

    /// Checks that the shards tile `samples` in order, without gap or overlap, and that every
    /// feature head has one file for each of them.
    pub fn check_shards(&self) -> Result<(), FormatError> {
        self.check_label_shards()?;
        for (h, head) in self
            .features
            .iter()
            .flat_map(|f| f.heads.iter().enumerate())
        {
            let field = format!("features.heads[{h}].shards");
            if head.shards.len() != self.shards.len() {
                return Err(FormatError::invalid(
                    field,
                    format!(
                        "{} files for the store's {} shards",
                        head.shards.len(),
                        self.shards.len()
                    ),
                ));
            }
            for (i, (s, l)) in head.shards.iter().zip(&self.shards).enumerate() {
                if s.samples != l.samples || s.records != l.records {
                    return Err(FormatError::invalid(
                        format!("{field}[{i}]"),
                        format!(
                            "samples {} ({} records), the label shard's are {} ({})",
                            s.samples, s.records, l.samples, l.records
                        ),
                    ));
                }
                if let Some(why) =
                    s.file_problem_named(&crate::feature::feature_file_name(h, s.samples))
                {
                    return Err(FormatError::invalid(format!("{field}[{i}].file"), why));
                }
            }
        }
        Ok(())
    }

    fn check_label_shards(&self) -> Result<(), FormatError> {
        let mut at = self.samples.start;
        for (i, s) in self.shards.iter().enumerate() {
            if s.samples.start != at || s.samples.is_empty() {
                let what = if s.samples.start > at {
                    format!("gap: samples {at}..{} are in no shard", s.samples.start)
                } else {
                    format!("shard {} ({}) overlaps or is out of order", i, s.samples)
                };
                return Err(FormatError::invalid(format!("shards[{i}]"), what));
            }
            let want = u64::from(s.samples.len()) * u64::from(self.epochs);
            if s.records != want {
                return Err(FormatError::invalid(
                    format!("shards[{i}].records"),
                    format!(
                        "{} but {} samples × {} epochs = {want}",
                        s.records,
                        s.samples.len(),
                        self.epochs
                    ),
                ));
            }
            if let Some(why) = s.file_problem() {
                return Err(FormatError::invalid(format!("shards[{i}].file"), why));
            }
            at = s.samples.end;
        }
        if at != self.samples.end {
            return Err(FormatError::invalid(
                "shards",
                format!("samples {at}..{} are in no shard", self.samples.end),
            ));
        }
        Ok(())
    }
}

/// Lower-case hex SHA-256 of `bytes` (teacher model files, fetched datasets).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// RFC 3339 UTC time now, to the second.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest() -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            creator: "test".into(),
            created: now_rfc3339(),
            teachers: vec![],
            dataset: DatasetFingerprint {
                format: "synthetic".into(),
                split: "train".into(),
                samples: 100,
                labels_xxh3: "0".into(),
                content_xxh3: "0".into(),
                labelled: true,
            },
            datasets: vec![],
            recipe: serde_json::json!({"name": "none"}),
            seed: 1,
            epochs: 2,
            classes: 10,
            k: 3,
            codec: ValueCodec::Q8,
            chunk_records: 16,
            samples: SampleRange { start: 0, end: 100 },
            shards: vec![
                ShardEntry {
                    file: "shard-0000000000-0000000040.dls".into(),
                    samples: SampleRange { start: 0, end: 40 },
                    records: 80,
                    chunks: 6,
                    bytes: 1,
                    checksum: "xxh3:0".into(),
                },
                ShardEntry {
                    file: "../other/shard-0000000040-0000000100.dls".into(),
                    samples: SampleRange {
                        start: 40,
                        end: 100,
                    },
                    records: 120,
                    chunks: 8,
                    bytes: 1,
                    checksum: "xxh3:0".into(),
                },
            ],
            quality: Quality::default(),
            decode_probe: None,
            blocks: None,
            teacher_input: None,
            features: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn json_round_trip() {
        let m = manifest();
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.records(), 200);
    }

    #[test]
    fn teacher_input_of_older_stores_is_read_from_extra() {
        let mut m = manifest();
        let mut v = serde_json::to_value(&m).unwrap();
        v.as_object_mut().unwrap().insert(
            "extra".into(),
            serde_json::json!({"teacher_input": {"width": 224, "height": 160, "scale": 1.0,
                "mean": [0.5], "std": [0.25], "ensemble": "probs"}, "note": "kept"}),
        );
        let old = Manifest::from_json(&v.to_string()).unwrap();
        let t = old.teacher_input.clone().unwrap();
        assert_eq!((t.width, t.height), (224, 160));
        assert_eq!(t.std, Some(vec![0.25]));
        assert_eq!(t.ensemble.as_deref(), Some("probs"));
        assert_eq!(old.extra.len(), 1, "the other extras stay");
        // Written back, it is a field of its own, and reads the same.
        let text = old.to_json();
        let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(raw["teacher_input"]["width"], 224);
        assert!(raw["extra"].get("teacher_input").is_none());
        assert_eq!(Manifest::from_json(&text).unwrap(), old);
        m.teacher_input = Some(TeacherInput::size(0, 10));
        let e = Manifest::from_json(&m.to_json()).unwrap_err().to_string();
        assert!(e.contains("teacher_input"), "{e}");
    }

    #[test]
    fn shard_paths_cannot_leave_the_shard_they_name() {
        let m = manifest();
        m.check().unwrap();
        for (file, why) in [
            ("/etc/passwd", "absolute"),
            ("/data/shard-0000000000-0000000040.dls", "absolute"),
            ("..\\shard-0000000000-0000000040.dls", "backslashes"),
            ("a/../../shard-0000000000-0000000040.dls", "leading run"),
            ("./shard-0000000000-0000000040.dls", "leading run"),
            ("..//shard-0000000000-0000000040.dls", "leading run"),
            (
                "../../etc/passwd",
                "is named shard-0000000000-0000000040.dls",
            ),
            (
                "shard-0000000000-0000000041.dls",
                "is named shard-0000000000-0000000040.dls",
            ),
            ("", "is named"),
        ] {
            let mut m = manifest();
            m.shards[0].file = file.into();
            let e = m.check().unwrap_err().to_string();
            assert!(
                e.contains("shards[0].file") && e.contains(why),
                "{file}: {e}"
            );
        }
        let mut m = manifest();
        m.shards[0].file = "../../a/b/shard-0000000000-0000000040.dls".into();
        m.check().unwrap();
    }

    #[test]
    fn gaps_overlaps_and_versions_are_named() {
        let mut m = manifest();
        m.shards[1].samples.start = 50;
        m.shards[1].records = 100;
        let e = m.check().unwrap_err().to_string();
        assert!(e.contains("gap: samples 40..50"), "{e}");
        let mut m = manifest();
        m.shards[1].samples.start = 30;
        m.shards[1].records = 140;
        assert!(m.check().unwrap_err().to_string().contains("overlaps"));
        let mut m = manifest();
        m.format_version = FORMAT_VERSION + 1;
        let e = Manifest::from_json(&m.to_json()).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
        let mut m = manifest();
        m.k = 11;
        assert!(m.check().unwrap_err().to_string().contains("k = 11"));
    }

    #[test]
    fn stores_without_soft_labels_need_features_and_version_6() {
        let mut m = manifest();
        m.classes = 0;
        m.k = 0;
        let e = m.check().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid k:") && e.contains("without features"),
            "{e}"
        );
        m.features = Some(crate::feature::Features {
            codec: crate::feature::FeatureCodec::Q8,
            heads: vec![crate::feature::FeatureHead {
                teacher: 0,
                output: "embedding".into(),
                dim: 8,
                stored_dim: 8,
                basis: None,
                shards: vec![],
                quality: Default::default(),
            }],
        });
        assert!(!m.has_labels());
        assert_eq!(m.needed_version(), VIEWS_ONLY_VERSION);
        m.check_fields().unwrap();
        m.format_version = FEATURES_VERSION;
        let e = m.check_fields().unwrap_err().to_string();
        assert!(
            e.contains("without soft labels") && e.contains("needs 6"),
            "{e}"
        );
        // A store with labels and features stays at version 5.
        m.format_version = VIEWS_ONLY_VERSION;
        m.classes = 10;
        m.k = 3;
        assert_eq!(m.needed_version(), FEATURES_VERSION);
        // k 0 with classes, or classes 0 with k, is no layout.
        m.k = 0;
        assert!(m.check_fields().is_err());
    }

    #[test]
    fn fingerprint_mismatch_names_the_field() {
        let a = manifest().dataset;
        let mut b = a.clone();
        assert_eq!(a.mismatch(&b), None);
        b.labels_xxh3 = "ff".into();
        let e = a.mismatch(&b).unwrap();
        assert!(e.starts_with("dataset.labels_xxh3"), "{e}");
        // Read with and without hard labels: named before the hashes that then differ too.
        b.labelled = false;
        let e = a.mismatch(&b).unwrap();
        assert!(
            e.starts_with("dataset.labelled") && e.contains("`unlabelled`"),
            "{e}"
        );
    }

    #[test]
    fn data_without_hard_labels_needs_version_4_and_says_so() {
        // Labelled data: the key is left out and version 3 suffices (older readers read it).
        let mut m = manifest();
        assert!(!m.to_json().contains("labelled"));
        assert_eq!(m.needed_version(), 3);
        m.format_version = 3;
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        // Older labelled stores stay valid.
        m.format_version = 1;
        m.check_fields().unwrap();
        m.format_version = 3;
        // A list of datasets needs version 4 too, and parts that add up.
        let mut list = m.clone();
        let part = DatasetFingerprint {
            samples: 50,
            ..m.dataset.clone()
        };
        list.datasets = vec![part.clone(), part];
        assert_eq!(list.needed_version(), 4);
        assert!(
            list.check_fields()
                .unwrap_err()
                .to_string()
                .contains("needs 4")
        );
        list.format_version = 4;
        list.check_fields().unwrap();
        list.datasets[1].samples = 40;
        let e = list.check_fields().unwrap_err().to_string();
        assert!(e.contains("90 samples in all"), "{e}");
        // Unlabelled data: written and read back as such, refused as version 3.
        m.dataset.labelled = false;
        assert!(m.to_json().contains("\"labelled\": false"));
        let e = m.check().unwrap_err().to_string();
        assert!(e.contains("format_version") && e.contains("needs 4"), "{e}");
        m.format_version = m.needed_version();
        assert_eq!(m.format_version, 4);
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert!(!back.dataset.labelled);
    }

    #[test]
    fn quality_means() {
        let s = QualitySums {
            records: 4.0,
            top_mass: 2.0,
            entropy: 4.0,
            kl_records: 2.0,
            kl_tau1: 0.2,
            kl_tau4: 0.4,
            labelled: 0.0,
            correct: 0.0,
        };
        let q = Quality::from_sums(&s);
        assert_eq!(q.mean_top_k_mass, 0.5);
        assert_eq!(q.reconstruction_kl_tau4, Some(0.2));
        assert_eq!(q.teacher_top1_accuracy, None);
        assert_eq!(QualitySums::from_array(s.to_array()), s);
    }
}
