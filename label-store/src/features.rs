//! Reading a store's feature files (FORMAT.md §6): opened only when asked for, so a student that
//! reads soft labels alone never maps or reads a byte of them.

use crate::error::{Result, StoreError, format};
use crate::reader::{LabelStore, Shard, check_shard_against_manifest, epoch_rows};
use crate::shard::RowKind;
use formats::{FeatureHead, FeatureLayout, SampleRange};
use std::path::PathBuf;

/// One feature head of a store, its files mapped and their footers checked.
pub struct FeatureStore {
    pub dir: PathBuf,
    /// The head as the manifest describes it.
    pub head: FeatureHead,
    pub layout: FeatureLayout,
    shards: Vec<Shard>,
    epochs: u32,
    samples: SampleRange,
}

impl LabelStore {
    /// The store's feature heads (empty when it holds soft labels only).
    pub fn feature_heads(&self) -> &[FeatureHead] {
        self.manifest
            .features
            .as_ref()
            .map_or(&[][..], |f| &f.heads[..])
    }

    /// Opens feature head `head`: maps its files and checks each footer against the manifest.
    pub fn features(&self, head: usize) -> Result<FeatureStore> {
        let Some(f) = &self.manifest.features else {
            return Err(StoreError::Invalid(format!(
                "{}: the store holds no features (label it with --feature)",
                self.dir.display()
            )));
        };
        let Some(h) = f.heads.get(head) else {
            return Err(StoreError::Invalid(format!(
                "{}: no feature head {head} (the store has {})",
                self.dir.display(),
                f.heads.len()
            )));
        };
        let layout = FeatureLayout::new(h.stored_dim, f.codec)
            .map_err(format(self.dir.display().to_string()))?;
        let mut shards = Vec::with_capacity(h.shards.len());
        for entry in &h.shards {
            let path = self.dir.join(&entry.file);
            if !path.exists() {
                return Err(StoreError::Invalid(format!(
                    "{}: feature file {} (samples {}) is missing",
                    self.dir.display(),
                    entry.file,
                    entry.samples
                )));
            }
            let shard = Shard::open_kind(&path, RowKind::Features)?;
            check_shard_against_manifest(&self.manifest, entry, &shard, Some((h, f.codec)))?;
            shards.push(shard);
        }
        Ok(FeatureStore {
            dir: self.dir.clone(),
            head: h.clone(),
            layout,
            shards,
            epochs: self.epochs(),
            samples: self.samples(),
        })
    }
}

impl FeatureStore {
    /// Stored dimensions per vector.
    pub fn dim(&self) -> usize {
        self.layout.dim as usize
    }

    /// The head's opened files, in sample order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Bytes of this head's files.
    pub fn stored_bytes(&self) -> u64 {
        self.head.shards.iter().map(|s| s.bytes).sum()
    }

    /// Decompresses all of `epoch`'s vectors into memory (still encoded: decoded on access).
    pub fn decode_epoch(&self, epoch: u32) -> Result<DecodedFeatures> {
        if epoch >= self.epochs {
            return Err(StoreError::Invalid(format!(
                "epoch {epoch} is not in the store (it has {})",
                self.epochs
            )));
        }
        let rows = epoch_rows(
            &self.dir,
            &self.shards,
            epoch,
            self.samples,
            self.layout.row_bytes(),
        )?;
        Ok(DecodedFeatures {
            epoch,
            samples: self.samples,
            layout: self.layout,
            rows,
        })
    }

    /// The vector of (`epoch`, `sample`) into `out` (decompresses its whole chunk: for many
    /// records use [`FeatureStore::decode_epoch`]).
    pub fn get_into(&self, epoch: u32, sample: u32, out: &mut [f32]) -> Result<()> {
        if epoch >= self.epochs || !self.samples.contains(sample) {
            return Err(StoreError::Invalid(format!(
                "record (epoch {epoch}, sample {sample}) is outside the store (epochs 0..{}, samples {})",
                self.epochs, self.samples
            )));
        }
        let s = self
            .shards
            .partition_point(|s| s.footer.info.samples.end <= sample);
        let shard = &self.shards[s];
        let info = &shard.footer.info;
        let j = (sample - info.samples.start) / info.chunk_records;
        let c = shard.footer.by_epoch[epoch as usize][j as usize] as usize;
        let e = &shard.footer.index[c];
        let mut rows = vec![0u8; e.raw_len as usize];
        shard.chunk_rows(c, &mut Vec::new(), &mut rows)?;
        let r = self.layout.row_bytes();
        let at = (sample - e.first) as usize * r;
        self.layout
            .decode_into(&rows[at..at + r], out)
            .map_err(format(format!(
                "{}: feature of record (epoch {epoch}, sample {sample})",
                shard.path.display()
            )))
    }
}

/// One epoch of a feature head in memory, encoded.
pub struct DecodedFeatures {
    pub epoch: u32,
    pub samples: SampleRange,
    layout: FeatureLayout,
    rows: Vec<u8>,
}

impl DecodedFeatures {
    /// Stored dimensions per vector.
    pub fn dim(&self) -> usize {
        self.layout.dim as usize
    }

    /// Decodes the vector of `sample` into `out` (the head's stored dimensions long).
    pub fn get_into(&self, sample: u32, out: &mut [f32]) -> Result<()> {
        if !self.samples.contains(sample) {
            return Err(StoreError::Invalid(format!(
                "sample {sample} is outside the store's samples {}",
                self.samples
            )));
        }
        let r = self.layout.row_bytes();
        let at = (sample - self.samples.start) as usize * r;
        self.layout
            .decode_into(&self.rows[at..at + r], out)
            .map_err(format(format!(
                "feature of record (epoch {}, sample {sample})",
                self.epoch
            )))
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.rows.len()
    }
}
