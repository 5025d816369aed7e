//! The staging log of a store labelled block by block over a permutation of its samples.
//!
//! Such a run makes records in block order, not sample order, while a shard's chunks hold
//! consecutive samples; a chunk would only fill near the end of the run. So the writer appends
//! each finished block to `shard-S-E.dls.staging` as one checksummed, zstd-compressed group of
//! records (with what each adds to the quality sums), and `finish` lays the groups out as the
//! usual sample-ordered chunks. Killed at any moment, a run resumes after its last complete group
//! and, since the chunks come from the same records in the same order, writes the same bytes.
//! The log is private to the writer: no reader opens it, and it is removed once the manifest is
//! written (FORMAT.md §1.3).
//!
//! Layout, little-endian: a 40-byte header (`DLSSTAGE`, version u32, row bytes u32, epochs u32,
//! sample start u32, end u32, row kind u8 (0 labels, 1 features), 3 zero bytes, xxh3 of the first 32 bytes), then groups: a 40-byte
//! group header (`GRUP`, count u32, group u64, raw_len u32, payload_len u32, payload xxh3 u64,
//! xxh3 of the first 32 bytes) and a zstd frame of `count` records of [`STAGED_EXTRA`] + row
//! bytes each: epoch u32, sample u32, flags u8 (1: reconstruction KL measured, 2: ground truth
//! known, 4: teacher right), top-k mass f64, entropy f64, KL at τ = 1 f64, KL at τ = 4 f64, row;
//! for feature rows flags 0 and cosine, `‖x − r‖²`, `‖x‖²`, 0.

use crate::error::{Result, StoreError, corrupt, io};
use crate::shard::{RowFormat, ShardInfo};
use formats::QualitySums;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 8] = b"DLSSTAGE";
const GROUP_MAGIC: &[u8; 4] = b"GRUP";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 40;
const GROUP_HEADER_BYTES: usize = 40;
/// Bytes a staged record carries besides its row.
pub const STAGED_EXTRA: usize = 41;

/// What one record adds to its chunk's quality sums, computed when it is appended. Staged as
/// flags and four f64 (the file header's row kind says how): for a label row top-k mass,
/// entropy and the two KLs, for a feature row the cosine, `‖x − r‖²` and `‖x‖²`.
pub type RowStats = QualitySums;

/// The flags byte and four f64 a staged record carries for `s`.
fn pack(rows: &RowFormat, s: &RowStats) -> (u8, [f64; 4]) {
    match rows {
        RowFormat::Labels(_) => {
            let flags = u8::from(s.kl_records > 0.0)
                | (u8::from(s.labelled > 0.0) << 1)
                | (u8::from(s.correct > 0.0) << 2);
            (flags, [s.top_mass, s.entropy, s.kl_tau1, s.kl_tau4])
        }
        RowFormat::Features(_) => {
            let a = s.to_array();
            (0, [a[1], a[2], a[3], 0.0])
        }
    }
}

/// Inverse of [`pack`].
fn unpack(rows: &RowFormat, flags: u8, v: [f64; 4]) -> RowStats {
    match rows {
        RowFormat::Labels(_) => {
            let kl = flags & 1 != 0;
            QualitySums {
                records: 1.0,
                top_mass: v[0],
                entropy: v[1],
                kl_records: f64::from(u8::from(kl)),
                kl_tau1: if kl { v[2] } else { 0.0 },
                kl_tau4: if kl { v[3] } else { 0.0 },
                labelled: f64::from(flags >> 1 & 1),
                correct: f64::from(flags >> 2 & 1),
            }
        }
        RowFormat::Features(_) => formats::feature::feature_sums(v[0], v[1], v[2]),
    }
}

/// One staged record: its key, its encoded row and its statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct StagedRow {
    pub epoch: u32,
    pub sample: u32,
    pub stats: RowStats,
    pub row: Vec<u8>,
}

/// The append end of a staging log.
pub struct StagingLog {
    path: PathBuf,
    file: File,
    rows: RowFormat,
    row_bytes: usize,
    groups: u64,
    records: u64,
    compressor: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
}

fn header(info: &ShardInfo, row_bytes: usize) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(row_bytes as u32).to_le_bytes());
    h[16..20].copy_from_slice(&info.epochs.to_le_bytes());
    h[20..24].copy_from_slice(&info.samples.start.to_le_bytes());
    h[24..28].copy_from_slice(&info.samples.end.to_le_bytes());
    // The row kind (0 for label rows, as logs written before feature rows have).
    h[28] = u8::from(matches!(info.rows, RowFormat::Features(_)));
    let sum = xxh3_64(&h[..32]);
    h[32..40].copy_from_slice(&sum.to_le_bytes());
    h
}

struct GroupHeader {
    count: u32,
    group: u64,
    raw_len: u32,
    payload_len: u32,
    payload_xxh3: u64,
}

impl GroupHeader {
    fn encode(&self) -> [u8; GROUP_HEADER_BYTES] {
        let mut h = [0u8; GROUP_HEADER_BYTES];
        h[0..4].copy_from_slice(GROUP_MAGIC);
        h[4..8].copy_from_slice(&self.count.to_le_bytes());
        h[8..16].copy_from_slice(&self.group.to_le_bytes());
        h[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        h[20..24].copy_from_slice(&self.payload_len.to_le_bytes());
        h[24..32].copy_from_slice(&self.payload_xxh3.to_le_bytes());
        let sum = xxh3_64(&h[..32]);
        h[32..40].copy_from_slice(&sum.to_le_bytes());
        h
    }

    fn decode(h: &[u8; GROUP_HEADER_BYTES]) -> Option<Self> {
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        if &h[0..4] != GROUP_MAGIC || u64_at(32) != xxh3_64(&h[..32]) {
            return None;
        }
        Some(GroupHeader {
            count: u32_at(4),
            group: u64_at(8),
            raw_len: u32_at(16),
            payload_len: u32_at(20),
            payload_xxh3: u64_at(24),
        })
    }
}

impl StagingLog {
    /// Opens the log at `path` for a shard `info` with rows of `row_bytes`: a new one, or an
    /// existing one kept up to its last complete group (anything after it, a group being written
    /// when the process died, is cut off).
    pub fn open(path: &Path, info: &ShardInfo, level: i32) -> Result<Self> {
        let row_bytes = info.rows.row_bytes();
        let want = header(info, row_bytes);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        let mut log = StagingLog {
            path: path.to_path_buf(),
            file,
            rows: info.rows,
            row_bytes,
            groups: 0,
            records: 0,
            compressor: zstd::bulk::Compressor::new(level).map_err(io(path))?,
            raw: Vec::new(),
        };
        if len < HEADER_BYTES as u64 {
            log.file.set_len(0).map_err(io(path))?;
            log.file.write_all(&want).map_err(io(path))?;
            return Ok(log);
        }
        let mut have = [0u8; HEADER_BYTES];
        log.file.read_exact(&mut have).map_err(io(path))?;
        if have != want {
            return Err(corrupt(
                path,
                "staging log header does not match the store being resumed (another shard, \
                 epoch count or record size)",
            ));
        }
        let mut end = HEADER_BYTES as u64;
        for g in log.groups_from_start()? {
            match g {
                Ok((group, rows, next)) if group == log.groups => {
                    log.groups += 1;
                    log.records += rows.len() as u64;
                    end = next;
                }
                _ => break,
            }
        }
        if end < len {
            tracing::info!(
                path = %path.display(),
                kept = end,
                dropped = len - end,
                "resume: cut an incomplete group off the staging log"
            );
        }
        log.file.set_len(end).map_err(io(path))?;
        log.file.seek(SeekFrom::Start(end)).map_err(io(path))?;
        Ok(log)
    }

    /// Complete groups in the log.
    pub fn groups(&self) -> u64 {
        self.groups
    }

    /// Records in the log.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends group number [`Self::groups`] holding `rows`.
    pub fn append(&mut self, rows: &[StagedRow]) -> Result<()> {
        let rec = STAGED_EXTRA + self.row_bytes;
        self.raw.clear();
        self.raw.reserve(rows.len() * rec);
        for r in rows {
            if r.row.len() != self.row_bytes {
                return Err(StoreError::Invalid(format!(
                    "staged record (epoch {}, sample {}) has {} bytes, rows have {}",
                    r.epoch,
                    r.sample,
                    r.row.len(),
                    self.row_bytes
                )));
            }
            let (flags, values) = pack(&self.rows, &r.stats);
            self.raw.extend_from_slice(&r.epoch.to_le_bytes());
            self.raw.extend_from_slice(&r.sample.to_le_bytes());
            self.raw.push(flags);
            for v in values {
                self.raw.extend_from_slice(&v.to_le_bytes());
            }
            self.raw.extend_from_slice(&r.row);
        }
        let raw_len = u32::try_from(self.raw.len()).map_err(|_| {
            StoreError::Invalid(format!(
                "a staged group of {} records exceeds 4 GiB",
                rows.len()
            ))
        })?;
        let payload = self
            .compressor
            .compress(&self.raw)
            .map_err(io(&self.path))?;
        let h = GroupHeader {
            count: rows.len() as u32,
            group: self.groups,
            raw_len,
            payload_len: payload.len() as u32,
            payload_xxh3: xxh3_64(&payload),
        };
        let path = &self.path;
        self.file.write_all(&h.encode()).map_err(io(path))?;
        self.file.write_all(&payload).map_err(io(path))?;
        self.groups += 1;
        self.records += rows.len() as u64;
        Ok(())
    }

    /// Reads the log's complete groups from the start, each as (group number, rows, offset after
    /// it); stops at the first incomplete or damaged group (reported as an error item).
    pub fn groups_from_start(&self) -> Result<GroupIter> {
        let mut f = self.file.try_clone().map_err(io(&self.path))?;
        f.seek(SeekFrom::Start(HEADER_BYTES as u64))
            .map_err(io(&self.path))?;
        Ok(GroupIter {
            path: self.path.clone(),
            reader: BufReader::with_capacity(1 << 20, f),
            at: HEADER_BYTES as u64,
            rows: self.rows,
            row_bytes: self.row_bytes,
            payload: Vec::new(),
            done: false,
        })
    }
}

/// The groups of a staging log, in file order.
pub struct GroupIter {
    path: PathBuf,
    reader: BufReader<File>,
    at: u64,
    rows: RowFormat,
    row_bytes: usize,
    payload: Vec<u8>,
    done: bool,
}

impl Iterator for GroupIter {
    type Item = Result<(u64, Vec<StagedRow>, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut h = [0u8; GROUP_HEADER_BYTES];
        match self.reader.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                self.done = true;
                return None;
            }
            Err(e) => {
                self.done = true;
                return Some(Err(io(&self.path)(e)));
            }
        }
        let at = self.at;
        let bad = |what: &str| {
            Some(Err(corrupt(
                &self.path,
                format!("group at byte {at}: {what}"),
            )))
        };
        let rec = STAGED_EXTRA + self.row_bytes;
        let Some(g) = GroupHeader::decode(&h) else {
            self.done = true;
            return bad("header damaged or incomplete");
        };
        if g.raw_len as usize != g.count as usize * rec {
            self.done = true;
            return bad("record count and size disagree");
        }
        self.payload.resize(g.payload_len as usize, 0);
        if self.reader.read_exact(&mut self.payload).is_err()
            || xxh3_64(&self.payload) != g.payload_xxh3
        {
            self.done = true;
            return bad("payload incomplete or damaged");
        }
        let raw = match zstd::bulk::decompress(&self.payload, g.raw_len as usize) {
            Ok(r) if r.len() == g.raw_len as usize => r,
            _ => {
                self.done = true;
                return bad("payload does not decompress to its records");
            }
        };
        let f64_at = |b: &[u8], i: usize| f64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        let rows = raw
            .chunks_exact(rec)
            .map(|b| {
                let flags = b[8];
                StagedRow {
                    epoch: u32_at(b, 0),
                    sample: u32_at(b, 4),
                    stats: unpack(
                        &self.rows,
                        flags,
                        [f64_at(b, 9), f64_at(b, 17), f64_at(b, 25), f64_at(b, 33)],
                    ),
                    row: b[STAGED_EXTRA..].to_vec(),
                }
            })
            .collect();
        self.at += (GROUP_HEADER_BYTES + g.payload_len as usize) as u64;
        Some(Ok((g.group, rows, self.at)))
    }
}
