//! The dataset index of an image folder: every file's relative path, size, modification time
//! and image dimensions, kept in `SPLIT_DIR/.distill-index` so that a second run over a large
//! folder (ImageNet: 1.28 M files) reads no image header again. An entry is reused only while
//! the file's path, size and mtime are unchanged; anything else is read again and the index
//! rewritten (atomically, or not at all where the folder is read-only).
//!
//! Layout: `"DSTLIDX1"`, then one zstd frame of entries, each
//! `path_len:u32 path:bytes size:u64 mtime_ns:i64 width:u32 height:u32` (little-endian).
//! A file that does not parse is ignored and rebuilt.

use crate::error::DataError;
use std::collections::HashMap;
use std::path::Path;

/// File name of the index inside the split directory.
pub const INDEX_FILE: &str = ".distill-index";
const MAGIC: &[u8; 8] = b"DSTLIDX1";

/// What the index knows about one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = raw.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let mut index = Index::new();
    while let Some(len) = take(4) {
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let path = String::from_utf8(take(len)?.to_vec()).ok()?;
        let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let mtime_ns = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let width = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let height = u32::from_le_bytes(take(4)?.try_into().ok()?);
        index.insert(
            path,
            Entry {
                size,
                mtime_ns,
                width,
                height,
            },
        );
    }
    Some(index)
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
    let mut raw = Vec::with_capacity(entries.len() * 48);
    for (p, e) in entries {
        raw.extend_from_slice(&(p.len() as u32).to_le_bytes());
        raw.extend_from_slice(p.as_bytes());
        raw.extend_from_slice(&e.size.to_le_bytes());
        raw.extend_from_slice(&e.mtime_ns.to_le_bytes());
        raw.extend_from_slice(&e.width.to_le_bytes());
        raw.extend_from_slice(&e.height.to_le_bytes());
    }
    write_frame(dir, INDEX_FILE, MAGIC, &raw)
}

/// A file's modification time in nanoseconds since the epoch (0 where the OS has none).
pub fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}
