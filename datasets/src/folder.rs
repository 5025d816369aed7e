//! Image folders in the ImageNet layout: `ROOT/SPLIT/CLASS/*.{jpg,jpeg,png}` (or
//! `ROOT/CLASS/…` when ROOT has no split folders at all). Split `test` falls back to `val`, as
//! ImageNet ships no labelled test split; any other missing split is an error naming the splits
//! there are. Classes are the sub-folder names in sorted order; files are sorted by name within
//! a class. Read `unlabelled` ([`ImageFolder::open_unlabelled`]), a split is every image under
//! it at any depth, sorted by relative path, with no hard labels (a transfer set).
//!
//! Image sizes come from file headers (never a decode), once: they are kept with each file's
//! size and mtime in the split's dataset index (`folder_index`), so a later run over the same
//! files opens none of them until it reads pixels.
//!
//! Every image is decoded to RGB: grayscale is replicated into three channels, alpha dropped,
//! 16-bit samples scaled to 8 bits. Files with other extensions are an error (hidden files such
//! as `.DS_Store` are skipped), as is an empty class folder. The content fingerprint hashes each
//! file's relative path and size, not its bytes: reading a whole ImageNet to fingerprint it would
//! take longer than labelling it.

use super::decode::ImageDecoder;
use super::{Dataset, Image};
use crate::error::DataError;
use formats::manifest::DatasetFingerprint;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

/// An image-folder split.
pub struct ImageFolder {
    files: Vec<PathBuf>,
    /// (width, height) of every file, from its header or the dataset index.
    dims: Vec<(u32, u32)>,
    /// Each file's class; empty when read unlabelled.
    labels: Vec<u32>,
    /// Class names (sub-folders); empty when read unlabelled.
    names: Vec<String>,
    fingerprint: DatasetFingerprint,
    decoder: ImageDecoder,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| matches!(e.as_str(), "jpg" | "jpeg" | "png"))
}

/// An error naming `f` unless it is a JPEG or PNG file by its extension.
fn check_image(f: &Path) -> Result<(), DataError> {
    if is_image(f) {
        Ok(())
    } else {
        Err(DataError::data(
            f,
            "not a JPEG or PNG file (only .jpg, .jpeg and .png are read)",
        ))
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(DataError::io(dir))?
        .map(|e| e.map(|e| e.path()).map_err(DataError::io(dir)))
        .collect::<Result<_, _>>()?;
    v.retain(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    });
    v.sort();
    Ok(v)
}

impl ImageFolder {
    /// Opens `root/split` (`root/val` for a missing `test`; `root` itself when it has no split
    /// folders).
    pub fn open(root: &Path, split: &str) -> Result<Self, DataError> {
        let base = split_dir(root, split)?;
        let class_dirs: Vec<PathBuf> = sorted_entries(&base)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Err(DataError::data(
                &base,
                "no class sub-folders (expected SPLIT/CLASS/*.jpg; a folder of images without \
                 classes is read `unlabelled`)",
            ));
        }
        let (mut files, mut labels, mut names) = (Vec::new(), Vec::new(), Vec::new());
        for (c, dir) in class_dirs.iter().enumerate() {
            let before = files.len();
            for f in sorted_entries(dir)? {
                if f.is_dir() {
                    return Err(DataError::data(&f, "nested folders inside a class folder"));
                }
                check_image(&f)?;
                files.push(f);
                labels.push(c as u32);
            }
            if files.len() == before {
                return Err(DataError::data(dir, "empty class folder"));
            }
            names.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        }
        Self::of_files(&base, split, files, labels, names)
    }

    /// Opens `root/split` (as [`ImageFolder::open`] finds it) as a transfer set without hard
    /// labels: every image under it, at any depth and whatever the sub-folders are, sorted by
    /// relative path (component by component, so a folder of class folders keeps the order,
    /// and the content fingerprint, it has when read with its classes). Hidden files and
    /// folders are skipped; a file of another type is an error naming it.
    pub fn open_unlabelled(root: &Path, split: &str) -> Result<Self, DataError> {
        let base = split_dir(root, split)?;
        let mut files = Vec::new();
        let walk = walkdir::WalkDir::new(&base)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| !e.file_name().to_string_lossy().starts_with('.'));
        for entry in walk {
            let entry = entry.map_err(|e| {
                let at = e.path().unwrap_or(&base).to_path_buf();
                DataError::data(at, format!("reading the folder: {e}"))
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            check_image(entry.path())?;
            files.push(entry.into_path());
        }
        if files.is_empty() {
            return Err(DataError::data(
                &base,
                "no .jpg, .jpeg or .png image under it",
            ));
        }
        Self::of_files(&base, split, files, Vec::new(), Vec::new())
    }

    /// The split of `files` under `base` with their `labels` (empty: unlabelled) and class
    /// `names`: sizes from the dataset index or the files' headers (the index rewritten when
    /// any was read again), and the fingerprint.
    fn of_files(
        base: &Path,
        split: &str,
        files: Vec<PathBuf>,
        labels: Vec<u32>,
        names: Vec<String>,
    ) -> Result<Self, DataError> {
        let old_index = super::folder_index::load(base);
        let (mut dims, mut entries, mut reread) = (Vec::new(), Vec::new(), 0usize);
        let mut h = Xxh3::new();
        for f in &files {
            let md = std::fs::metadata(f).map_err(DataError::io(f))?;
            let (size, mtime_ns) = (md.len(), super::folder_index::mtime_ns(&md));
            let rel = f
                .strip_prefix(base)
                .unwrap_or(f)
                .to_string_lossy()
                .into_owned();
            h.update(rel.as_bytes());
            h.update(&[0]);
            h.update(&size.to_le_bytes());
            let known = old_index
                .as_ref()
                .and_then(|i| i.get(&rel))
                .filter(|e| e.size == size && e.mtime_ns == mtime_ns);
            let (w, hgt) = match known {
                Some(e) => (e.width, e.height),
                None => {
                    reread += 1;
                    header_dims(f)?
                }
            };
            dims.push((w, hgt));
            entries.push((
                rel,
                super::folder_index::Entry {
                    size,
                    mtime_ns,
                    width: w,
                    height: hgt,
                },
            ));
        }
        let stale = old_index.as_ref().map_or(0, |i| i.len()) != entries.len();
        if reread > 0 || stale {
            match (&old_index, super::folder_index::save(base, &entries)) {
                (Some(_), Ok(())) => tracing::warn!(
                    "{}: dataset index rebuilt ({reread} of {} files read again)",
                    base.display(),
                    entries.len()
                ),
                (None, Ok(())) => {}
                // A read-only dataset works, only without the cache.
                (_, Err(e)) => tracing::debug!("dataset index not written: {e}"),
            }
        }
        let mut lh = Xxh3::new();
        for l in &labels {
            lh.update(&l.to_le_bytes());
        }
        let fingerprint = DatasetFingerprint {
            format: "image-folder".into(),
            split: split.into(),
            samples: files.len() as u64,
            labels_xxh3: format!("{:016x}", lh.digest()),
            content_xxh3: format!("{:016x}", h.digest()),
            labelled: !names.is_empty(),
        };
        Ok(ImageFolder {
            files,
            dims,
            labels,
            names,
            fingerprint,
            decoder: ImageDecoder::default(),
        })
    }

    /// The same folder read with `decoder` (a store's, to replay what it was labelled from).
    pub fn with_decoder(mut self, decoder: ImageDecoder) -> Self {
        self.decoder = decoder;
        self
    }

    /// Path of sample `index`.
    pub fn path(&self, index: u32) -> &Path {
        &self.files[index as usize]
    }

    fn file(&self, index: u32) -> Result<&Path, DataError> {
        if index as usize >= self.files.len() {
            return Err(DataError::invalid(
                "index",
                format!("sample {index} is beyond the {} samples", self.files.len()),
            ));
        }
        Ok(self.path(index))
    }
}

impl Dataset for ImageFolder {
    fn format(&self) -> &'static str {
        "image-folder"
    }
    fn len(&self) -> u32 {
        self.files.len() as u32
    }
    fn classes(&self) -> u32 {
        self.names.len() as u32
    }
    fn class_names(&self) -> Option<&[String]> {
        (!self.names.is_empty()).then_some(&self.names[..])
    }
    fn label(&self, index: u32) -> Option<u32> {
        self.labels.get(index as usize).copied()
    }
    fn channels(&self) -> u8 {
        3
    }
    fn dims(&self, index: u32) -> Result<(u32, u32), DataError> {
        super::dims_at(&self.dims, index)
    }
    fn uniform_dims(&self) -> Result<(u32, u32), DataError> {
        super::uniform_of(&self.dims, &|i| {
            (self.files[i].clone(), self.files[i].display().to_string())
        })
    }
    fn image(&self, index: u32) -> Result<Image, DataError> {
        let f = self.file(index)?;
        let bytes = std::fs::read(f).map_err(DataError::io(f))?;
        self.decoder
            .decode(&bytes)
            .map_err(|e| DataError::data(f, format!("sample {index}: {e}")))
    }

    fn encoded(&self) -> bool {
        true
    }

    fn decoder(&self) -> &'static str {
        self.decoder.name()
    }
    fn fingerprint(&self) -> &DatasetFingerprint {
        &self.fingerprint
    }
}

/// The directory of `split` under `root`: `root/split`; `root/val` for a missing `test`;
/// `root` itself when it holds no split folder (then its sub-folders are the classes).
fn split_dir(root: &Path, split: &str) -> Result<PathBuf, DataError> {
    if root.join(split).is_dir() {
        return Ok(root.join(split));
    }
    if split == "test" && root.join("val").is_dir() {
        return Ok(root.join("val"));
    }
    let present: Vec<&str> = ["train", "val", "test"]
        .into_iter()
        .filter(|s| root.join(s).is_dir())
        .collect();
    if present.is_empty() {
        return Ok(root.to_path_buf());
    }
    Err(DataError::data(
        root,
        format!(
            "no split {split:?} here (it has {})",
            present
                .iter()
                .map(|s| format!("{s}/"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// (width, height) from the file's header, without decoding pixels.
fn header_dims(f: &Path) -> Result<(u32, u32), DataError> {
    let file = std::fs::File::open(f).map_err(DataError::io(f))?;
    super::decode::reader_dims(std::io::BufReader::new(file)).map_err(|e| DataError::data(f, e))
}
