//! Reading a finished store: memory-mapped shards, random access, sequential epochs, and an
//! epoch prefetcher that decompresses ahead on a background thread.
//!
//! A store is opened only through its `manifest.json`, and every shard's footer is checked
//! against it before any record is returned. Chunk payloads are checked (xxh3) each time they
//! are decompressed. Nothing here ever writes.

use crate::error::{Result, StoreError, corrupt, format, io};
use crate::shard::{ChunkHeader, Footer, RowFormat, RowKind, parse_footer_of, read_chunk};
use crate::writer::{MANIFEST_FILE, WRITING_FILE};
use formats::{Manifest, QualitySums, Record, RecordLayout, SampleRange};
use memmap2::Mmap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The bytes of a shard: a read-only memory map, or an owned buffer (tests, small files).
pub enum ShardBytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for ShardBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ShardBytes::Mapped(m) => m,
            ShardBytes::Owned(v) => v,
        }
    }
}

/// One opened shard file.
pub struct Shard {
    pub path: PathBuf,
    pub bytes: ShardBytes,
    pub footer: Footer,
}

impl Shard {
    /// Maps `path` read-only and checks its footer.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_kind(path, RowKind::Labels)
    }

    /// Maps `path`, a file of `kind`'s kind (label shard or feature file), and checks its footer.
    pub fn open_kind(path: &Path, kind: RowKind) -> Result<Self> {
        let file = File::open(path).map_err(io(path))?;
        // SAFETY: finished shards are immutable (the writer renames a file into place only after
        // its last byte is written and never opens it again); a store is shared read-only.
        let map = unsafe { Mmap::map(&file) }.map_err(io(path))?;
        Self::from_bytes_kind(path, ShardBytes::Mapped(map), kind)
    }

    /// Checks the footer of shard bytes already in memory.
    pub fn from_bytes(path: &Path, bytes: ShardBytes) -> Result<Self> {
        Self::from_bytes_kind(path, bytes, RowKind::Labels)
    }

    fn from_bytes_kind(path: &Path, bytes: ShardBytes, kind: RowKind) -> Result<Self> {
        let footer = parse_footer_of(path, &bytes, kind)?;
        Ok(Shard {
            path: path.to_path_buf(),
            bytes,
            footer,
        })
    }

    /// Quality sums over all chunk headers, in file order.
    pub fn quality_sums(&self) -> Result<QualitySums> {
        let mut sums = QualitySums::default();
        for (i, e) in self.footer.index.iter().enumerate() {
            let h = ChunkHeader::decode(&self.bytes[e.offset as usize..])
                .map_err(|w| corrupt(&self.path, format!("chunk {i}: {w}")))?;
            sums.add(&h.stats);
        }
        Ok(sums)
    }

    /// Decompresses chunk `i` (footer index position) into `rows`, checking its checksums.
    pub fn chunk_rows(&self, i: usize, scratch: &mut Vec<u8>, rows: &mut [u8]) -> Result<()> {
        let e = &self.footer.index[i];
        let row = self.footer.info.rows.row_bytes();
        read_chunk(&self.bytes, e, row, scratch, rows).map_err(|what| {
            corrupt(
                &self.path,
                format!(
                    "chunk {i} (epoch {}, samples {}): {what}",
                    e.epoch,
                    e.samples()
                ),
            )
        })?;
        Ok(())
    }
}

/// The last chunk `get` decompressed: (shard, chunk, rows).
type ChunkCache = Mutex<Option<(usize, usize, Arc<Vec<u8>>)>>;

/// An opened, checked, read-only label store.
pub struct LabelStore {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub layout: RecordLayout,
    pub shards: Vec<Shard>,
    cache: ChunkCache,
}

impl LabelStore {
    /// Opens the store in `dir`: parses `manifest.json`, maps every shard, and checks each footer
    /// against the manifest (range, epochs, classes, k, codec, chunking, size, checksum).
    pub fn open(dir: &Path) -> Result<Self> {
        let mpath = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&mpath) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let why = if dir.join(WRITING_FILE).exists() {
                    let who = crate::lock::last_holder(dir)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default();
                    format!(
                        "its writer{who} has not finished (if it is no longer running, resume the \
                         run that writes it)"
                    )
                } else {
                    "not a label store".into()
                };
                return Err(StoreError::Invalid(format!(
                    "{}: no {MANIFEST_FILE}: {why}",
                    dir.display()
                )));
            }
            Err(e) => return Err(io(&mpath)(e)),
        };
        let manifest = Manifest::from_json(&text).map_err(format(mpath.display().to_string()))?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        for entry in &manifest.shards {
            let path = dir.join(&entry.file);
            if !path.exists() {
                return Err(StoreError::Invalid(format!(
                    "{}: shard {} (samples {}) is missing",
                    dir.display(),
                    entry.file,
                    entry.samples
                )));
            }
            let shard = Shard::open(&path)?;
            check_shard_against_manifest(&manifest, entry, &shard, None)?;
            shards.push(shard);
        }
        let layout = RecordLayout::new(manifest.classes, manifest.k, manifest.codec)
            .map_err(format(mpath.display().to_string()))?;
        Ok(LabelStore {
            dir: dir.to_path_buf(),
            manifest,
            layout,
            shards,
            cache: Mutex::new(None),
        })
    }

    /// How this store's records become pixels (its format version and recipe); a recipe this
    /// build cannot replay is an error naming the store and the field.
    pub fn view_rule(&self) -> Result<formats::view::ViewRule> {
        let m = &self.manifest;
        formats::view::ViewRule::of_store(m.format_version, &m.recipe)
            .map_err(crate::error::format(self.dir.display().to_string()))
    }

    /// Epochs in the store.
    pub fn epochs(&self) -> u32 {
        self.manifest.epochs
    }

    /// Samples covered by the store.
    pub fn samples(&self) -> SampleRange {
        self.manifest.samples
    }

    /// Total records.
    pub fn records(&self) -> u64 {
        self.manifest.records()
    }

    fn locate(&self, epoch: u32, sample: u32) -> Result<(usize, usize)> {
        if epoch >= self.epochs() || !self.samples().contains(sample) {
            return Err(StoreError::Invalid(format!(
                "record (epoch {epoch}, sample {sample}) is outside the store (epochs 0..{}, samples {})",
                self.epochs(),
                self.samples()
            )));
        }
        let s = self
            .shards
            .partition_point(|s| s.footer.info.samples.end <= sample);
        let info = &self.shards[s].footer.info;
        let j = (sample - info.samples.start) / info.chunk_records;
        Ok((
            s,
            self.shards[s].footer.by_epoch[epoch as usize][j as usize] as usize,
        ))
    }

    /// The record of (`epoch`, `sample`). Keeps the last decompressed chunk, so runs of nearby
    /// samples decompress once; for whole epochs use [`LabelStore::decode_epoch`].
    pub fn get(&self, epoch: u32, sample: u32) -> Result<Record> {
        let (s, c) = self.locate(epoch, sample)?;
        let rows = {
            let mut cache = self.cache.lock().expect("cache lock");
            match &*cache {
                Some((cs, cc, rows)) if *cs == s && *cc == c => rows.clone(),
                _ => {
                    let e = &self.shards[s].footer.index[c];
                    let mut rows = vec![0u8; e.raw_len as usize];
                    self.shards[s].chunk_rows(c, &mut Vec::new(), &mut rows)?;
                    let rows = Arc::new(rows);
                    *cache = Some((s, c, rows.clone()));
                    rows
                }
            }
        };
        let first = self.shards[s].footer.index[c].first;
        let r = self.layout.row_bytes();
        let at = (sample - first) as usize * r;
        self.layout
            .decode(&rows[at..at + r])
            .map_err(format(self.record_context(s, epoch, sample)))
    }

    fn record_context(&self, shard: usize, epoch: u32, sample: u32) -> String {
        format!(
            "{}: record (epoch {epoch}, sample {sample})",
            self.shards[shard].path.display()
        )
    }

    /// Decompresses all of `epoch` into memory, row-major, for fast access in any order.
    pub fn decode_epoch(&self, epoch: u32) -> Result<DecodedEpoch> {
        if epoch >= self.epochs() {
            return Err(StoreError::Invalid(format!(
                "epoch {epoch} is not in the store (it has {})",
                self.epochs()
            )));
        }
        let rows = epoch_rows(
            &self.dir,
            &self.shards,
            epoch,
            self.samples(),
            self.layout.row_bytes(),
        )?;
        Ok(DecodedEpoch {
            epoch,
            samples: self.samples(),
            layout: self.layout,
            rows,
            features: None,
        })
    }

    /// Iterates over the records of `epoch` in sample order, one chunk in memory at a time.
    pub fn epoch_iter(&self, epoch: u32) -> Result<EpochIter<'_>> {
        if epoch >= self.epochs() {
            return Err(StoreError::Invalid(format!(
                "epoch {epoch} is not in the store (it has {})",
                self.epochs()
            )));
        }
        Ok(EpochIter {
            store: self,
            epoch,
            shard: 0,
            chunk: 0,
            rows: Vec::new(),
            scratch: Vec::new(),
            pos: 0,
            first: 0,
        })
    }

    /// Starts a background thread that decodes `epochs` in turn, at most one ahead of the
    /// consumer, so that reading an epoch in any order never waits on zstd after the first.
    pub fn prefetch(self: &Arc<Self>, epochs: Vec<u32>) -> Prefetcher {
        self.prefetch_with_features(epochs, None)
    }

    /// [`LabelStore::prefetch`], each epoch decoded with `features`' vectors of it too
    /// ([`DecodedEpoch::features`]).
    pub fn prefetch_with_features(
        self: &Arc<Self>,
        epochs: Vec<u32>,
        features: Option<Arc<crate::FeatureStore>>,
    ) -> Prefetcher {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let store = Arc::clone(self);
        let handle = std::thread::Builder::new()
            .name("label-prefetch".into())
            .spawn(move || {
                for e in epochs {
                    let decoded = store.decode_epoch(e).and_then(|mut d| {
                        if let Some(f) = &features {
                            d.features = Some(f.decode_epoch(e)?);
                        }
                        Ok(d)
                    });
                    let failed = decoded.is_err();
                    if tx.send(decoded).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawn prefetch thread");
        Prefetcher {
            rx,
            _handle: handle,
        }
    }
}

/// Every row of `epoch` of `shards` (tiling `samples`, rows of `r` bytes), row-major.
pub(crate) fn epoch_rows(
    dir: &Path,
    shards: &[Shard],
    epoch: u32,
    samples: SampleRange,
    r: usize,
) -> Result<Vec<u8>> {
    // Fallible: a damaged or hostile manifest can claim more samples than memory holds; that
    // is an error naming the store, not an abort.
    let bytes = samples.len() as usize * r;
    let mut rows = Vec::new();
    rows.try_reserve_exact(bytes).map_err(|_| {
        StoreError::Invalid(format!(
            "{}: epoch {epoch} needs {bytes} bytes in memory ({} samples × {r} bytes), more than \
             can be allocated",
            dir.display(),
            samples.len()
        ))
    })?;
    rows.resize(bytes, 0);
    let mut scratch = Vec::new();
    for shard in shards {
        for &c in &shard.footer.by_epoch[epoch as usize] {
            let e = &shard.footer.index[c as usize];
            let at = (e.first - samples.start) as usize * r;
            shard.chunk_rows(
                c as usize,
                &mut scratch,
                &mut rows[at..at + e.raw_len as usize],
            )?;
        }
    }
    Ok(rows)
}

pub(crate) fn check_shard_against_manifest(
    m: &Manifest,
    entry: &formats::ShardEntry,
    shard: &Shard,
    feature: Option<(&formats::FeatureHead, formats::FeatureCodec)>,
) -> Result<()> {
    let i = &shard.footer.info;
    let (classes, k, codec) = match i.rows {
        RowFormat::Labels(l) => (
            (m.classes, l.classes),
            (m.k, l.k),
            (m.codec.name(), l.codec.name()),
        ),
        RowFormat::Features(f) => {
            let (head, codec) = feature.expect("a feature file is checked against its head");
            (
                (head.stored_dim, f.dim),
                (0, 0),
                (codec.name(), f.codec.name()),
            )
        }
    };
    let dims = if feature.is_some() {
        "stored_dim"
    } else {
        "classes"
    };
    let checks: [(&str, String, String); 8] = [
        ("samples", entry.samples.to_string(), i.samples.to_string()),
        ("epochs", m.epochs.to_string(), i.epochs.to_string()),
        (dims, classes.0.to_string(), classes.1.to_string()),
        ("k", k.0.to_string(), k.1.to_string()),
        ("codec", codec.0.into(), codec.1.into()),
        (
            "chunk_records",
            m.chunk_records.to_string(),
            i.chunk_records.to_string(),
        ),
        (
            "bytes",
            entry.bytes.to_string(),
            shard.bytes.len().to_string(),
        ),
        (
            "checksum",
            entry.checksum.clone(),
            crate::shard::checksum_text(shard.footer.index_xxh3),
        ),
    ];
    for (field, want, got) in checks {
        if want != got {
            return Err(corrupt(
                &shard.path,
                format!(
                    "manifest and shard disagree on {field}: manifest says {want}, shard has {got}"
                ),
            ));
        }
    }
    Ok(())
}

/// One epoch decompressed into memory.
pub struct DecodedEpoch {
    pub epoch: u32,
    pub samples: SampleRange,
    layout: RecordLayout,
    rows: Vec<u8>,
    /// One feature head's vectors of the epoch, when the prefetcher was asked for them.
    pub features: Option<crate::DecodedFeatures>,
}

impl DecodedEpoch {
    /// The encoded row of `sample`.
    pub fn row(&self, sample: u32) -> &[u8] {
        let r = self.layout.row_bytes();
        let at = (sample - self.samples.start) as usize * r;
        &self.rows[at..at + r]
    }

    /// Decodes the record of `sample` into `rec`, reusing its buffers.
    pub fn get_into(&self, sample: u32, rec: &mut Record) -> Result<()> {
        if !self.samples.contains(sample) {
            return Err(StoreError::Invalid(format!(
                "sample {sample} is outside the store's samples {}",
                self.samples
            )));
        }
        self.layout
            .decode_into(self.row(sample), rec)
            .map_err(format(format!(
                "record (epoch {}, sample {sample})",
                self.epoch
            )))
    }

    /// The record of `sample`.
    pub fn get(&self, sample: u32) -> Result<Record> {
        let mut rec = Record::empty(self.layout.k as usize);
        self.get_into(sample, &mut rec)?;
        Ok(rec)
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.rows.len() + self.features.as_ref().map_or(0, |f| f.memory_bytes())
    }
}

/// Decoded epochs arriving from a background thread, in the order requested.
pub struct Prefetcher {
    rx: crossbeam_channel::Receiver<Result<DecodedEpoch>>,
    _handle: std::thread::JoinHandle<()>,
}

impl Prefetcher {
    /// The next epoch; blocks only if the background thread has not finished it yet.
    pub fn next_epoch(&self) -> Option<Result<DecodedEpoch>> {
        self.rx.recv().ok()
    }
}

/// Records of one epoch in sample order.
pub struct EpochIter<'a> {
    store: &'a LabelStore,
    epoch: u32,
    shard: usize,
    chunk: usize,
    rows: Vec<u8>,
    scratch: Vec<u8>,
    pos: usize,
    first: u32,
}

impl Iterator for EpochIter<'_> {
    type Item = Result<(u32, Record)>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.store.layout.row_bytes();
        while self.pos * r >= self.rows.len() {
            let shard = self.store.shards.get(self.shard)?;
            let chunks = &shard.footer.by_epoch[self.epoch as usize];
            let Some(&c) = chunks.get(self.chunk) else {
                self.shard += 1;
                self.chunk = 0;
                continue;
            };
            let e = &shard.footer.index[c as usize];
            self.rows.resize(e.raw_len as usize, 0);
            if let Err(err) = shard.chunk_rows(c as usize, &mut self.scratch, &mut self.rows) {
                // Stop after reporting: the rest of the epoch cannot be trusted to be in order.
                self.shard = usize::MAX;
                self.rows.clear();
                return Some(Err(err));
            }
            self.first = e.first;
            self.pos = 0;
            self.chunk += 1;
        }
        let sample = self.first + self.pos as u32;
        let row = &self.rows[self.pos * r..(self.pos + 1) * r];
        self.pos += 1;
        Some(
            self.store
                .layout
                .decode(row)
                .map(|rec| (sample, rec))
                .map_err(format(format!(
                    "record (epoch {}, sample {sample})",
                    self.epoch
                ))),
        )
    }
}
