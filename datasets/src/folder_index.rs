//! The dataset index of an image folder: every file's relative path, size, modification time
//! and image dimensions, kept in `SPLIT_DIR/.distill-index` so that a second run over a large
//! folder (ImageNet: 1.28 M files) reads no image header again. An entry is reused only while
//! the file's path, size and mtime are unchanged; anything else is read again and the index
//! rewritten (atomically, or not at all where the folder is read-only).
//!
//! Layout: `"DSTLIDX2"`, then one zstd frame holding the `(path, Entry)` list in postcard's
//! encoding (serde; varint integers, length-prefixed strings). A file that does not parse (a
//! version 1 index among them) is ignored and rebuilt.

use crate::error::DataError;
use std::collections::HashMap;
use std::path::Path;

/// File name of the index inside the split directory.
pub const INDEX_FILE: &str = ".distill-index";
const MAGIC: &[u8; 8] = b"DSTLIDX2";

/// What the index knows about one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub size: u64,
    pub mtime_ns: i64,
    pub width: u32,
    pub height: u32,
}

/// Entries by relative path (`/`-separated).
pub type Index = HashMap<String, Entry>;

/// Reads the index of `dir`; `None` when there is none or it does not parse.
pub fn load(dir: &Path) -> Option<Index> {
    let raw = read_frame(&dir.join(INDEX_FILE), MAGIC)?;
    let entries: Vec<(String, Entry)> = postcard::from_bytes(&raw).ok()?;
    Some(entries.into_iter().collect())
}

/// The body of an index file: `magic`, then one zstd frame; `None` when missing or damaged.
pub(crate) fn read_frame(path: &Path, magic: &[u8; 8]) -> Option<Vec<u8>> {
    let bytes = std::fs::read(path).ok()?;
    let body = bytes.strip_prefix(magic.as_slice())?;
    // Streaming: memory grows with what the frame really holds, not with what it claims.
    zstd::stream::decode_all(body).ok()
}

/// Writes `magic` and `raw` as one zstd frame to `dir/name`, through a temporary file and a
/// rename, so a reader never sees half an index.
pub(crate) fn write_frame(
    dir: &Path,
    name: &str,
    magic: &[u8; 8],
    raw: &[u8],
) -> Result<(), DataError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut out = magic.to_vec();
        out.extend_from_slice(&zstd::bulk::compress(raw, 3)?);
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::Io { path, source: e }
    })
}

/// Writes `entries` (in the order given) as the index of `dir`, through a temporary file and a
/// rename, so a reader never sees half an index.
pub fn save(dir: &Path, entries: &[(String, Entry)]) -> Result<(), DataError> {
    let raw = postcard::to_stdvec(entries)
        .map_err(|e| DataError::data(dir.join(INDEX_FILE), format!("encoding: {e}")))?;
    write_frame(dir, INDEX_FILE, MAGIC, &raw)
}

/// A file's modification time in nanoseconds since the epoch (0 where the OS has none).
pub fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}
