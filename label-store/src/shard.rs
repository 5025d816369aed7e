//! The shard file: byte layout, and parsing of its header, chunk headers and footer.
//!
//! Everything here works on byte slices so that the same code serves mmap, owned buffers and
//! fuzzing. FORMAT.md is the normative description; the constants below are its numbers.
//!
//! ```text
//! file   = header(16) chunk* index footer(80)
//! header = "DSTLSHRD" version:u32 reserved:u32
//! chunk  = chunk_header(112) zstd_frame(payload_len)
//! index  = entry(40) × chunk_count, in file order
//! ```

use crate::error::{Result, corrupt};
use formats::{FeatureCodec, FeatureLayout, QualitySums, RecordLayout, SampleRange, ValueCodec};
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

pub const FILE_MAGIC: &[u8; 8] = b"DSTLSHRD";
/// Header magic of a feature file (FORMAT.md §6): the label shard's container, other rows.
pub const FEATURE_MAGIC: &[u8; 8] = b"DSTLFEAT";
pub const FOOTER_MAGIC: &[u8; 8] = b"DSTLEND\0";
pub const CHUNK_MAGIC: &[u8; 4] = b"DLCK";
pub const FILE_HEADER_BYTES: usize = 16;
pub const CHUNK_HEADER_BYTES: usize = 112;
pub const INDEX_ENTRY_BYTES: usize = 40;
pub const FOOTER_BYTES: usize = 80;
/// The most bytes a valid zstd frame can decode to per byte of frame: a block decodes to at
/// most 128 KiB and takes at least 4 bytes (an RLE block: 3-byte header, 1 byte), so 32,768.
/// A chunk whose index claims more raw bytes than its payload can hold is refused before
/// anything is allocated for it: an untrusted shard's claims stay bounded by its real size.
pub const MAX_ZSTD_RATIO: u64 = 128 * 1024 / 4;
/// The newest shard format version this crate reads. A shard carries its store's version (the
/// manifest's `format_version`, [`ShardInfo::version`]), so a store of labelled data written at
/// version 3 stays readable by version 3 readers.
pub const SHARD_VERSION: u32 = formats::FORMAT_VERSION;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// How a shard's index checksum is written in manifests: `xxh3:` and 16 hex digits.
pub fn checksum_text(index_xxh3: u64) -> String {
    format!("xxh3:{index_xxh3:016x}")
}

/// The 16-byte file header of a shard of format `version` holding `rows`.
pub fn file_header(version: u32, kind: RowKind) -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0u8; FILE_HEADER_BYTES];
    h[..8].copy_from_slice(kind.magic());
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h
}

/// Checks the file header of `bytes`, a file of `kind`.
pub fn check_file_header(file: &Path, bytes: &[u8], kind: RowKind) -> Result<()> {
    if bytes.len() < FILE_HEADER_BYTES {
        return Err(corrupt(
            file,
            format!(
                "file is {} bytes, smaller than its {FILE_HEADER_BYTES}-byte header",
                bytes.len()
            ),
        ));
    }
    if &bytes[..8] != kind.magic() {
        let what = match (&bytes[..8], kind) {
            (m, RowKind::Labels) if m == FEATURE_MAGIC => {
                "a feature file where a label shard belongs"
            }
            (m, RowKind::Features) if m == FILE_MAGIC => {
                "a label shard where a feature file belongs"
            }
            (_, RowKind::Labels) => "not a distill shard file",
            (_, RowKind::Features) => "not a distill feature file",
        };
        return Err(corrupt(file, format!("wrong magic: {what}")));
    }
    check_version(file, u32_at(bytes, 8))?;
    if u32_at(bytes, 12) != 0 {
        return Err(corrupt(file, "file header: reserved bytes are not zero"));
    }
    Ok(())
}

fn check_version(file: &Path, v: u32) -> Result<()> {
    if v > SHARD_VERSION {
        return Err(corrupt(
            file,
            format!(
                "shard format version {v} is newer than this reader's {SHARD_VERSION}: upgrade distill"
            ),
        ));
    }
    if v == 0 {
        return Err(corrupt(file, "shard format version 0 is not valid"));
    }
    Ok(())
}

/// The fixed part before each chunk's compressed payload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkHeader {
    pub epoch: u32,
    pub first: u32,
    pub count: u32,
    /// Uncompressed payload bytes (`count × row_bytes`).
    pub raw_len: u32,
    pub payload_len: u32,
    pub payload_xxh3: u64,
    pub stats: QualitySums,
}

impl ChunkHeader {
    /// Encodes the header with its own checksum.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_BYTES] {
        let mut h = [0u8; CHUNK_HEADER_BYTES];
        h[..4].copy_from_slice(CHUNK_MAGIC);
        h[4..8].copy_from_slice(&self.epoch.to_le_bytes());
        h[8..12].copy_from_slice(&self.first.to_le_bytes());
        h[12..16].copy_from_slice(&self.count.to_le_bytes());
        h[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        h[20..24].copy_from_slice(&self.payload_len.to_le_bytes());
        h[24..32].copy_from_slice(&self.payload_xxh3.to_le_bytes());
        for (i, v) in self.stats.to_array().iter().enumerate() {
            h[32 + 8 * i..40 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        let sum = xxh3_64(&h[..104]);
        h[104..112].copy_from_slice(&sum.to_le_bytes());
        h
    }

    /// Decodes and checks a chunk header; `Err` holds the reason without a file name.
    pub fn decode(b: &[u8]) -> std::result::Result<Self, String> {
        if b.len() < CHUNK_HEADER_BYTES {
            return Err(format!(
                "chunk header truncated ({} of {CHUNK_HEADER_BYTES} bytes)",
                b.len()
            ));
        }
        if &b[..4] != CHUNK_MAGIC {
            return Err("chunk header has the wrong magic".into());
        }
        if u64_at(b, 104) != xxh3_64(&b[..104]) {
            return Err("chunk header checksum mismatch".into());
        }
        let mut stats = [0f64; QualitySums::SLOTS];
        for (i, s) in stats.iter_mut().enumerate() {
            *s = f64::from_le_bytes(b[32 + 8 * i..40 + 8 * i].try_into().expect("8 bytes"));
        }
        Ok(ChunkHeader {
            epoch: u32_at(b, 4),
            first: u32_at(b, 8),
            count: u32_at(b, 12),
            raw_len: u32_at(b, 16),
            payload_len: u32_at(b, 20),
            payload_xxh3: u64_at(b, 24),
            stats: QualitySums::from_array(stats),
        })
    }
}

/// One entry of the footer's chunk index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub epoch: u32,
    pub first: u32,
    pub count: u32,
    pub raw_len: u32,
    /// Offset of the chunk header in the file.
    pub offset: u64,
    pub payload_len: u32,
    pub payload_xxh3: u64,
}

impl IndexEntry {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.payload_len.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.payload_xxh3.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        IndexEntry {
            epoch: u32_at(b, 0),
            first: u32_at(b, 4),
            count: u32_at(b, 8),
            raw_len: u32_at(b, 12),
            offset: u64_at(b, 16),
            payload_len: u32_at(b, 24),
            payload_xxh3: u64_at(b, 32),
        }
    }

    /// Samples the chunk holds.
    pub fn samples(&self) -> SampleRange {
        SampleRange {
            start: self.first,
            end: self.first.saturating_add(self.count),
        }
    }

    /// Whether a chunk header agrees with this entry.
    pub fn matches(&self, h: &ChunkHeader) -> bool {
        h.epoch == self.epoch
            && h.first == self.first
            && h.count == self.count
            && h.raw_len == self.raw_len
            && h.payload_len == self.payload_len
            && h.payload_xxh3 == self.payload_xxh3
    }
}

/// Which kind of file: a label shard (`.dls`) or a feature file (`.dlf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    Labels,
    Features,
}

impl RowKind {
    /// The file header magic of this kind.
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            RowKind::Labels => FILE_MAGIC,
            RowKind::Features => FEATURE_MAGIC,
        }
    }
}

/// What a file's rows hold: label records (a `.dls` shard) or feature vectors (a `.dlf` file).
/// Both kinds share the container (chunks, index, footer); the footer's classes, k and codec
/// fields hold a feature file's stored dimensions, 0 and its feature codec id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFormat {
    Labels(RecordLayout),
    Features(FeatureLayout),
}

impl RowFormat {
    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        match self {
            RowFormat::Labels(l) => l.row_bytes(),
            RowFormat::Features(f) => f.row_bytes(),
        }
    }

    /// Which kind of file holds these rows.
    pub fn kind(&self) -> RowKind {
        match self {
            RowFormat::Labels(_) => RowKind::Labels,
            RowFormat::Features(_) => RowKind::Features,
        }
    }

    /// The footer's (classes, k, codec id).
    fn footer_fields(&self) -> (u32, u32, u8) {
        match self {
            RowFormat::Labels(l) => (l.classes, l.k, l.codec.id()),
            RowFormat::Features(f) => (f.dim, 0, f.codec.id()),
        }
    }

    /// The rows the footer's (classes, k, codec id) describe, of the kind `kind` has.
    fn from_footer(
        kind: RowKind,
        classes: u32,
        k: u32,
        codec: u8,
    ) -> std::result::Result<Self, String> {
        match kind {
            RowKind::Labels => {
                let codec = ValueCodec::from_id(codec).map_err(|e| e.to_string())?;
                RecordLayout::new(classes, k, codec)
                    .map(RowFormat::Labels)
                    .map_err(|e| e.to_string())
            }
            RowKind::Features => {
                let codec = FeatureCodec::from_id(codec).map_err(|e| e.to_string())?;
                if k != 0 {
                    return Err(format!("k is {k} in a feature file (always 0)"));
                }
                FeatureLayout::new(classes, codec)
                    .map(RowFormat::Features)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// The label layout (`None` for a feature file).
    pub fn labels(&self) -> Option<RecordLayout> {
        match self {
            RowFormat::Labels(l) => Some(*l),
            RowFormat::Features(_) => None,
        }
    }

    /// The feature layout (`None` for a label shard).
    pub fn features(&self) -> Option<FeatureLayout> {
        match self {
            RowFormat::Features(f) => Some(*f),
            RowFormat::Labels(_) => None,
        }
    }
}

/// What the footer says about its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The store's format version (the manifest's), in the header and the footer.
    pub version: u32,
    pub epochs: u32,
    pub samples: SampleRange,
    pub rows: RowFormat,
    pub chunk_records: u32,
}

impl ShardInfo {
    /// Number of chunks each epoch stream has.
    pub fn chunks_per_epoch(&self) -> u32 {
        self.samples.len().div_ceil(self.chunk_records)
    }

    /// Samples of chunk `j` of an epoch stream: chunks are cut every `chunk_records` samples
    /// from the shard's first sample, so their boundaries never depend on timing.
    pub fn chunk_samples(&self, j: u32) -> SampleRange {
        // Saturating: a crafted footer must give a wrong range (then rejected), not an overflow.
        let start = self
            .samples
            .start
            .saturating_add(j.saturating_mul(self.chunk_records));
        SampleRange {
            start,
            end: start
                .saturating_add(self.chunk_records)
                .min(self.samples.end),
        }
    }
}

/// A parsed and checked footer.
#[derive(Clone, Debug, PartialEq)]
pub struct Footer {
    pub info: ShardInfo,
    pub index: Vec<IndexEntry>,
    /// Checksum of the index bytes: the shard's checksum in the manifest.
    pub index_xxh3: u64,
    /// `by_epoch[e][j]` is the index position of chunk `j` of epoch `e`.
    pub by_epoch: Vec<Vec<u32>>,
}

/// Encodes the index and footer that end a shard whose chunks end at `index_offset`.
pub fn encode_footer(info: &ShardInfo, index: &[IndexEntry], index_offset: u64) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(index.len() * INDEX_ENTRY_BYTES + FOOTER_BYTES);
    for e in index {
        e.encode(&mut out);
    }
    let index_xxh3 = xxh3_64(&out);
    let mut f = [0u8; FOOTER_BYTES];
    f[0..8].copy_from_slice(&index_offset.to_le_bytes());
    f[8..12].copy_from_slice(&(index.len() as u32).to_le_bytes());
    f[12..16].copy_from_slice(&info.epochs.to_le_bytes());
    f[16..20].copy_from_slice(&info.samples.start.to_le_bytes());
    f[20..24].copy_from_slice(&info.samples.end.to_le_bytes());
    let (classes, k, codec) = info.rows.footer_fields();
    f[24..28].copy_from_slice(&classes.to_le_bytes());
    f[28..32].copy_from_slice(&k.to_le_bytes());
    f[32..36].copy_from_slice(&info.chunk_records.to_le_bytes());
    f[36..40].copy_from_slice(&(info.rows.row_bytes() as u32).to_le_bytes());
    f[40] = codec;
    f[48..56].copy_from_slice(&index_xxh3.to_le_bytes());
    f[56..60].copy_from_slice(&info.version.to_le_bytes());
    f[64..72].copy_from_slice(FOOTER_MAGIC);
    let sum = xxh3_64(&f[..72]);
    f[72..80].copy_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&f);
    (out, index_xxh3)
}

/// Parses and checks the footer and index of a whole shard file.
///
/// Checks, in order: size, magic, version, footer checksum, field sanity, index placement and
/// checksum, and that every epoch stream's chunks tile the shard's samples at the fixed chunk
/// boundaries. It does not read chunk payloads (see `verify`).
pub fn parse_footer(file: &Path, bytes: &[u8]) -> Result<Footer> {
    parse_footer_of(file, bytes, RowKind::Labels)
}

/// [`parse_footer`] for a file of `kind` (a label shard or a feature file).
pub fn parse_footer_of(file: &Path, bytes: &[u8], kind: RowKind) -> Result<Footer> {
    let len = bytes.len();
    if len < FILE_HEADER_BYTES + FOOTER_BYTES {
        return Err(corrupt(
            file,
            format!(
                "file is {len} bytes, smaller than its header and footer ({} bytes): truncated or unfinished",
                FILE_HEADER_BYTES + FOOTER_BYTES
            ),
        ));
    }
    check_file_header(file, bytes, kind)?;
    let f = &bytes[len - FOOTER_BYTES..];
    if &f[64..72] != FOOTER_MAGIC {
        return Err(corrupt(
            file,
            "no footer magic at the end: the shard is truncated or its writer did not finish",
        ));
    }
    check_version(file, u32_at(f, 56))?;
    if u64_at(f, 72) != xxh3_64(&f[..72]) {
        return Err(corrupt(file, "footer checksum mismatch"));
    }
    let bad = |what: String| corrupt(file, format!("footer: {what}"));
    let rows = RowFormat::from_footer(kind, u32_at(f, 24), u32_at(f, 28), f[40]).map_err(bad)?;
    let info = ShardInfo {
        version: u32_at(f, 56),
        epochs: u32_at(f, 12),
        samples: SampleRange {
            start: u32_at(f, 16),
            end: u32_at(f, 20),
        },
        rows,
        chunk_records: u32_at(f, 32),
    };
    if u32_at(f, 36) as usize != rows.row_bytes() {
        let what = match rows {
            RowFormat::Labels(l) => format!("k = {} with {} classes", l.k, l.classes),
            RowFormat::Features(fl) => {
                format!("{} dimensions in {}", fl.dim, fl.codec.name())
            }
        };
        return Err(bad(format!(
            "row size {} does not match {what} ({} bytes)",
            u32_at(f, 36),
            rows.row_bytes()
        )));
    }
    if info.epochs == 0 || info.samples.is_empty() || info.chunk_records == 0 {
        return Err(bad(format!(
            "epochs {}, samples {}, chunk_records {} describe no records",
            info.epochs, info.samples, info.chunk_records
        )));
    }
    let count = u32_at(f, 8) as usize;
    let index_offset = u64_at(f, 0);
    let index_end = (len - FOOTER_BYTES) as u64;
    let expected = u64::from(info.epochs) * u64::from(info.chunks_per_epoch());
    if count as u64 != expected
        || index_offset < FILE_HEADER_BYTES as u64
        || index_end.checked_sub(index_offset) != Some((count * INDEX_ENTRY_BYTES) as u64)
    {
        return Err(bad(format!(
            "index of {count} chunks at offset {index_offset} does not fit a {len}-byte file holding {expected} chunks"
        )));
    }
    let index_bytes = &bytes[index_offset as usize..index_end as usize];
    let index_xxh3 = u64_at(f, 48);
    if xxh3_64(index_bytes) != index_xxh3 {
        return Err(bad("chunk index checksum mismatch".into()));
    }
    let mut by_epoch = vec![vec![u32::MAX; info.chunks_per_epoch() as usize]; info.epochs as usize];
    let mut index = Vec::with_capacity(count);
    let mut end_of_prev = FILE_HEADER_BYTES as u64;
    for (i, raw) in index_bytes.chunks_exact(INDEX_ENTRY_BYTES).enumerate() {
        let e = IndexEntry::decode(raw);
        let where_ = format!("chunk {i} (epoch {}, samples {})", e.epoch, e.samples());
        if e.epoch >= info.epochs {
            return Err(bad(format!(
                "{where_}: epoch beyond the shard's {}",
                info.epochs
            )));
        }
        let j = e.first.wrapping_sub(info.samples.start) / info.chunk_records;
        if e.first < info.samples.start
            || j >= info.chunks_per_epoch()
            || info.chunk_samples(j) != e.samples()
        {
            return Err(bad(format!("{where_}: not a chunk boundary of this shard")));
        }
        let slot = &mut by_epoch[e.epoch as usize][j as usize];
        if *slot != u32::MAX {
            return Err(bad(format!("{where_}: appears twice")));
        }
        *slot = i as u32;
        if e.raw_len as usize != e.count as usize * rows.row_bytes() {
            return Err(bad(format!(
                "{where_}: raw length {} is not count × row size",
                e.raw_len
            )));
        }
        if u64::from(e.raw_len) > MAX_ZSTD_RATIO * u64::from(e.payload_len) {
            return Err(bad(format!(
                "{where_}: raw length {} cannot come from a {}-byte zstd payload",
                e.raw_len, e.payload_len
            )));
        }
        let end = e
            .offset
            .saturating_add(CHUNK_HEADER_BYTES as u64 + u64::from(e.payload_len));
        if e.offset != end_of_prev || end > index_offset {
            return Err(bad(format!(
                "{where_}: offset {} is not where the previous chunk ends ({end_of_prev})",
                e.offset
            )));
        }
        end_of_prev = end;
        index.push(e);
    }
    if end_of_prev != index_offset {
        return Err(bad(format!(
            "chunks end at {end_of_prev}, the index starts at {index_offset}"
        )));
    }
    Ok(Footer {
        info,
        index,
        index_xxh3,
        by_epoch,
    })
}

/// Rows per block of the cache-blocked transposes: a block of rows (64 × row bytes) stays in L1
/// while each column receives 64 contiguous bytes.
const TRANSPOSE_BLOCK: usize = 64;

/// Transposes `n` rows of `r` bytes into `r` byte columns of `n` (the payload before zstd).
/// Bytes at the same offset of every record sit together, which is what lets zstd's entropy
/// coder see that, say, the high byte of a class index takes only four values.
pub fn rows_to_columns(rows: &[u8], r: usize, out: &mut Vec<u8>) {
    let n = rows.len() / r;
    out.clear();
    out.resize(n * r, 0);
    for i0 in (0..n).step_by(TRANSPOSE_BLOCK) {
        let block = &rows[i0 * r..(i0 + TRANSPOSE_BLOCK).min(n) * r];
        for (j, col) in out.chunks_exact_mut(n).enumerate() {
            for (dst, row) in col[i0..].iter_mut().zip(block.chunks_exact(r)) {
                *dst = row[j];
            }
        }
    }
}

/// Inverse of [`rows_to_columns`], writing into `rows` (exactly as long as `cols`).
pub fn columns_to_rows(cols: &[u8], r: usize, rows: &mut [u8]) {
    let n = cols.len() / r;
    if n == 0 {
        return;
    }
    for i0 in (0..n).step_by(TRANSPOSE_BLOCK) {
        let i1 = (i0 + TRANSPOSE_BLOCK).min(n);
        let block = &mut rows[i0 * r..i1 * r];
        for (j, col) in cols.chunks_exact(n).enumerate() {
            for (row, &b) in block.chunks_exact_mut(r).zip(&col[i0..i1]) {
                row[j] = b;
            }
        }
    }
}

/// Checks, decompresses and un-transposes one chunk of `bytes` into `rows` (resized to fit).
/// `Err` holds the reason without a file name.
pub fn read_chunk(
    bytes: &[u8],
    e: &IndexEntry,
    row_bytes: usize,
    scratch: &mut Vec<u8>,
    rows: &mut [u8],
) -> std::result::Result<ChunkHeader, String> {
    let at = e.offset as usize;
    let h = ChunkHeader::decode(&bytes[at.min(bytes.len())..])?;
    if !e.matches(&h) {
        return Err("chunk header disagrees with the footer index".into());
    }
    let start = at + CHUNK_HEADER_BYTES;
    let payload = bytes
        .get(start..start + h.payload_len as usize)
        .ok_or("payload runs past the end of the file")?;
    if xxh3_64(payload) != h.payload_xxh3 {
        return Err("payload checksum mismatch".into());
    }
    decompress(payload, h.raw_len as usize, row_bytes, scratch, rows)?;
    Ok(h)
}

/// Decompresses a checked payload into rows.
pub fn decompress(
    payload: &[u8],
    raw_len: usize,
    row_bytes: usize,
    scratch: &mut Vec<u8>,
    rows: &mut [u8],
) -> std::result::Result<(), String> {
    if rows.len() != raw_len || !raw_len.is_multiple_of(row_bytes) {
        return Err(format!(
            "raw length {raw_len} is not a whole number of rows"
        ));
    }
    // The frame names its decoded size: check it before allocating for it.
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        Ok(None) => {}
        Ok(Some(n)) => {
            return Err(format!(
                "zstd frame holds {n} bytes, the chunk claims {raw_len}"
            ));
        }
        Err(_) => return Err("payload is not a zstd frame".into()),
    }
    if raw_len as u64 > MAX_ZSTD_RATIO * payload.len() as u64 {
        return Err(format!(
            "raw length {raw_len} cannot come from a {}-byte zstd payload",
            payload.len()
        ));
    }
    scratch.clear();
    scratch.resize(raw_len, 0);
    let got = zstd::bulk::decompress_to_buffer(payload, &mut scratch[..])
        .map_err(|e| format!("zstd: {e}"))?;
    if got != raw_len {
        return Err(format!("decompressed {got} bytes, expected {raw_len}"));
    }
    columns_to_rows(scratch, row_bytes, rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn transpose_round_trip() {
        let rows: Vec<u8> = (0..60).map(|i| i as u8).collect();
        let mut cols = Vec::new();
        rows_to_columns(&rows, 6, &mut cols);
        assert_eq!(&cols[..10], &[0, 6, 12, 18, 24, 30, 36, 42, 48, 54]);
        let mut back = vec![0; 60];
        columns_to_rows(&cols, 6, &mut back);
        assert_eq!(back, rows);
        // Sizes around the block size, against the definition.
        for n in [1usize, 63, 64, 65, 200] {
            let r = 7;
            let rows: Vec<u8> = (0..n * r).map(|i| (i * 31 % 251) as u8).collect();
            rows_to_columns(&rows, r, &mut cols);
            for i in 0..n {
                for j in 0..r {
                    assert_eq!(cols[j * n + i], rows[i * r + j]);
                }
            }
            let mut back = vec![0; n * r];
            columns_to_rows(&cols, r, &mut back);
            assert_eq!(back, rows);
        }
    }

    #[test]
    fn chunk_header_round_trip() {
        let h = ChunkHeader {
            epoch: 3,
            first: 100,
            count: 7,
            raw_len: 7 * 72,
            payload_len: 99,
            payload_xxh3: 0xdead_beef,
            stats: QualitySums {
                records: 7.0,
                top_mass: 3.5,
                ..Default::default()
            },
        };
        let b = h.encode();
        assert_eq!(ChunkHeader::decode(&b).unwrap(), h);
        let mut bad = b;
        bad[9] ^= 1;
        assert!(ChunkHeader::decode(&bad).unwrap_err().contains("checksum"));
    }

    proptest! {
        #[test]
        fn footer_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_footer(Path::new("fuzz"), &bytes);
        }

        #[test]
        fn chunk_decoder_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            offset in 0u64..500,
            count in 0u32..10,
            payload_len in 0u32..400,
        ) {
            let e = IndexEntry { epoch: 0, first: 0, count, raw_len: count * 8, offset, payload_len, payload_xxh3: 0 };
            let mut rows = vec![0u8; (count * 8) as usize];
            let _ = read_chunk(&bytes, &e, 8, &mut Vec::new(), &mut rows);
            let _ = ChunkHeader::decode(&bytes);
            let _ = decompress(&bytes, rows.len(), 8, &mut Vec::new(), &mut rows);
        }
    }
}
