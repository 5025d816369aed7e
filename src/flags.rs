//! Typed flag values shared by the commands: the fixed choices as `clap::ValueEnum`s (so
//! `--help` lists them and clap refuses anything else, naming them), and the parsers of
//! ranges, sizes and shards. Each choice converts into the library type it stands for with an
//! exhaustive match, and a test checks that every choice's name is the one the library's own
//! `FromStr` accepts, so the command line and the libraries cannot drift apart.

use anyhow::Context;
use clap::ValueEnum;
use datasets::DataFormat;
use formats::Interpolation;
use formats::ValueCodec;
use std::path::PathBuf;
use student_train::models::NormKind;
use teacher_infer::Ensemble;

/// `--loss`: the training objective (its weights and temperature come from other flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossFlag {
    /// Cross-entropy on the (mixed) hard labels.
    Ce,
    /// Hinton KD: (1 − w)·CE + w·τ²·KL(p_t^τ ‖ p_s^τ).
    Kd,
    /// USI: CE + w·KL(p_t ‖ p_s) at τ = 1 (w default 5), --kd-only drops CE.
    Usi,
    /// Early-stopped KD: kd until --kd-until-epoch, then ce.
    Eskd,
    /// No label term: the feature term (--feature-weight) alone.
    Features,
}

/// `--feature-loss`: how projected student features meet the teacher's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FeatureLossFlag {
    /// The mean of 1 − cos over the batch.
    Cosine,
    /// Smooth L1 (β = 1) over every value.
    SmoothL1,
    /// Mean squared error.
    Mse,
}

impl From<FeatureLossFlag> for student_train::loss::FeatureLoss {
    fn from(f: FeatureLossFlag) -> Self {
        match f {
            FeatureLossFlag::Cosine => Self::Cosine,
            FeatureLossFlag::SmoothL1 => Self::SmoothL1,
            FeatureLossFlag::Mse => Self::Mse,
        }
    }
}

/// `--optimizer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerFlag {
    /// SGD with momentum (--momentum, --nesterov).
    Sgd,
    /// AdamW, decoupled weight decay.
    Adamw,
}

/// `--schedule`: how the learning rate moves after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleFlag {
    /// Half a cosine down to 0 at the last step.
    Cosine,
    /// Multiply by --lr-step-gamma every --lr-step-every epochs.
    Step,
    /// The peak rate throughout.
    Constant,
}

/// `--interpolation`: the filter crops are resized with (Pillow's, as torchvision's PIL path
/// and timm resize).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InterpolationFlag {
    /// Triangle filter, antialiased when shrinking: torchvision's default.
    Bilinear,
    /// Cubic convolution (a = −0.5), antialiased when shrinking: what most timm models were
    /// trained and are evaluated with.
    Bicubic,
}

impl From<InterpolationFlag> for Interpolation {
    fn from(f: InterpolationFlag) -> Self {
        match f {
            InterpolationFlag::Bilinear => Interpolation::Bilinear,
            InterpolationFlag::Bicubic => Interpolation::Bicubic,
        }
    }
}

/// `--ensemble`: how several teachers become one label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EnsembleFlag {
    /// Mean of the teachers' probabilities (stored as its logarithm).
    Probs,
    /// Mean of the teachers' logits.
    Logits,
}

impl From<EnsembleFlag> for Ensemble {
    fn from(f: EnsembleFlag) -> Self {
        match f {
            EnsembleFlag::Probs => Ensemble::Probs,
            EnsembleFlag::Logits => Ensemble::Logits,
        }
    }
}

/// `--norm`: the normalization layers of a student.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormFlag {
    /// BatchNorm.
    Batch,
    /// GroupNorm with one group (no batch statistics).
    Layer,
    /// No normalization.
    None,
}

impl From<NormFlag> for NormKind {
    fn from(f: NormFlag) -> Self {
        match f {
            NormFlag::Batch => NormKind::Batch,
            NormFlag::Layer => NormKind::Layer,
            NormFlag::None => NormKind::None,
        }
    }
}

/// `--codec`: how the top-k logits are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CodecFlag {
    /// One byte per logit gap (quantized); the default.
    Q8,
    /// IEEE half precision per gap.
    F16,
}

impl From<CodecFlag> for ValueCodec {
    fn from(f: CodecFlag) -> Self {
        match f {
            CodecFlag::Q8 => ValueCodec::Q8,
            CodecFlag::F16 => ValueCodec::F16,
        }
    }
}

impl From<CodecFlag> for formats::FeatureCodec {
    fn from(f: CodecFlag) -> Self {
        match f {
            CodecFlag::Q8 => formats::FeatureCodec::Q8,
            CodecFlag::F16 => formats::FeatureCodec::F16,
        }
    }
}

/// Library config fields whose flag is not `--` + the field with `-` for `_`.
const FIELD_FLAGS: &[(&str, &str)] = &[
    ("eval_crop_pct", "--crop-pct"),
    ("models", "--model"),
    ("teachers", "--teacher"),
    ("recipe", "--aug"),
    ("run", "--out"),
    ("k", "--topk"),
];

/// The flag that sets library config field `field` (library errors name fields; see
/// `formats::field`).
pub fn flag_of(field: &str) -> String {
    FIELD_FLAGS.iter().find(|(f, _)| *f == field).map_or_else(
        || format!("--{}", field.replace('_', "-")),
        |(_, flag)| flag.to_string(),
    )
}

/// `message` (a library error) with each config field it names put as the flag that sets it.
pub fn name_flags(message: &str) -> String {
    formats::field::rename(message, |f| Some(flag_of(f)))
}

/// The datasets a command reads (`--data`, `--format`, the shard flags, `--split`,
/// `--unlabelled`), declared once and flattened into `label`, `train`, `eval` and `inspect`.
/// `--data` may be repeated (a list read as one, e.g. a labelled split and unlabelled transfer
/// data); `--format`, `--split` and `--unlabelled` then belong to the `--data` they follow (or
/// the first, when they come before any). [`DataArgs::bind`] reads that order from the parsed
/// command line.
#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// Dataset: a directory (MNIST IDX, CIFAR binary, npy arrays, image folders, tar shards), a
    /// .tar shard or a brace pattern of shards. Repeat for a list of datasets read as one; the
    /// flags below belong to the --data they follow. Label, train and eval make it required
    /// (`mut_arg`); `inspect` flattens the same struct, where it is optional.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Dataset format, when detection from the files is not wanted.
    #[arg(long, value_enum)]
    pub format: Vec<FormatFlag>,
    #[command(flatten)]
    pub wds: WdsFlags,
    /// Split of --data (default: `train` for label and train, `test` for eval, the store's for
    /// inspect --show).
    #[arg(long)]
    pub split: Vec<String>,
    /// Read --data without hard labels, as a transfer set for a teacher of any classes: an
    /// image folder is every image under the split (or the root) at any depth; shards need no
    /// label member. A store labelled so is read so without the flag.
    #[arg(long, action = clap::ArgAction::Count)]
    pub unlabelled: u8,
    /// Each --data with its own flags, once [`DataArgs::bind`] has read their order.
    #[arg(skip)]
    pub bound: Option<Vec<DataSpec>>,
}

/// One dataset of the command line and the flags that belong to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSpec {
    pub path: PathBuf,
    pub format: Option<FormatFlag>,
    pub split: Option<String>,
    pub unlabelled: bool,
}

impl DataArgs {
    /// Gives each `--format`, `--split` and `--unlabelled` of `m` (the command's matches) to
    /// the `--data` before it (the first, before any); one of them twice for a dataset is an
    /// error naming it.
    pub fn bind(&mut self, m: &clap::ArgMatches) -> anyhow::Result<()> {
        // Only what the command line gave (a count flag also has a default, with an index).
        let at = |id: &str| -> Vec<usize> {
            if m.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
                return Vec::new();
            }
            m.indices_of(id).map(|i| i.collect()).unwrap_or_default()
        };
        let data_at = at("data");
        let mut specs: Vec<DataSpec> = self
            .data
            .iter()
            .map(|p| DataSpec {
                path: p.clone(),
                format: None,
                split: None,
                unlabelled: false,
            })
            .collect();
        let owner = |i: usize| data_at.iter().rposition(|&d| d < i).unwrap_or(0);
        let twice = |flag: &str, spec: &DataSpec| {
            anyhow::anyhow!("--{flag} given twice for --data {}", spec.path.display())
        };
        for (i, f) in at("format").into_iter().zip(&self.format) {
            let Some(s) = specs.get_mut(owner(i)) else {
                break;
            };
            if s.format.replace(*f).is_some() {
                return Err(twice("format", s));
            }
        }
        for (i, v) in at("split").into_iter().zip(&self.split) {
            let Some(s) = specs.get_mut(owner(i)) else {
                break;
            };
            if s.split.replace(v.clone()).is_some() {
                return Err(twice("split", s));
            }
        }
        for i in at("unlabelled") {
            let Some(s) = specs.get_mut(owner(i)) else {
                break;
            };
            if std::mem::replace(&mut s.unlabelled, true) {
                return Err(twice("unlabelled", s));
            }
        }
        self.bound = Some(specs);
        Ok(())
    }

    /// The datasets with their flags: as bound, or (unbound, one --data) the flags as given.
    pub fn specs(&self) -> anyhow::Result<Vec<DataSpec>> {
        if let Some(b) = &self.bound {
            return Ok(b.clone());
        }
        if self.data.len() > 1 || self.format.len() > 1 || self.split.len() > 1 {
            anyhow::bail!("several --data need their flags bound to them (DataArgs::bind)");
        }
        Ok(self
            .data
            .iter()
            .map(|p| DataSpec {
                path: p.clone(),
                format: self.format.first().copied(),
                split: self.split.first().cloned(),
                unlabelled: self.unlabelled > 0,
            })
            .collect())
    }

    /// `--data` as a run records it: the path, or the paths joined by `,` for a list.
    pub fn describe(&self) -> anyhow::Result<String> {
        let specs = self.specs()?;
        if specs.is_empty() {
            anyhow::bail!("--data is required: the dataset to read");
        }
        Ok(specs
            .iter()
            .map(|s| s.path.display().to_string())
            .collect::<Vec<_>>()
            .join(","))
    }

    /// The split asked for (of the first dataset), or `default`.
    pub fn split_or(&self, default: &str) -> String {
        self.specs()
            .ok()
            .and_then(|s| s.first().and_then(|s| s.split.clone()))
            .unwrap_or_else(|| default.to_string())
    }

    /// Opens the datasets as `store` (when one is replayed) needs them: each with its own
    /// `--split` (else the store's part's, else `split`), the store's decoder, and without hard
    /// labels where --unlabelled says so or the store's data had none; several become one
    /// [`datasets::DataList`]. `default_classes` as for [`WdsFlags::options`]. Errors name the
    /// path and the split.
    pub fn open(
        &self,
        split: &str,
        default_classes: Option<u32>,
        store: Option<&label_store::LabelStore>,
    ) -> anyhow::Result<std::sync::Arc<dyn datasets::Dataset>> {
        let specs = self.specs()?;
        if specs.len() == 1 {
            return Ok(self
                .open_part(&specs[0], 0, split, default_classes, store)?
                .into());
        }
        let parts = specs
            .iter()
            .enumerate()
            .map(|(i, s)| self.open_part(s, i, split, default_classes, store))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(std::sync::Arc::new(
            datasets::DataList::new(parts).context("reading the --data list as one")?,
        ))
    }

    /// Opens split `split` of the first dataset only, whatever its --split (the test split of
    /// the labelled dataset a list starts with), as [`DataArgs::open`] would open it.
    pub fn open_first(
        &self,
        split: &str,
        default_classes: Option<u32>,
        store: Option<&label_store::LabelStore>,
    ) -> anyhow::Result<std::sync::Arc<dyn datasets::Dataset>> {
        let specs = self.specs()?;
        let first = specs
            .first()
            .ok_or_else(|| anyhow::anyhow!("--data is required: the dataset to read"))?;
        let spec = DataSpec {
            split: Some(split.to_string()),
            ..first.clone()
        };
        Ok(self
            .open_part(&spec, 0, split, default_classes, store)?
            .into())
    }

    /// Dataset `i` of the list (`spec`), as [`DataArgs::open`] opens each.
    fn open_part(
        &self,
        spec: &DataSpec,
        i: usize,
        split: &str,
        default_classes: Option<u32>,
        store: Option<&label_store::LabelStore>,
    ) -> anyhow::Result<Box<dyn datasets::Dataset>> {
        let decoder = crate::commands::train::store_decoder(store)?;
        let part = store.and_then(|s| s.manifest.datasets.get(i));
        let stored_unlabelled = match (store, part) {
            (_, Some(p)) => !p.labelled,
            (Some(s), None) => s.manifest.datasets.is_empty() && !s.manifest.dataset.labelled,
            (None, None) => false,
        };
        let split = spec
            .split
            .as_deref()
            .or(part.map(|p| p.split.as_str()))
            .unwrap_or(split);
        let opts = datasets::OpenOptions {
            unlabelled: spec.unlabelled || stored_unlabelled,
            ..self.wds.options(default_classes, decoder)
        };
        let p = &spec.path;
        datasets::open_with(p, spec.format.map(Into::into), split, &opts)
            .with_context(|| format!("opening {} (split {split})", p.display()))
    }
}

/// How tar shards are read (`--label-key`, `--classes`); other formats refuse a label key.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WdsFlags {
    /// WebDataset shards: extension of the member holding each sample's class as decimal text.
    #[arg(long, value_name = "EXT")]
    pub label_key: Option<String>,
    /// WebDataset shards: the number of classes (default: the largest label + 1, or the
    /// store's class count where a store is given).
    #[arg(long)]
    pub classes: Option<u32>,
}

impl WdsFlags {
    /// The reader options; `default_classes` (a store's or checkpoint's class count) stands in
    /// for an absent `--classes` on shards; `decoder` is a store's, when one is replayed.
    pub fn options(
        &self,
        default_classes: Option<u32>,
        decoder: datasets::ImageDecoder,
    ) -> datasets::OpenOptions {
        datasets::OpenOptions {
            label_key: self.label_key.clone(),
            classes: self.classes,
            default_classes,
            decoder,
            unlabelled: false,
        }
    }
}

/// `--format`: the dataset format, when detection from the files is not wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatFlag {
    /// MNIST IDX files (gzipped or not).
    #[value(alias = "mnist-idx")]
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// CIFAR-100 binary batches.
    Cifar100,
    /// `{split}_images.npy` and `{split}_labels.npy`.
    Npy,
    /// Image folders: ROOT/SPLIT/CLASS/*.jpg|png.
    #[value(alias = "image-folder")]
    Folder,
    /// WebDataset tar shards: a directory of .tar files, one .tar, or a brace pattern
    /// (train-{000000..000146}.tar).
    #[value(alias = "webdataset")]
    Wds,
}

impl From<FormatFlag> for DataFormat {
    fn from(f: FormatFlag) -> Self {
        match f {
            FormatFlag::Mnist => DataFormat::Mnist,
            FormatFlag::Cifar10 => DataFormat::Cifar10,
            FormatFlag::Cifar100 => DataFormat::Cifar100,
            FormatFlag::Npy => DataFormat::Npy,
            FormatFlag::Folder => DataFormat::ImageFolder,
            FormatFlag::Wds => DataFormat::Wds,
        }
    }
}

/// `A..B` with `A ≤ B` (end exclusive).
pub fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?} is not a range A..B"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a number"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a number"))?;
    if b < a {
        return Err(format!("range {a}..{b} ends before it starts"));
    }
    Ok((a, b))
}

/// `WxH`, or `S` for a square; both sides at least 1.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').unwrap_or((s, s));
    let side = |v: &str, what: &str| -> Result<u32, String> {
        match v.trim().parse::<u32>() {
            Ok(0) => Err(format!("{s:?}: the {what} must be at least 1")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("{s:?} is not N or WxH ({what} {v:?})")),
        }
    };
    Ok((side(w, "width")?, side(h, "height")?))
}

/// `I/N` with `I < N`: shard I of N.
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not I/N"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?}: {v:?} is not a number"))
    };
    let (i, n) = (num(i)?, num(n)?);
    if i >= n {
        return Err(format!("{s:?}: shard {i} is not one of 0..{n}"));
    }
    Ok((i, n))
}

/// A byte count: `N`, or `N` followed by `K`, `M`, `G` (`KiB`, `MiB`, `GiB`; powers of 1,024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count such as 512M or 2G"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        "t" | "tib" | "tb" => 40,
        u => return Err(format!("{s:?}: unknown unit {u:?} (K, M, G or T)")),
    };
    let v = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if v == 0 {
        return Err(format!("{s:?}: must be more than 0 bytes"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512M"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1k"), Ok(1024));
        assert!(parse_bytes("0").unwrap_err().contains("more than 0"));
        assert!(parse_bytes("12X").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("G").unwrap_err().contains("byte count"));
    }

    /// Every choice's name parses, through the library's own `FromStr`, to what it converts to.
    #[test]
    fn choices_are_the_names_the_libraries_parse() {
        for f in NormFlag::value_variants() {
            let name = f.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name.parse::<NormKind>().unwrap(), NormKind::from(*f));
        }
        for f in InterpolationFlag::value_variants() {
            let name = f.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(
                Interpolation::parse(&name, "--interpolation").unwrap(),
                Interpolation::from(*f)
            );
        }
        for f in CodecFlag::value_variants() {
            let name = f.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name.parse::<ValueCodec>().unwrap(), ValueCodec::from(*f));
        }
        for f in FormatFlag::value_variants() {
            let v = f.to_possible_value().unwrap();
            for name in v.get_name_and_aliases() {
                assert_eq!(name.parse::<DataFormat>().unwrap(), DataFormat::from(*f));
            }
        }
        let names = |v: &[EnsembleFlag]| -> Vec<String> {
            v.iter()
                .map(|f| f.to_possible_value().unwrap().get_name().to_string())
                .collect()
        };
        // Ensemble serializes under the same lower-case names the manifest records.
        for (f, name) in EnsembleFlag::value_variants()
            .iter()
            .zip(names(EnsembleFlag::value_variants()))
        {
            assert_eq!(
                serde_json::to_value(Ensemble::from(*f)).unwrap(),
                serde_json::Value::String(name)
            );
        }
    }

    #[test]
    fn ranges_sizes_and_shards() {
        assert_eq!(parse_range("3..7"), Ok((3, 7)));
        assert_eq!(parse_range(" 0 .. 0 "), Ok((0, 0)));
        assert!(
            parse_range("5..3")
                .unwrap_err()
                .contains("ends before it starts")
        );
        assert!(parse_range("5").unwrap_err().contains("not a range"));
        assert!(
            parse_range("a..3")
                .unwrap_err()
                .contains("\"a\" is not a number")
        );
        assert_eq!(parse_size("224"), Ok((224, 224)));
        assert_eq!(parse_size("320x240"), Ok((320, 240)));
        assert!(parse_size("0").unwrap_err().contains("at least 1"));
        assert!(parse_size("32xq").unwrap_err().contains("height"));
        assert!(parse_size("-3").unwrap_err().contains("not N or WxH"));
        assert_eq!(parse_shard("2/16"), Ok((2, 16)));
        assert!(
            parse_shard("16/16")
                .unwrap_err()
                .contains("not one of 0..16")
        );
        assert!(parse_shard("1").unwrap_err().contains("not I/N"));
        assert!(parse_shard("x/2").unwrap_err().contains("not a number"));
    }
}
