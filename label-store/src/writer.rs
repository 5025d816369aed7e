//! Writing a store: one shard file of sample range `[start, end)` for all epochs, then its
//! manifest, atomically; and resuming a killed writer from its last complete chunk.
//!
//! Files in the store directory while writing:
//! - `writing.json`: the manifest draft (everything but shards and quality). Its presence means
//!   "unfinished"; `resume` checks a new run against it.
//! - `shard-SSSSSSSSSS-EEEEEEEEEE.dls.partial`: header and complete chunks, appended as epoch
//!   streams fill. No footer, so no reader accepts it.
//!
//! `finish` appends the footer, fsyncs, renames the shard to `.dls`, writes `manifest.json` through
//! a temporary name and rename, and removes `writing.json`. A reader opens a store only through
//! `manifest.json`, so a store killed at any moment is either complete or refused.
//!
//! Chunk boundaries are fixed sample positions and chunks are written in the order they fill, so
//! a resumed writer given the same record sequence (minus what was already on disk) writes the
//! same bytes as an uninterrupted one.

use crate::error::{Result, StoreError, corrupt, format, io};
use crate::lock::WriterLock;
use crate::shard::{
    CHUNK_HEADER_BYTES, ChunkHeader, FILE_HEADER_BYTES, IndexEntry, RowFormat, ShardInfo,
    check_file_header, encode_footer, file_header, rows_to_columns,
};
use crate::staging::{RowStats, StagedRow, StagingLog};
use formats::basis::Basis;
use formats::feature::{FeatureQuality, feature_file_name};
use formats::{FeatureLayout, Manifest, Quality, QualitySums, Record, RecordLayout, ShardEntry};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// Name of the draft file that marks an unfinished store.
pub const WRITING_FILE: &str = "writing.json";
/// Name of the manifest of a finished store.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Default zstd level: level 3 already reaches within 2% of level 9's size on label records
/// (BENCHMARKS.md) at several times the speed.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Default records per chunk. Measured (BENCHMARKS.md): 16,384 records of 1,000 classes and
/// k = 10 compress to 34.0 B/record against 36.7 at 4,096, because zstd's entropy tables then
/// see long runs of each byte column; decompressing one chunk (≈1.1 MB) takes about a millisecond.
pub const DEFAULT_CHUNK_RECORDS: u32 = 16_384;

pub use formats::manifest::shard_file_name;

/// What the caller measured about one record from the full teacher output.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RecordQuality {
    /// KL(full softmax ‖ stored) at τ = 1 and τ = 4, when the full logits were at hand.
    pub reconstruction_kl: Option<(f64, f64)>,
    /// For un-mixed records with ground truth: whether the teacher's top-1 was right.
    pub teacher_correct: Option<bool>,
}

/// How to treat an existing store directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Start a new store; an existing one (finished or not) is an error.
    Create,
    /// Continue an unfinished store from its last complete chunk (or start one if none exists).
    Resume,
    /// Delete an existing store's files first.
    Overwrite,
}

struct EpochStream {
    next: u32,
    rows: Vec<u8>,
    stats: QualitySums,
}

/// Appends the chunks of one shard file (label records, or one head's feature vectors).
pub struct ShardWriter {
    path: PathBuf,
    file: File,
    info: ShardInfo,
    streams: Vec<EpochStream>,
    index: Vec<IndexEntry>,
    /// Sums over written chunks, in file order.
    written: QualitySums,
    offset: u64,
    cols: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
    failed: bool,
    /// Records arrive in groups out of sample order and are staged until `finish`.
    staging: Option<StagingLog>,
    /// A feature file's PCA basis: vectors are projected before they are encoded.
    basis: Option<Arc<Basis>>,
    /// The buffer [`encode_feature`] reuses record to record.
    scratch: Vec<f32>,
}

impl ShardWriter {
    /// Creates (truncating) a partial shard file at `path`.
    pub fn create(path: &Path, info: ShardInfo, level: i32) -> Result<Self> {
        let mut file = File::create(path).map_err(io(path))?;
        file.write_all(&file_header(info.version, info.rows.kind()))
            .map_err(io(path))?;
        Self::new(path, file, info, level, FILE_HEADER_BYTES as u64)
    }

    fn new(path: &Path, file: File, info: ShardInfo, level: i32, offset: u64) -> Result<Self> {
        let streams = (0..info.epochs)
            .map(|_| EpochStream {
                next: info.samples.start,
                rows: Vec::new(),
                stats: QualitySums::default(),
            })
            .collect();
        Ok(ShardWriter {
            path: path.to_path_buf(),
            file,
            info,
            streams,
            index: Vec::new(),
            written: QualitySums::default(),
            offset,
            cols: Vec::new(),
            compressor: zstd::bulk::Compressor::new(level).map_err(io(path))?,
            failed: false,
            staging: None,
            basis: None,
            scratch: Vec::new(),
        })
    }

    /// Re-opens a partial shard file, keeps its complete chunks and cuts off anything after the
    /// last one (a chunk being written when the process died).
    pub fn resume(path: &Path, info: ShardInfo, level: i32) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(path))?;
        if bytes.len() < FILE_HEADER_BYTES {
            // Died before the header was written: start over.
            drop(file);
            return Self::create(path, info, level);
        }
        check_file_header(path, &bytes, info.rows.kind())?;
        let mut w = Self::new(path, file, info, level, FILE_HEADER_BYTES as u64)?;
        let row = info.rows.row_bytes();
        let mut at = FILE_HEADER_BYTES;
        while let Ok(h) = ChunkHeader::decode(&bytes[at..]) {
            let Some(stream) = w.streams.get(h.epoch as usize) else {
                break;
            };
            let j = (stream.next - info.samples.start) / info.chunk_records;
            let expect = info.chunk_samples(j);
            let start = at + CHUNK_HEADER_BYTES;
            let payload = bytes.get(start..start + h.payload_len as usize);
            let good = stream.next < info.samples.end
                && h.first == expect.start
                && h.count == expect.len()
                && h.raw_len as usize == h.count as usize * row
                && payload.is_some_and(|p| xxh3_64(p) == h.payload_xxh3);
            if !good {
                break;
            }
            w.streams[h.epoch as usize].next = expect.end;
            w.index.push(IndexEntry {
                epoch: h.epoch,
                first: h.first,
                count: h.count,
                raw_len: h.raw_len,
                offset: at as u64,
                payload_len: h.payload_len,
                payload_xxh3: h.payload_xxh3,
            });
            w.written.add(&h.stats);
            at = start + h.payload_len as usize;
        }
        if at < bytes.len() {
            tracing::info!(
                path = %path.display(),
                kept = at,
                dropped = bytes.len() - at,
                "resume: cut an incomplete chunk off the end"
            );
        }
        w.file.set_len(at as u64).map_err(io(path))?;
        w.file.seek(SeekFrom::Start(at as u64)).map_err(io(path))?;
        w.offset = at as u64;
        Ok(w)
    }

    /// The next sample index epoch `epoch` expects (the shard's end when the epoch is complete).
    pub fn next_sample(&self, epoch: u32) -> u32 {
        self.streams[epoch as usize].next
    }

    /// The shard this writer fills.
    pub fn info(&self) -> &ShardInfo {
        &self.info
    }

    /// Appends the record of (`epoch`, `sample`). Within an epoch samples must come in order
    /// without gaps; epochs may interleave freely. A rejected record changes nothing.
    pub fn append(
        &mut self,
        epoch: u32,
        sample: u32,
        rec: &Record,
        quality: &RecordQuality,
    ) -> Result<()> {
        let layout = self.label_layout()?;
        self.push(epoch, sample, |row| {
            layout.encode(rec, row)?;
            Ok(row_stats(rec, quality, layout.classes as usize))
        })
    }

    /// Appends the feature vector `x` of (`epoch`, `sample`) to a feature file, measuring its
    /// reconstruction; same order rules as [`ShardWriter::append`].
    pub fn append_feature(&mut self, epoch: u32, sample: u32, x: &[f32]) -> Result<()> {
        let layout = self.feature_layout()?;
        let basis = self.basis.clone();
        let mut scratch = std::mem::take(&mut self.scratch);
        let appended = self.push(epoch, sample, |row| {
            encode_feature(&layout, basis.as_deref(), x, row, &mut scratch)
        });
        self.scratch = scratch;
        appended
    }

    /// Projects every vector of this feature file through `basis` before it is encoded (its
    /// `d` must be the file's stored dimensions).
    pub fn set_basis(&mut self, basis: Arc<Basis>) {
        self.basis = Some(basis);
    }

    fn label_layout(&self) -> Result<RecordLayout> {
        self.info.rows.labels().ok_or_else(|| {
            StoreError::Invalid(format!(
                "{}: a label record appended to a feature file",
                self.path.display()
            ))
        })
    }

    fn feature_layout(&self) -> Result<FeatureLayout> {
        self.info.rows.features().ok_or_else(|| {
            StoreError::Invalid(format!(
                "{}: a feature vector appended to a label shard",
                self.path.display()
            ))
        })
    }

    /// Appends the row `fill` encodes (returning what it adds to the sums) in sample order.
    fn push(
        &mut self,
        epoch: u32,
        sample: u32,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<RowStats, formats::FormatError>,
    ) -> Result<()> {
        if self.failed {
            return Err(StoreError::Invalid(format!(
                "{}: an earlier write failed; resume the store to continue",
                self.path.display()
            )));
        }
        if self.staging.is_some() {
            return Err(StoreError::Invalid(format!(
                "record (epoch {epoch}, sample {sample}) appended alone to a store staged in groups"
            )));
        }
        let info = self.info;
        let Some(stream) = self.streams.get_mut(epoch as usize) else {
            return Err(StoreError::Invalid(format!(
                "record for epoch {epoch}, but the store has {} epochs",
                info.epochs
            )));
        };
        if sample != stream.next {
            let why = if stream.next == info.samples.end {
                format!("epoch {epoch} is complete (samples {})", info.samples)
            } else {
                format!("expected sample {} next", stream.next)
            };
            return Err(StoreError::Invalid(format!(
                "record (epoch {epoch}, sample {sample}) appended out of order: {why}"
            )));
        }
        let row = info.rows.row_bytes();
        let at = stream.rows.len();
        stream.rows.resize(at + row, 0);
        let stats = match fill(&mut stream.rows[at..]) {
            Ok(s) => s,
            Err(e) => {
                stream.rows.truncate(at);
                return Err(format(format!("record (epoch {epoch}, sample {sample})"))(
                    e,
                ));
            }
        };
        self.count(epoch, sample, &stats)
    }

    /// Adds a record whose row is already in its stream to the sums; flushes a full chunk.
    fn count(&mut self, epoch: u32, sample: u32, st: &RowStats) -> Result<()> {
        let info = self.info;
        let stream = &mut self.streams[epoch as usize];
        stream.stats.add(st);
        stream.next += 1;
        let j = (sample - info.samples.start) / info.chunk_records;
        if stream.next == info.chunk_samples(j).end {
            self.flush(epoch)?;
        }
        Ok(())
    }

    /// Switches to staged writing: records come in groups (labelling blocks over a permutation)
    /// and go to the staging log at `path` (opened, or resumed after its last complete group);
    /// `finish` lays them out as chunks. Chunks already in the partial shard (a finish that was
    /// interrupted) are dropped, to be written again from the log.
    pub fn stage(&mut self, path: &Path, level: i32) -> Result<()> {
        self.file
            .set_len(FILE_HEADER_BYTES as u64)
            .map_err(io(&self.path))?;
        self.file
            .seek(SeekFrom::Start(FILE_HEADER_BYTES as u64))
            .map_err(io(&self.path))?;
        self.offset = FILE_HEADER_BYTES as u64;
        self.index.clear();
        self.written = QualitySums::default();
        for s in &mut self.streams {
            s.next = self.info.samples.start;
            s.rows.clear();
            s.stats = QualitySums::default();
        }
        self.staging = Some(StagingLog::open(path, &self.info, level)?);
        Ok(())
    }

    /// With staged writing, the complete groups already staged (a resumed run skips them).
    pub fn staged_groups(&self) -> Option<u64> {
        self.staging.as_ref().map(StagingLog::groups)
    }

    /// Stages the next group of records (staged writing only); any (epoch, sample) order, each
    /// record exactly once over the whole run. A rejected group changes nothing.
    pub fn append_group(&mut self, records: &[(u32, u32, Record, RecordQuality)]) -> Result<()> {
        let layout = self.label_layout()?;
        self.stage_group(records.len(), |i, row| {
            let (epoch, sample, rec, q) = &records[i];
            layout.encode(rec, row)?;
            Ok((*epoch, *sample, row_stats(rec, q, layout.classes as usize)))
        })
    }

    /// Stages the next group of feature vectors: (epoch, sample, vector); see
    /// [`ShardWriter::append_group`].
    pub fn append_feature_group(&mut self, vectors: &[(u32, u32, &[f32])]) -> Result<()> {
        let layout = self.feature_layout()?;
        let basis = self.basis.clone();
        let mut scratch = Vec::new();
        self.stage_group(vectors.len(), |i, row| {
            let (epoch, sample, x) = vectors[i];
            let stats = encode_feature(&layout, basis.as_deref(), x, row, &mut scratch)?;
            Ok((epoch, sample, stats))
        })
    }

    /// Stages a group of `n` records, row `i` filled by `fill` (which names its key).
    fn stage_group(
        &mut self,
        n: usize,
        mut fill: impl FnMut(
            usize,
            &mut [u8],
        ) -> std::result::Result<(u32, u32, RowStats), formats::FormatError>,
    ) -> Result<()> {
        if self.failed {
            return Err(StoreError::Invalid(format!(
                "{}: an earlier write failed; resume the store to continue",
                self.path.display()
            )));
        }
        let Some(log) = self.staging.as_mut() else {
            return Err(StoreError::Invalid(
                "append_group on a store written in sample order".into(),
            ));
        };
        let info = self.info;
        let mut rows = Vec::with_capacity(n);
        for i in 0..n {
            let mut row = vec![0u8; info.rows.row_bytes()];
            let (epoch, sample, stats) =
                fill(i, &mut row).map_err(format(format!("record {i} of the group")))?;
            if epoch >= info.epochs || !info.samples.contains(sample) {
                return Err(StoreError::Invalid(format!(
                    "record (epoch {epoch}, sample {sample}) is outside the store (epochs 0..{}, samples {})",
                    info.epochs, info.samples
                )));
            }
            rows.push(StagedRow {
                epoch,
                sample,
                stats,
                row,
            });
        }
        log.append(&rows).inspect_err(|_| self.failed = true)
    }

    /// Lays the staged records out as chunks: chunk by chunk in sample order, each chunk for
    /// every epoch in turn, the order a writer fed block by block (blocks no larger than a chunk)
    /// fills them in, so a staged store has the bytes of the same records written in order. The
    /// rows of as many whole chunks as fit in [`STAGED_FINISH_BYTES`] are gathered per pass over
    /// the log.
    fn unstage(&mut self) -> Result<()> {
        let Some(log) = self.staging.take() else {
            return Ok(());
        };
        let info = self.info;
        let row = info.rows.row_bytes();
        let epochs = info.epochs as usize;
        let per_sample = (epochs * (row + std::mem::size_of::<RowStats>() + 1)) as u64;
        let chunk = u64::from(info.chunk_records);
        let chunks_per_pass = (STAGED_FINISH_BYTES / (per_sample * chunk).max(1)).max(1);
        let span = u32::try_from(chunks_per_pass * chunk).unwrap_or(u32::MAX);
        let mut a = info.samples.start;
        while a < info.samples.end {
            let b = a.saturating_add(span).min(info.samples.end);
            let n = (b - a) as usize;
            // Index (sample − a) × epochs + epoch.
            let mut rows = vec![0u8; n * epochs * row];
            let mut stats = vec![RowStats::default(); n * epochs];
            let mut seen = vec![false; n * epochs];
            for g in log.groups_from_start()? {
                let (_, recs, _) = g?;
                for r in recs {
                    if r.sample < a || r.sample >= b {
                        continue;
                    }
                    let i = (r.sample - a) as usize * epochs + r.epoch as usize;
                    if std::mem::replace(&mut seen[i], true) {
                        return Err(corrupt(
                            log.path(),
                            format!(
                                "record (epoch {}, sample {}) is staged twice",
                                r.epoch, r.sample
                            ),
                        ));
                    }
                    rows[i * row..(i + 1) * row].copy_from_slice(&r.row);
                    stats[i] = r.stats;
                }
            }
            if let Some(i) = seen.iter().position(|&v| !v) {
                return Err(StoreError::Invalid(format!(
                    "cannot finish {}: record (epoch {}, sample {}) was never labelled",
                    self.path.display(),
                    i % epochs,
                    a as usize + i / epochs
                )));
            }
            let mut c = a;
            while c < b {
                let j = (c - info.samples.start) / info.chunk_records;
                let end = info.chunk_samples(j).end;
                for e in 0..epochs {
                    for s in c..end {
                        let i = (s - a) as usize * epochs + e;
                        self.streams[e]
                            .rows
                            .extend_from_slice(&rows[i * row..(i + 1) * row]);
                        self.count(e as u32, s, &stats[i])?;
                    }
                }
                c = end;
            }
            a = b;
        }
        Ok(())
    }

    fn flush(&mut self, epoch: u32) -> Result<()> {
        let row = self.info.rows.row_bytes();
        let stream = &mut self.streams[epoch as usize];
        let count = (stream.rows.len() / row) as u32;
        let first = stream.next - count;
        rows_to_columns(&stream.rows, row, &mut self.cols);
        let payload = self.compressor.compress(&self.cols);
        let payload = match payload {
            Ok(p) => p,
            Err(e) => {
                self.failed = true;
                return Err(io(&self.path)(e));
            }
        };
        let h = ChunkHeader {
            epoch,
            first,
            count,
            raw_len: stream.rows.len() as u32,
            payload_len: payload.len() as u32,
            payload_xxh3: xxh3_64(&payload),
            stats: stream.stats,
        };
        let write = |f: &mut File| -> std::io::Result<()> {
            f.write_all(&h.encode())?;
            f.write_all(&payload)
        };
        if let Err(e) = write(&mut self.file) {
            self.failed = true;
            return Err(io(&self.path)(e));
        }
        self.index.push(IndexEntry {
            epoch,
            first,
            count,
            raw_len: h.raw_len,
            offset: self.offset,
            payload_len: h.payload_len,
            payload_xxh3: h.payload_xxh3,
        });
        self.written.add(&stream.stats);
        self.offset += (CHUNK_HEADER_BYTES + payload.len()) as u64;
        stream.rows.clear();
        stream.stats = QualitySums::default();
        Ok(())
    }

    /// Writes the footer, fsyncs, and renames the file to `final_path`. Every epoch must be
    /// complete. Returns the shard's manifest entry (with `file` set to the final file name) and
    /// the quality sums over all its chunks.
    pub fn finish(mut self, final_path: &Path) -> Result<(ShardEntry, QualitySums)> {
        if self.failed {
            return Err(StoreError::Invalid(format!(
                "cannot finish {}: an earlier write failed; resume the store to continue",
                self.path.display()
            )));
        }
        self.unstage()?;
        for (e, s) in self.streams.iter().enumerate() {
            if s.next != self.info.samples.end {
                return Err(StoreError::Invalid(format!(
                    "cannot finish {}: epoch {e} is missing samples {}..{}",
                    self.path.display(),
                    s.next,
                    self.info.samples.end
                )));
            }
        }
        let (footer, checksum) = encode_footer(&self.info, &self.index, self.offset);
        let p = self.path.clone();
        self.file.write_all(&footer).map_err(io(&p))?;
        self.file.sync_all().map_err(io(&p))?;
        fs::rename(&p, final_path).map_err(io(final_path))?;
        let bytes = self.offset + footer.len() as u64;
        let entry = shard_entry(final_path, &self.info, self.index.len(), bytes, checksum);
        Ok((entry, self.written))
    }
}

/// Memory the staged finish may use for the rows of the epochs it lays out at once.
pub const STAGED_FINISH_BYTES: u64 = 1 << 30;

/// What `rec` adds to the quality sums.
fn row_stats(rec: &Record, q: &RecordQuality, classes: usize) -> RowStats {
    // A store without soft labels (k 0) has no distribution to sum.
    let (mass, entropy) = if rec.label.k() == 0 {
        (0.0, 0.0)
    } else {
        rec.label.mass_and_entropy(classes)
    };
    let (kl1, kl4) = q.reconstruction_kl.unwrap_or((0.0, 0.0));
    QualitySums {
        records: 1.0,
        top_mass: mass,
        entropy,
        kl_records: f64::from(u8::from(q.reconstruction_kl.is_some())),
        kl_tau1: kl1,
        kl_tau4: kl4,
        labelled: f64::from(u8::from(q.teacher_correct.is_some())),
        correct: f64::from(u8::from(q.teacher_correct == Some(true))),
    }
}

/// Encodes `x` (projected through `basis` first, when there is one) into `row` and measures how
/// well the row reconstructs it, in `x`'s own dimensions. `scratch` holds the decoded values
/// (and coefficients), reused from call to call.
fn encode_feature(
    layout: &FeatureLayout,
    basis: Option<&Basis>,
    x: &[f32],
    row: &mut [u8],
    scratch: &mut Vec<f32>,
) -> std::result::Result<RowStats, formats::FormatError> {
    let Some(b) = basis else {
        layout.encode(x, row)?;
        scratch.resize(x.len(), 0.0);
        layout.decode_into(row, scratch)?;
        return Ok(formats::feature::reconstruction_sums(x, scratch));
    };
    if x.len() != b.dim as usize {
        return Err(formats::FormatError::invalid(
            "features.dim",
            format!(
                "a vector of {} values, the basis projects {}",
                x.len(),
                b.dim
            ),
        ));
    }
    let d = b.stored_dim();
    scratch.resize(d + x.len(), 0.0);
    let (y, r) = scratch.split_at_mut(d);
    b.project(x, y);
    layout.encode(y, row)?;
    layout.decode_into(row, y)?;
    b.reconstruct(y, r);
    Ok(formats::feature::reconstruction_sums(x, r))
}

/// The manifest entry of the finished shard at `path`.
fn shard_entry(
    path: &Path,
    info: &ShardInfo,
    chunks: usize,
    bytes: u64,
    index_xxh3: u64,
) -> ShardEntry {
    ShardEntry {
        file: file_name(path),
        samples: info.samples,
        records: u64::from(info.samples.len()) * u64::from(info.epochs),
        chunks: chunks as u32,
        bytes,
        checksum: crate::shard::checksum_text(index_xxh3),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes a store directory holding one shard: the whole dataset, or with `--shard I/N` a
/// contiguous part of it that `merge` later joins with the others. A store with features has,
/// beside the label shard, one feature file per head (FORMAT.md §6), written in step with it.
///
/// The writer holds the directory's [`WriterLock`] for its whole life, so a second writer (a
/// retried batch job whose predecessor still runs) is refused at once instead of racing it.
pub struct StoreWriter {
    dir: PathBuf,
    draft: Manifest,
    state: WriterState,
    _lock: WriterLock,
}

enum WriterState {
    /// Records still to come (some files may be complete already after a crash).
    Writing(Box<Files>),
    /// Resuming a store that is already finished, with the same settings: nothing to do.
    Complete(Box<Manifest>),
}

/// One file of the store being written: still open, or renamed into place before a crash.
enum FileState {
    Open(Box<ShardWriter>),
    Done(ShardEntry, QualitySums),
}

impl FileState {
    fn next_sample(&self, epoch: u32, end: u32) -> u32 {
        match self {
            FileState::Open(w) => w.next_sample(epoch),
            FileState::Done(..) => end,
        }
    }

    fn staged_groups(&self) -> Option<u64> {
        match self {
            FileState::Open(w) => w.staged_groups(),
            FileState::Done(..) => Some(u64::MAX),
        }
    }
}

/// The label shard and the feature files of one store, fed the same records in the same order.
/// After a crash they may have reached different points: each skips what it already holds.
struct Files {
    labels: FileState,
    features: Vec<FileState>,
    end: u32,
    /// The next group number (staged writing): the fewest any file has staged, plus those
    /// appended since.
    next_group: u64,
}

impl Files {
    fn next_sample(&self, epoch: u32) -> u32 {
        std::iter::once(&self.labels)
            .chain(&self.features)
            .map(|f| f.next_sample(epoch, self.end))
            .min()
            .unwrap_or(self.end)
    }

    fn staged_groups(&self) -> Option<u64> {
        std::iter::once(&self.labels)
            .chain(&self.features)
            .map(FileState::staged_groups)
            .min()
            .flatten()
    }
}

impl StoreWriter {
    /// Locks `dir` and opens it for writing the records `draft` describes (`draft.shards` and
    /// `draft.quality` are filled by [`StoreWriter::finish`]).
    pub fn open(dir: &Path, draft: Manifest, mode: OpenMode, level: i32) -> Result<Self> {
        Self::open_locked(WriterLock::acquire(dir)?, draft, mode, level)
    }

    /// [`StoreWriter::open`] with the lock taken earlier (a labelling run takes it before it
    /// loads its teachers, so that a second run fails at once).
    ///
    /// With [`OpenMode::Resume`] a store that is already finished is accepted when `draft`
    /// matches its manifest (teachers, dataset, recipe, seed, epochs, k, codec, samples,
    /// features, …): the writer then has nothing to do and `finish` returns the existing
    /// manifest, so a retried job whose predecessor finished succeeds. A different setting is
    /// an error naming the field.
    pub fn open_locked(
        lock: WriterLock,
        draft: Manifest,
        mode: OpenMode,
        level: i32,
    ) -> Result<Self> {
        Self::open_with_bases(lock, draft, mode, level, Vec::new())
    }

    /// [`StoreWriter::open_locked`] for a store whose feature heads name PCA bases
    /// (`features.heads[h].basis`): `bases[h]` is head `h`'s (its dimensions checked against
    /// the draft's), `None` for a head without one.
    pub fn open_with_bases(
        lock: WriterLock,
        mut draft: Manifest,
        mode: OpenMode,
        level: i32,
        bases: Vec<Option<Arc<Basis>>>,
    ) -> Result<Self> {
        let dir = lock.dir().to_path_buf();
        let dir = dir.as_path();
        clear_results(&mut draft);
        draft
            .check_fields()
            .map_err(format(dir.join(WRITING_FILE).display().to_string()))?;
        let layout = formats::RecordLayout::new(draft.classes, draft.k, draft.codec)
            .map_err(format("manifest draft"))?;
        let mut kinds = vec![RowFormat::Labels(layout)];
        let basis_of = |h: usize| bases.get(h).cloned().flatten();
        if let Some(f) = &draft.features {
            for (h, head) in f.heads.iter().enumerate() {
                let l = FeatureLayout::new(head.stored_dim, f.codec)
                    .map_err(format("manifest draft"))?;
                kinds.push(RowFormat::Features(l));
                check_basis(h, head, basis_of(h).as_deref())?;
            }
        }
        for k in &kinds {
            let row = k.row_bytes();
            if u64::from(draft.chunk_records) * row as u64 > u64::from(u32::MAX) {
                return Err(StoreError::Invalid(format!(
                    "chunk_records {} × {row}-byte rows exceeds the 4 GiB a chunk may hold",
                    draft.chunk_records
                )));
            }
        }
        let info = |rows| ShardInfo {
            version: draft.format_version,
            epochs: draft.epochs,
            samples: draft.samples,
            rows,
            chunk_records: draft.chunk_records,
        };
        let names: Vec<String> = (0..kinds.len())
            .map(|i| match i {
                0 => shard_file_name(draft.samples),
                h => feature_file_name(h - 1, draft.samples),
            })
            .collect();
        // Blocks over a permutation make records in block order: they are staged (staging.rs).
        let staged = draft
            .blocks
            .is_some_and(|b| b.order == formats::BlockOrder::Permuted);
        let state = dir.join(WRITING_FILE);
        let manifest = dir.join(MANIFEST_FILE);
        if mode == OpenMode::Overwrite {
            remove_store_files(dir)?;
        }
        let writer = |draft, state| StoreWriter {
            dir: dir.to_path_buf(),
            draft,
            state,
            _lock: lock,
        };
        if manifest.exists() {
            if mode != OpenMode::Resume {
                return Err(StoreError::Invalid(format!(
                    "{} already holds a finished label store: resume it (nothing to do if the \
                     settings match), choose another output, or overwrite it",
                    dir.display()
                )));
            }
            let text = fs::read_to_string(&manifest).map_err(io(&manifest))?;
            let old = Manifest::from_json(&text).map_err(format(manifest.display().to_string()))?;
            if let Some(diff) = draft_mismatch(&old, &draft) {
                return Err(StoreError::Invalid(format!(
                    "cannot resume {}: it is finished, and {diff}",
                    dir.display()
                )));
            }
            // Finished with the same settings: check that it still opens (footers against the
            // manifest), then report it as is.
            crate::reader::LabelStore::open(dir)?;
            draft = old.clone();
            return Ok(writer(draft, WriterState::Complete(Box::new(old))));
        }
        let unfinished = state.exists();
        if unfinished && mode == OpenMode::Create {
            return Err(StoreError::Invalid(format!(
                "{} holds an unfinished label store: resume it or overwrite it",
                dir.display()
            )));
        }
        if unfinished {
            let text = fs::read_to_string(&state).map_err(io(&state))?;
            let old: Manifest = serde_json::from_str(&text)
                .map_err(|e| corrupt(&state, format!("not a manifest draft: {e}")))?;
            if let Some(diff) = draft_mismatch(&old, &draft) {
                return Err(StoreError::Invalid(format!(
                    "cannot resume {}: {diff}",
                    dir.display()
                )));
            }
            draft.created = old.created;
        } else {
            write_atomic(&state, draft.to_json().as_bytes())?;
        }
        let mut files = Vec::with_capacity(kinds.len());
        for (kind, name) in kinds.iter().zip(&names) {
            let info = info(*kind);
            let final_path = dir.join(name);
            let partial = dir.join(format!("{name}.partial"));
            let staging = dir.join(format!("{name}.staging"));
            if unfinished && final_path.exists() && !partial.exists() {
                let (entry, sums) = finished_shard(&final_path, &info)?;
                files.push(FileState::Done(entry, sums));
                continue;
            }
            let mut shard = if unfinished && partial.exists() {
                ShardWriter::resume(&partial, info, level)?
            } else {
                ShardWriter::create(&partial, info, level)?
            };
            if let Some(b) = files.len().checked_sub(1).and_then(basis_of) {
                shard.set_basis(b);
            }
            if staged {
                if !unfinished {
                    // A log left by an earlier store in this directory must not be resumed.
                    remove_if_exists(&staging)?;
                }
                shard.stage(&staging, level)?;
            }
            files.push(FileState::Open(Box::new(shard)));
        }
        let mut files = files.into_iter();
        let mut f = Files {
            labels: files.next().expect("the label shard"),
            features: files.collect(),
            end: draft.samples.end,
            next_group: 0,
        };
        f.next_group = f.staged_groups().unwrap_or(0);
        Ok(writer(draft, WriterState::Writing(Box::new(f))))
    }

    /// The next sample index epoch `epoch` expects; a resumed run skips records below it.
    pub fn next_sample(&self, epoch: u32) -> u32 {
        match &self.state {
            WriterState::Writing(f) => f.next_sample(epoch),
            WriterState::Complete(_) => self.draft.samples.end,
        }
    }

    /// With staged writing (blocks over a permutation), the groups already staged: a resumed
    /// run continues with the next one.
    pub fn staged_groups(&self) -> Option<u64> {
        match &self.state {
            WriterState::Writing(f) => f.staged_groups(),
            WriterState::Complete(_) => None,
        }
    }

    /// Feature heads the store has (0 without features).
    pub fn feature_heads(&self) -> usize {
        self.draft.features.as_ref().map_or(0, |f| f.heads.len())
    }

    /// Stages one group of records; see [`ShardWriter::append_group`]. A store with features
    /// takes them through [`StoreWriter::append_group_with_features`].
    pub fn append_group(&mut self, records: &[(u32, u32, Record, RecordQuality)]) -> Result<()> {
        self.append_group_with_features(records, &[])
    }

    /// Stages one group of records and, for each feature head, the records' vectors in the same
    /// order (`features[h][i]` is head `h`'s vector of record `i`).
    pub fn append_group_with_features(
        &mut self,
        records: &[(u32, u32, Record, RecordQuality)],
        features: &[Vec<&[f32]>],
    ) -> Result<()> {
        let heads = self.feature_heads();
        let WriterState::Writing(files) = &mut self.state else {
            return Err(StoreError::Invalid(
                "records appended to a store whose shard is complete".into(),
            ));
        };
        check_heads(heads, features.len(), records.len(), features)?;
        if files.staged_groups() == Some(u64::MAX) {
            return Err(StoreError::Invalid(
                "records appended to a store whose shard is complete".into(),
            ));
        }
        // A file that staged this group before a crash skips it; one written in sample order
        // (no groups) refuses it.
        let group = files.next_group;
        let has = |w: &ShardWriter| w.staged_groups().is_some_and(|g| g > group);
        if let FileState::Open(w) = &mut files.labels
            && !has(w)
        {
            w.append_group(records)?;
        }
        for (h, f) in files.features.iter_mut().enumerate() {
            if let FileState::Open(w) = f
                && !has(w)
            {
                let v: Vec<(u32, u32, &[f32])> = records
                    .iter()
                    .zip(&features[h])
                    .map(|((e, s, _, _), x)| (*e, *s, *x))
                    .collect();
                w.append_feature_group(&v)?;
            }
        }
        files.next_group += 1;
        Ok(())
    }

    /// Whether the store was already finished when opened (a resume with nothing to do).
    pub fn already_complete(&self) -> bool {
        matches!(self.state, WriterState::Complete(_))
    }

    /// The manifest draft (with the original creation time when resuming; the whole manifest
    /// of a store that was already complete).
    pub fn draft(&self) -> &Manifest {
        &self.draft
    }

    /// Appends one record; see [`ShardWriter::append`]. A store with features takes them
    /// through [`StoreWriter::append_with_features`].
    pub fn append(
        &mut self,
        epoch: u32,
        sample: u32,
        rec: &Record,
        quality: &RecordQuality,
    ) -> Result<()> {
        self.append_with_features(epoch, sample, rec, quality, &[])
    }

    /// Appends one record and each feature head's vector of it (`features[h]`). A file that
    /// already holds the record (it got further than the others before a crash) skips it.
    pub fn append_with_features(
        &mut self,
        epoch: u32,
        sample: u32,
        rec: &Record,
        quality: &RecordQuality,
        features: &[&[f32]],
    ) -> Result<()> {
        let heads = self.feature_heads();
        let WriterState::Writing(files) = &mut self.state else {
            return Err(StoreError::Invalid(format!(
                "record (epoch {epoch}, sample {sample}) appended to a store whose shard is complete"
            )));
        };
        if features.len() != heads {
            return Err(StoreError::Invalid(format!(
                "record (epoch {epoch}, sample {sample}) comes with {} feature vectors, the \
                 store has {heads} feature heads",
                features.len()
            )));
        }
        // Only a file ahead of the slowest skips: a sample below every file's next is out of
        // order, which the slowest file's own check reports (as it reports an epoch beyond the
        // store's).
        let lowest = if epoch < self.draft.epochs {
            files.next_sample(epoch)
        } else {
            0
        };
        if lowest == files.end {
            return Err(StoreError::Invalid(format!(
                "record (epoch {epoch}, sample {sample}) appended to a store whose shard is complete"
            )));
        }
        let ahead = |w: &ShardWriter| {
            epoch < w.info().epochs && sample >= lowest && sample < w.next_sample(epoch)
        };
        if let FileState::Open(w) = &mut files.labels
            && !ahead(w)
        {
            w.append(epoch, sample, rec, quality)?;
        }
        for (f, x) in files.features.iter_mut().zip(features) {
            if let FileState::Open(w) = f
                && !ahead(w)
            {
                w.append_feature(epoch, sample, x)?;
            }
        }
        Ok(())
    }

    /// Finishes the shard (and feature files) and writes `manifest.json`. Returns the final
    /// manifest (a store that was already complete is returned untouched).
    pub fn finish(self) -> Result<Manifest> {
        let files = match self.state {
            WriterState::Writing(f) => f,
            WriterState::Complete(m) => return Ok(*m),
        };
        let Files {
            labels, features, ..
        } = *files;
        let finish = |f: FileState, name: String| -> Result<(ShardEntry, QualitySums)> {
            match f {
                FileState::Open(w) => w.finish(&self.dir.join(name)),
                FileState::Done(e, s) => Ok((e, s)),
            }
        };
        let mut m = self.draft;
        let mut done = Vec::with_capacity(features.len());
        for (h, f) in features.into_iter().enumerate() {
            done.push(finish(f, feature_file_name(h, m.samples))?);
        }
        let (entry, sums) = finish(labels, shard_file_name(m.samples))?;
        m.shards = vec![entry];
        m.quality = Quality::from_sums(&sums);
        if let Some(f) = &mut m.features {
            for (head, (entry, sums)) in f.heads.iter_mut().zip(done) {
                head.shards = vec![entry];
                head.quality = FeatureQuality::from_sums(&sums, head.dim);
            }
        }
        m.check().map_err(format("finished manifest"))?;
        write_atomic(&self.dir.join(MANIFEST_FILE), m.to_json().as_bytes())?;
        let state = self.dir.join(WRITING_FILE);
        fs::remove_file(&state).map_err(io(&state))?;
        let heads = m.features.as_ref().map_or(0, |f| f.heads.len());
        let names = std::iter::once(shard_file_name(m.samples))
            .chain((0..heads).map(|h| feature_file_name(h, m.samples)));
        for name in names {
            remove_if_exists(&self.dir.join(format!("{name}.staging")))?;
        }
        sync_dir(&self.dir)?;
        Ok(m)
    }
}

/// Checks that head `h` gets the basis its draft names (`None` for none), of its dimensions.
fn check_basis(h: usize, head: &formats::FeatureHead, basis: Option<&Basis>) -> Result<()> {
    match (&head.basis, basis) {
        (None, None) => Ok(()),
        (Some(_), Some(b)) if b.dim == head.dim && b.stored_dim() == head.stored_dim as usize => {
            Ok(())
        }
        (want, got) => Err(StoreError::Invalid(format!(
            "feature head {h}: the draft names {} and the writer was given {}",
            want.as_ref()
                .map_or("no basis".into(), |r| format!("basis {}", r.checksum)),
            got.map_or("none".into(), |b| format!(
                "a basis of {} of {} dimensions",
                b.stored_dim(),
                b.dim
            ))
        ))),
    }
}

/// Checks a group's feature vectors: one list per head, one vector per record.
fn check_heads(heads: usize, given: usize, records: usize, features: &[Vec<&[f32]>]) -> Result<()> {
    if given != heads {
        return Err(StoreError::Invalid(format!(
            "a group comes with vectors of {given} feature heads, the store has {heads}"
        )));
    }
    if let Some((h, v)) = features
        .iter()
        .enumerate()
        .find(|(_, v)| v.len() != records)
    {
        return Err(StoreError::Invalid(format!(
            "a group of {records} records comes with {} vectors of feature head {h}",
            v.len()
        )));
    }
    Ok(())
}

/// Empties what a writer fills in: the shard lists and the quality figures.
fn clear_results(m: &mut Manifest) {
    m.shards.clear();
    m.quality = Quality::default();
    if let Some(f) = &mut m.features {
        for h in &mut f.heads {
            h.shards.clear();
            h.quality = FeatureQuality::default();
        }
    }
}

/// Reads a complete shard left by a writer that died between renaming it and writing the
/// manifest, and checks it is the shard `info` describes.
fn finished_shard(path: &Path, info: &ShardInfo) -> Result<(ShardEntry, QualitySums)> {
    let shard = crate::reader::Shard::open_kind(path, info.rows.kind())?;
    if shard.footer.info != *info {
        return Err(corrupt(
            path,
            "shard does not match the store being resumed",
        ));
    }
    let entry = shard_entry(
        path,
        info,
        shard.footer.index.len(),
        shard.bytes.len() as u64,
        shard.footer.index_xxh3,
    );
    Ok((entry, shard.quality_sums()?))
}

/// Names the first manifest field in which a resumed run differs from the original.
fn draft_mismatch(old: &Manifest, new: &Manifest) -> Option<String> {
    if let Some(d) = old.dataset.mismatch(&new.dataset) {
        return Some(d);
    }
    let (mut old, mut new) = (old.clone(), new.clone());
    clear_results(&mut old);
    clear_results(&mut new);
    let a = serde_json::to_value(&old).ok()?;
    let b = serde_json::to_value(&new).ok()?;
    let (a, b) = (a.as_object()?, b.as_object()?);
    // Both ways: a field only one side has (e.g. `blocks`) is a difference too.
    for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        if matches!(key.as_str(), "created" | "creator" | "shards" | "quality") {
            continue;
        }
        let (va, vb) = (a.get(key), b.get(key));
        if va != vb {
            let show = |v: Option<&serde_json::Value>| {
                v.map(|v| v.to_string()).unwrap_or_else(|| "nothing".into())
            };
            return Some(format!(
                "{key} differs: the store being resumed has {}, this run has {}",
                show(va),
                show(vb)
            ));
        }
    }
    None
}

/// Removes the files a store writer creates (and nothing else) from `dir`.
pub fn remove_store_files(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == MANIFEST_FILE
            || name == WRITING_FILE
            || name == format!("{MANIFEST_FILE}.tmp")
            || name == format!("{WRITING_FILE}.tmp")
            || (name.starts_with("shard-")
                && (name.ends_with(".dls")
                    || name.ends_with(".dls.partial")
                    || name.ends_with(".dls.staging")))
            || (name.starts_with("features-")
                && (name.ends_with(".dlf")
                    || name.ends_with(".dlf.partial")
                    || name.ends_with(".dlf.staging")));
        if ours {
            fs::remove_file(entry.path()).map_err(io(entry.path()))?;
        }
    }
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through `path.tmp`, fsync and rename, then fsyncs the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, |p| File::create(p))
}

/// [`write_atomic`] with the temporary file opened by `create` (tests pass one that fails as a
/// full disk does). On any failure the temporary file is removed and `path` is untouched.
pub fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    create: impl Fn(&Path) -> std::io::Result<File>,
) -> Result<()> {
    let tmp = path.with_extension(match path.extension() {
        Some(e) => format!("{}.tmp", e.to_string_lossy()),
        None => "tmp".into(),
    });
    let written = create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}
