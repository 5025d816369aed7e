//! The label store: teacher soft labels for every (epoch, sample), in chunked, zstd-compressed,
//! checksummed shard files that any number of students read at once through mmap.
//!
//! A store is a directory: `manifest.json` (see `formats::Manifest`) and one or more shard
//! files, each holding a contiguous sample range for every epoch. This crate writes them
//! ([`StoreWriter`], resumable and atomic), reads them ([`LabelStore`], with an epoch
//! [`Prefetcher`]), checks them ([`verify`]), joins shards ([`merge`]) and summarizes them
//! ([`summarize`]), and holds the one-writer lock ([`WriterLock`]). It is the container and
//! nothing else: it never reads a dataset, makes pixels (the replay crate does), or runs a
//! teacher or a student. `formats/FORMAT.md` is the layout.

pub mod error;
pub mod features;
pub mod lock;
pub mod merge;
pub mod reader;
pub mod shard;
pub mod staging;
pub mod summary;
pub mod verify;
pub mod writer;

pub use error::{Result, StoreError};
pub use features::{DecodedFeatures, FeatureStore};
pub use lock::{LOCK_FILE, LockHolder, WriterLock};
pub use merge::merge;
pub use reader::{DecodedEpoch, EpochIter, LabelStore, Prefetcher, Shard, ShardBytes};
pub use summary::{Summary, summarize};
pub use verify::{VerifyReport, verify};
pub use writer::{
    DEFAULT_CHUNK_RECORDS, DEFAULT_ZSTD_LEVEL, MANIFEST_FILE, OpenMode, RecordQuality, ShardWriter,
    StoreWriter, WRITING_FILE, shard_file_name,
};
