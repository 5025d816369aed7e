//! WebDataset tar shards: the format large image datasets are published in (timm's
//! ImageNet-1k/12k/22k, HF hubs). A split is a list of `.tar` files; a sample is the run of
//! consecutive members sharing a key (the member name up to the first `.` of its file name:
//! `n01440764/abc.jpg` and `n01440764/abc.cls` are sample `n01440764/abc`); its image is the member
//! with extension `jpg`, `jpeg` or `png`, its class the decimal text of the `cls` member (or the
//! extension given as the label key). Other members (`json`, `txt`, …) are ignored. Read
//! `unlabelled` (a transfer set), samples need no label member and none is read.
//!
//! Shards are memory-mapped and members decoded in place, so a student replays any sample in any
//! order without reading a shard through. Where each member lies is found once per shard by
//! scanning its tar headers (and each image's size from its header) and kept in the dataset index
//! `.distill-wds.idx` beside the shards; a shard is scanned again only when its size or mtime
//! changes. Samples are numbered shard by shard (shards in sorted or pattern order, members in
//! tar order).
//!
//! The fingerprint hashes every sample's key and image size (and the labels), not shard names: the
//! same samples cut into other shards are the same dataset; other samples are not.

use super::decode::{ImageDecoder, bytes_dims};
use super::{Dataset, Image};
use crate::error::DataError;
use formats::manifest::DatasetFingerprint;
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::Xxh3;

/// File name of the dataset index in the shards' directory.
pub const INDEX_FILE: &str = ".distill-wds.idx";
/// Version 2: the body is the shards' entries in postcard's encoding (version 1, a hand-written
/// layout, is not read: its index is rebuilt once).
const MAGIC: &[u8; 8] = b"DSTLWDS2";
/// The label member's extension unless told otherwise.
pub const DEFAULT_LABEL_KEY: &str = "cls";

/// One sample as the index keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Member {
    key: String,
    /// Byte offset and length of the image member inside its shard.
    offset: u64,
    len: u64,
    width: u32,
    height: u32,
    label: u32,
}

/// What the index knows of one shard.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ShardEntry {
    size: u64,
    mtime_ns: i64,
    label_key: String,
    members: Vec<Member>,
}

/// A split of WebDataset shards.
pub struct WebDataset {
    paths: Vec<PathBuf>,
    maps: Vec<Mmap>,
    /// (shard, offset, len) of each sample's image member.
    at: Vec<(u32, u64, u64)>,
    dims: Vec<(u32, u32)>,
    keys: Vec<Box<str>>,
    labels: Vec<u32>,
    /// First sample of each shard.
    starts: Vec<u32>,
    classes: u32,
    fingerprint: DatasetFingerprint,
    decoder: ImageDecoder,
}

/// Whether `path` names WebDataset shards: a `.tar` file, a brace pattern, or a directory holding
/// `.tar` files (directly or in a split folder).
pub fn looks_like(path: &Path) -> bool {
    let s = path.to_string_lossy();
    if s.contains('{') && s.contains('}') {
        return true;
    }
    if path.is_file() {
        return is_tar(path);
    }
    let has_tars =
        |d: &Path| std::fs::read_dir(d).is_ok_and(|r| r.flatten().any(|e| is_tar(&e.path())));
    path.is_dir()
        && (has_tars(path)
            || ["train", "val", "validation", "test"]
                .iter()
                .any(|s| has_tars(&path.join(s))))
}

fn is_tar(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

/// Expands the brace patterns of a shard list: `{000000..000146}` (zero padding kept from the
/// first bound) and `{a,b,c}`, any number of them.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>, DataError> {
    let Some(open) = pattern.find('{') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| DataError::invalid("data", format!("{pattern:?}: unclosed '{{'")))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let alternatives: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let bad = || {
            DataError::invalid(
                "data",
                format!("{pattern:?}: {{{body}}} is not a range {{A..B}} of numbers"),
            )
        };
        let (x, y): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if y < x || y - x > 10_000_000 {
            return Err(bad());
        }
        let width = if a.starts_with('0') { a.len() } else { 0 };
        (x..=y).map(|n| format!("{n:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let rest = expand_braces(tail)?;
    let mut out = Vec::with_capacity(alternatives.len() * rest.len());
    for alt in &alternatives {
        for r in &rest {
            out.push(format!("{head}{alt}{r}"));
        }
    }
    Ok(out)
}

/// The shard files of `split` at `path`: the expansion of a brace pattern or a single `.tar`
/// (the split is then only a name); for a directory, `path/split/*.tar`, else the `.tar` files
/// whose names hold the split as a word (`test` also takes `val`/`validation`), else — when no
/// name holds any split word — every `.tar` there. Sorted by name.
pub fn shard_paths(path: &Path, split: &str) -> Result<Vec<PathBuf>, DataError> {
    let s = path.to_string_lossy();
    if s.contains('{') {
        let paths: Vec<PathBuf> = expand_braces(&s)?.into_iter().map(PathBuf::from).collect();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            return Err(DataError::data(
                missing,
                format!("no such shard (of the {} that {s} names)", paths.len()),
            ));
        }
        return Ok(paths);
    }
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let tars = |d: &Path| -> Result<Vec<PathBuf>, DataError> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map_err(DataError::io(d))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| is_tar(p) && p.is_file())
            .collect();
        v.sort();
        Ok(v)
    };
    if path.join(split).is_dir() {
        let v = tars(&path.join(split))?;
        if v.is_empty() {
            return Err(DataError::data(path.join(split), "no .tar shards here"));
        }
        return Ok(v);
    }
    let all = tars(path)?;
    let words = |p: &PathBuf| -> Vec<String> {
        p.file_stem()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .map(str::to_string)
            .collect()
    };
    let wanted: Vec<&str> = match split {
        "test" => vec!["test", "val", "validation"],
        "val" | "validation" => vec!["val", "validation"],
        other => vec![other],
    };
    let known = ["train", "val", "validation", "test"];
    let mine: Vec<PathBuf> = all
        .iter()
        .filter(|p| words(p).iter().any(|w| wanted.contains(&w.as_str())))
        .cloned()
        .collect();
    if !mine.is_empty() {
        // `test` falls back to `val` only where there is no test shard.
        if split == "test" && mine.iter().any(|p| words(p).iter().any(|w| w == "test")) {
            return Ok(mine
                .into_iter()
                .filter(|p| words(p).iter().any(|w| w == "test"))
                .collect());
        }
        return Ok(mine);
    }
    let present: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| all.iter().any(|p| words(p).iter().any(|w| w == k)))
        .collect();
    if all.is_empty() {
        return Err(DataError::data(path, "no .tar shards here"));
    }
    if present.is_empty() {
        return Ok(all);
    }
    Err(DataError::data(
        path,
        format!(
            "no shards of split {split:?} here (shard names hold {})",
            present.join(", ")
        ),
    ))
}

/// The key and the (lowercased) extension of a member name: the key is everything up to the
/// first `.` of the file name, directories included. `None` for names that are no sample's
/// (no extension, or a hidden file such as `._x.jpg`).
fn split_key(name: &str) -> Option<(&str, String)> {
    let base_at = name.rfind('/').map_or(0, |i| i + 1);
    let base = &name[base_at..];
    if base.starts_with('.') {
        return None;
    }
    let dot = base.find('.')?;
    let ext = &base[dot + 1..];
    if ext.is_empty() {
        return None;
    }
    Some((&name[..base_at + dot], ext.to_ascii_lowercase()))
}

/// Scans one shard's tar headers: the samples in member order, each with its image member's
/// place and size and its label. Errors name the shard and the key.
fn scan(path: &Path, map: &[u8], label_key: &str) -> Result<Vec<Member>, DataError> {
    let at = |what: String| DataError::data(path, what);
    struct Pending {
        key: String,
        image: Option<(u64, u64)>,
        webp: bool,
        label: Option<u32>,
        exts: Vec<String>,
    }
    let mut out: Vec<Member> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut finish = |p: Pending, out: &mut Vec<Member>| -> Result<(), DataError> {
        if let Some(first) = seen.insert(p.key.clone(), out.len()) {
            return Err(at(format!(
                "duplicate key {:?}: samples {first} and {} of this shard (a sample's members \
                 must be consecutive, and keys unique)",
                p.key,
                out.len()
            )));
        }
        let Some((offset, len)) = p.image else {
            return Err(at(format!(
                "sample {:?} has no image member ({}; read are jpg, jpeg, png; it has: {})",
                p.key,
                if p.webp {
                    "its webp image is not read by this build's decoder"
                } else {
                    "none"
                },
                p.exts.join(", ")
            )));
        };
        // Read unlabelled (no label key), no sample needs a label member.
        let label = match p.label {
            Some(l) => l,
            None if label_key.is_empty() => u32::MAX,
            None => {
                return Err(at(format!(
                    "sample {:?} has no label member .{label_key} (it has: {})",
                    p.key,
                    p.exts.join(", ")
                )));
            }
        };
        let bytes = &map[offset as usize..(offset + len) as usize];
        let (width, height) =
            bytes_dims(bytes).map_err(|e| at(format!("sample {:?}: {e}", p.key)))?;
        out.push(Member {
            key: p.key,
            offset,
            len,
            width,
            height,
            label,
        });
        Ok(())
    };
    let mut archive = tar::Archive::new(std::io::Cursor::new(map));
    let entries = archive
        .entries_with_seek()
        .map_err(|e| at(format!("not a tar file: {e}")))?;
    let (mut cur, mut end, mut last) = (None::<Pending>, 0u64, String::from("(none)"));
    for entry in entries {
        let entry = entry.map_err(|e| {
            at(format!(
                "not a valid tar after member {last:?} (at byte {end}): {e}"
            ))
        })?;
        let name = entry
            .path()
            .map_err(|e| at(format!("member after {last:?}: bad name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let (offset, size) = (entry.raw_file_position(), entry.size());
        if offset.saturating_add(size) > map.len() as u64 {
            return Err(at(format!(
                "truncated: member {name:?} needs bytes {offset}..{} but the file has {}",
                offset + size,
                map.len()
            )));
        }
        end = (offset + size).div_ceil(512) * 512;
        last.clone_from(&name);
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let Some((key, ext)) = split_key(&name) else {
            continue;
        };
        if cur.as_ref().is_none_or(|p| p.key != key) {
            if let Some(p) = cur.take() {
                finish(p, &mut out)?;
            }
            cur = Some(Pending {
                key: key.to_string(),
                image: None,
                webp: false,
                label: None,
                exts: Vec::new(),
            });
        }
        let p = cur.as_mut().expect("a pending sample");
        match ext.as_str() {
            "jpg" | "jpeg" | "png" if p.image.is_none() => p.image = Some((offset, size)),
            "webp" => p.webp = true,
            e if e == label_key && !label_key.is_empty() => {
                let text = &map[offset as usize..(offset + size) as usize];
                let label = std::str::from_utf8(text)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                    .ok_or_else(|| {
                        at(format!(
                            "sample {key:?}: .{label_key} holds {:?}, not a class number",
                            String::from_utf8_lossy(&text[..text.len().min(40)])
                        ))
                    })?;
                p.label = Some(label);
            }
            _ => {}
        }
        p.exts.push(ext);
    }
    if let Some(p) = cur.take() {
        finish(p, &mut out)?;
    }
    // A tar ends with zero blocks; without one the file was cut short at a member boundary.
    let tail = map.get(end as usize..end as usize + 512);
    if !tail.is_some_and(|t| t.iter().all(|&b| b == 0)) {
        return Err(at(format!(
            "truncated: no end-of-archive block after member {last:?} (byte {end} of {})",
            map.len()
        )));
    }
    if out.is_empty() {
        return Err(at("no samples in this shard".to_string()));
    }
    Ok(out)
}

impl WebDataset {
    /// Opens split `split` of the shards at `path` (a directory, a `.tar` or a brace pattern).
    pub fn open(path: &Path, split: &str, opts: &crate::OpenOptions) -> Result<Self, DataError> {
        let paths = shard_paths(path, split)?;
        // Unlabelled shards are scanned with no label key (and indexed as such).
        let label_key = match (opts.unlabelled, opts.label_key.as_deref()) {
            (true, _) => "",
            (false, key) => key.unwrap_or(DEFAULT_LABEL_KEY),
        };
        let dir = paths[0].parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut index = load_index(&dir);
        let maps: Vec<Mmap> = paths
            .iter()
            .map(|p| {
                let f = std::fs::File::open(p).map_err(DataError::io(p))?;
                // SAFETY: shards are read-only inputs; a shard changed while mapped is the
                // user's error (as for any reader), and the index notices it on the next open.
                unsafe { Mmap::map(&f) }.map_err(DataError::io(p))
            })
            .collect::<Result<_, _>>()?;
        let names: Vec<String> = paths.iter().map(|p| index_name(&dir, p)).collect();
        let stats: Vec<(u64, i64)> = paths
            .iter()
            .map(|p| {
                let md = std::fs::metadata(p).map_err(DataError::io(p))?;
                Ok((md.len(), super::folder_index::mtime_ns(&md)))
            })
            .collect::<Result<_, DataError>>()?;
        let todo: Vec<usize> = (0..paths.len())
            .filter(|&i| {
                index.get(&names[i]).is_none_or(|e| {
                    // Read unlabelled, an entry scanned for any label key will do.
                    (e.size, e.mtime_ns) != stats[i]
                        || (e.label_key != label_key && !opts.unlabelled)
                })
            })
            .collect();
        if !todo.is_empty() {
            let scanned = scan_all(&paths, &maps, &todo, label_key)?;
            for (i, members) in todo.iter().zip(scanned) {
                index.insert(
                    names[*i].clone(),
                    ShardEntry {
                        size: stats[*i].0,
                        mtime_ns: stats[*i].1,
                        label_key: label_key.to_string(),
                        members,
                    },
                );
            }
            // Shards deleted since are forgotten; other splits' shards in `dir` are kept.
            index.retain(|name, _| dir.join(name).is_file());
            if let Err(e) = save_index(&dir, &index) {
                // Read-only shards work, only without the cache.
                tracing::debug!("dataset index not written: {e}");
            }
        }
        let n: usize = names.iter().map(|n| index[n].members.len()).sum();
        let mut ds = WebDataset {
            paths,
            maps,
            at: Vec::with_capacity(n),
            dims: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            starts: Vec::with_capacity(names.len()),
            classes: 0,
            fingerprint: DatasetFingerprint::default(),
            decoder: opts.decoder,
        };
        let mut owner: HashMap<&str, usize> = HashMap::with_capacity(n);
        let (mut h, mut lh) = (Xxh3::new(), Xxh3::new());
        for (s, name) in names.iter().enumerate() {
            ds.starts.push(ds.keys.len() as u32);
            for m in &index[name].members {
                if let Some(first) = owner.insert(&m.key, s) {
                    return Err(DataError::data(
                        &ds.paths[s],
                        format!(
                            "duplicate key {:?}: also in {}",
                            m.key,
                            ds.paths[first].display()
                        ),
                    ));
                }
                h.update(m.key.as_bytes());
                h.update(&[0]);
                h.update(&m.len.to_le_bytes());
                if !opts.unlabelled {
                    lh.update(&m.label.to_le_bytes());
                    ds.labels.push(m.label);
                }
                ds.at.push((s as u32, m.offset, m.len));
                ds.dims.push((m.width, m.height));
                ds.keys.push(m.key.as_str().into());
            }
        }
        if ds.keys.len() > u32::MAX as usize {
            return Err(DataError::data(path, "more than 2^32 samples"));
        }
        ds.fingerprint = DatasetFingerprint {
            format: "wds".into(),
            split: split.into(),
            samples: ds.keys.len() as u64,
            labels_xxh3: format!("{:016x}", lh.digest()),
            content_xxh3: format!("{:016x}", h.digest()),
            labelled: !opts.unlabelled,
        };
        if opts.unlabelled {
            return Ok(ds);
        }
        let top = ds.labels.iter().copied().max().unwrap_or(0);
        let given = match (opts.classes, opts.default_classes) {
            (Some(c), _) => Some((c, "`classes`")),
            (None, Some(c)) => Some((c, "the class count of the store or student")),
            (None, None) => None,
        };
        ds.classes = match given {
            Some((c, from)) => {
                if let Some(i) = ds.labels.iter().position(|&l| l >= c) {
                    return Err(DataError::data(
                        ds.shard_of(i as u32),
                        format!(
                            "sample {:?}: label {} is not below {from} {c}",
                            ds.keys[i], ds.labels[i]
                        ),
                    ));
                }
                c
            }
            None => top + 1,
        };
        Ok(ds)
    }

    /// The key of sample `index`.
    pub fn key(&self, index: u32) -> &str {
        &self.keys[index as usize]
    }

    /// The shard file holding sample `index`.
    pub fn shard_of(&self, index: u32) -> &Path {
        &self.paths[self.at[index as usize].0 as usize]
    }

    /// The shard files, in sample order.
    pub fn shards(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The encoded bytes of sample `index`'s image, in place in the mapped shard.
    pub fn encoded_image(&self, index: u32) -> Result<&[u8], DataError> {
        let &(s, off, len) = self.at.get(index as usize).ok_or_else(|| {
            DataError::invalid(
                "index",
                format!("sample {index} is beyond the {} samples", self.keys.len()),
            )
        })?;
        let map = &self.maps[s as usize];
        map.get(off as usize..(off + len) as usize).ok_or_else(|| {
            DataError::data(
                &self.paths[s as usize],
                format!(
                    "sample {index} (key {:?}): the shard is shorter than its index says \
                     (changed since it was opened?)",
                    self.keys[index as usize]
                ),
            )
        })
    }
}

/// Scans the shards `todo` in parallel on rayon's pool (they are independent files); on
/// errors, the first shard's in `todo` order, whichever thread finished first.
fn scan_all(
    paths: &[PathBuf],
    maps: &[Mmap],
    todo: &[usize],
    label_key: &str,
) -> Result<Vec<Vec<Member>>, DataError> {
    use rayon::prelude::*;
    let scanned: Vec<Result<Vec<Member>, DataError>> = todo
        .par_iter()
        .map(|&i| scan(&paths[i], &maps[i], label_key))
        .collect();
    scanned.into_iter().collect()
}

/// The name a shard has in the index of `dir`: its file name when it lies in `dir`.
fn index_name(dir: &Path, p: &Path) -> String {
    p.strip_prefix(dir)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// Reads the index of `dir`; empty when there is none or it does not parse (then it is rebuilt).
fn load_index(dir: &Path) -> HashMap<String, ShardEntry> {
    super::folder_index::read_frame(&dir.join(INDEX_FILE), MAGIC)
        .and_then(|raw| postcard::from_bytes::<Vec<(String, ShardEntry)>>(&raw).ok())
        .map(|entries| entries.into_iter().collect())
        .unwrap_or_default()
}

/// Writes the index of `dir` (shards in name order) through a temporary file and a rename.
fn save_index(dir: &Path, index: &HashMap<String, ShardEntry>) -> Result<(), DataError> {
    let mut entries: Vec<(&String, &ShardEntry)> = index.iter().collect();
    entries.sort_by_key(|(name, _)| *name);
    let raw = postcard::to_stdvec(&entries)
        .map_err(|e| DataError::data(dir.join(INDEX_FILE), format!("encoding: {e}")))?;
    super::folder_index::write_frame(dir, INDEX_FILE, MAGIC, &raw)
}

impl Dataset for WebDataset {
    fn format(&self) -> &'static str {
        "wds"
    }
    fn len(&self) -> u32 {
        self.keys.len() as u32
    }
    fn classes(&self) -> u32 {
        self.classes
    }
    fn class_names(&self) -> Option<&[String]> {
        None
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
            (
                self.shard_of(i as u32).to_path_buf(),
                format!("sample {:?}", self.keys[i]),
            )
        })
    }
    fn image(&self, index: u32) -> Result<Image, DataError> {
        let bytes = self.encoded_image(index)?;
        self.decoder.decode(bytes).map_err(|e| {
            DataError::data(
                self.shard_of(index),
                format!("sample {index} (key {:?}): {e}", self.keys[index as usize]),
            )
        })
    }
    fn encoded(&self) -> bool {
        true
    }
    fn decoder(&self) -> &'static str {
        self.decoder.name()
    }
    fn file_starts(&self) -> Option<&[u32]> {
        Some(&self.starts)
    }
    fn fingerprint(&self) -> &DatasetFingerprint {
        &self.fingerprint
    }
}

/// What [`pack_folder`] wrote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PackSummary {
    pub shards: Vec<PathBuf>,
    pub samples: u64,
    /// Bytes of all shards written.
    pub bytes: u64,
}

/// Bytes a member of `len` bytes named with `name_len` bytes takes in a GNU tar: its header, a
/// long-name header and block for names over 100 bytes, and its data padded to 512.
fn member_bytes(name_len: usize, len: usize) -> u64 {
    let blocks = |n: usize| n.div_ceil(512) as u64 * 512;
    let long = if name_len > 100 {
        512 + blocks(name_len + 1)
    } else {
        0
    };
    512 + long + blocks(len)
}

/// The shard file `index` of `prefix` in `out`: `out/prefix-000000.tar`.
pub fn shard_file(out: &Path, prefix: &str, index: usize) -> PathBuf {
    out.join(format!("{prefix}-{index:06}.tar"))
}

/// Writes the image folder split `folder` as tar shards `out/{prefix}-000000.tar`, … of at most
/// `max_bytes` each (a larger image gets a shard of its own): per sample the image file's bytes
/// as they are (`KEY.jpg`, `.jpeg` or `.png`) and its class as decimal text (`KEY.cls`), the key
/// being `CLASS/STEM` (dots in the stem become `_`, as a key ends at the first dot). Samples keep
/// the folder's order unless `shuffle` seeds a permutation (as published shards are shuffled);
/// in folder order sample i of the shards is sample i of the folder, so both label alike.
/// Headers carry mtime 0 and mode 644: the same folder packs to the same bytes. Each shard is
/// written to a temporary name and renamed; existing shards of `prefix` are an error.
pub fn pack_folder(
    folder: &super::ImageFolder,
    out: &Path,
    prefix: &str,
    max_bytes: u64,
    shuffle: Option<u64>,
    progress: &dyn Fn(u64),
) -> Result<PackSummary, DataError> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    std::fs::create_dir_all(out).map_err(DataError::io(out))?;
    if shard_file(out, prefix, 0).exists() {
        return Err(DataError::data(
            shard_file(out, prefix, 0),
            "already exists: remove the old shards first (or let the packer remove them: `force`)",
        ));
    }
    if !folder.labelled() {
        return Err(DataError::invalid(
            "`unlabelled`",
            "packing writes each sample's class member: pack a folder read with its classes",
        ));
    }
    let names = folder.class_names().unwrap_or(&[]);
    let mut order: Vec<u32> = (0..folder.len()).collect();
    if let Some(seed) = shuffle {
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    }
    let mut keys = HashMap::with_capacity(order.len());
    let mut summary = PackSummary {
        shards: Vec::new(),
        samples: 0,
        bytes: 0,
    };
    let mut current: Option<(
        tar::Builder<std::io::BufWriter<std::fs::File>>,
        PathBuf,
        u64,
    )> = None;
    let close = |b: tar::Builder<std::io::BufWriter<std::fs::File>>,
                 tmp: &Path,
                 summary: &mut PackSummary|
     -> Result<(), DataError> {
        let fin = shard_file(out, prefix, summary.shards.len());
        let w = b.into_inner().map_err(DataError::io(tmp))?;
        let f = w.into_inner().map_err(|e| DataError::Io {
            path: tmp.to_path_buf(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(DataError::io(tmp))?;
        summary.bytes += f.metadata().map_err(DataError::io(tmp))?.len();
        std::fs::rename(tmp, &fin).map_err(DataError::io(&fin))?;
        summary.shards.push(fin);
        Ok(())
    };
    for (done, &i) in order.iter().enumerate() {
        let path = folder.path(i);
        let bytes = std::fs::read(path).map_err(DataError::io(path))?;
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().replace('.', "_"))
            .unwrap_or_default();
        let label = folder.label(i).unwrap_or_default();
        let class = names
            .get(label as usize)
            .cloned()
            .unwrap_or_else(|| label.to_string());
        let key = format!("{class}/{stem}");
        if let Some(other) = keys.insert(key.clone(), i) {
            return Err(DataError::data(
                path,
                format!(
                    "key {key:?} is also {}'s (keys end at the first dot of a file name)",
                    folder.path(other).display()
                ),
            ));
        }
        let cls = label.to_string();
        let need = member_bytes(key.len() + 1 + ext.len(), bytes.len())
            + member_bytes(key.len() + 4, cls.len());
        // The two zero blocks that end an archive count too.
        if current
            .as_ref()
            .is_some_and(|(_, _, used)| used + need + 1024 > max_bytes)
        {
            let (b, tmp, _) = current.take().expect("an open shard");
            close(b, &tmp, &mut summary)?;
        }
        if current.is_none() {
            let fin = shard_file(out, prefix, summary.shards.len());
            let tmp = fin.with_extension("tar.tmp");
            let f = std::fs::File::create(&tmp).map_err(DataError::io(&tmp))?;
            current = Some((tar::Builder::new(std::io::BufWriter::new(f)), tmp, 0));
        }
        let (b, tmp, used) = current.as_mut().expect("an open shard");
        for (name, data) in [
            (format!("{key}.{ext}"), &bytes[..]),
            (format!("{key}.cls"), cls.as_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, &name, data)
                .map_err(DataError::io(tmp.as_path()))?;
        }
        *used += need;
        summary.samples += 1;
        progress(done as u64 + 1);
    }
    if let Some((b, tmp, _)) = current.take() {
        close(b, &tmp, &mut summary)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_ranges_with_padding_and_lists() {
        assert_eq!(
            expand_braces("d/train-{000..002}.tar").unwrap(),
            ["d/train-000.tar", "d/train-001.tar", "d/train-002.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}-{8..10}.tar").unwrap(),
            [
                "a-8.tar", "a-9.tar", "a-10.tar", "b-8.tar", "b-9.tar", "b-10.tar"
            ]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        let e = expand_braces("x-{3..1}.tar").unwrap_err().to_string();
        assert!(e.contains("not a range"), "{e}");
        let e = expand_braces("x-{3..1.tar").unwrap_err().to_string();
        assert!(e.contains("unclosed"), "{e}");
    }

    #[test]
    fn keys_are_names_up_to_the_first_dot_of_the_file_name() {
        assert_eq!(
            split_key("n0144/abc_1.JPEG"),
            Some(("n0144/abc_1", "jpeg".into()))
        );
        assert_eq!(split_key("a.b.c.cls"), Some(("a", "b.c.cls".into())));
        assert_eq!(split_key("dir.v2/x.cls"), Some(("dir.v2/x", "cls".into())));
        assert_eq!(split_key("._x.jpg"), None);
        assert_eq!(split_key("noext"), None);
    }
}
