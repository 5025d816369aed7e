//! Decode-once blocks: how labelling (and a block-grouped training stream) groups samples so each
//! image is decoded once and kept as u8 while every epoch's records of it are made.
//!
//! A [`BlockPlan`] cuts a sample range into consecutive blocks of at most `images` samples and
//! at most `bytes` bytes of decoded pixels (one image always fits, whatever its size), walking
//! either the samples in order or a seeded permutation of them. Recipes that mix use the
//! permutation and draw each record's partner inside its block, so partners come from the whole
//! dataset (an image folder lists its samples class by class) and are already decoded. The plan is
//! a pure function of (config, seed, range, image sizes), so a resumed run and a student stream
//! rebuild the same blocks from the manifest.

use crate::augment::record_rng;
use crate::error::FormatError;
use crate::manifest::SampleRange;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Samples per block by default: large enough that mixup partners are varied.
pub const DEFAULT_BLOCK_IMAGES: u32 = 1024;
/// Decoded bytes per block by default (about 2,000 ImageNet-sized photos; a labelling run holds at
/// most two blocks).
pub const DEFAULT_BLOCK_BYTES: u64 = 1 << 30;

/// The order blocks walk the samples in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockOrder {
    /// Sample order (recipes without mixing: nothing depends on a block's members).
    Sequential,
    /// A seeded permutation of the samples (recipes that mix draw partners inside the block).
    Permuted,
}

/// How samples are grouped into decode-once blocks (recorded in the manifest as `blocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// At most this many samples per block.
    pub images: u32,
    /// At most this many bytes of decoded u8 pixels per block (width × height × channels).
    pub bytes: u64,
    pub order: BlockOrder,
}

impl BlockConfig {
    /// Checks the bounds, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.images == 0 {
            return Err(FormatError::invalid(
                "blocks.images",
                "a block holds at least one image",
            ));
        }
        if self.bytes == 0 {
            return Err(FormatError::invalid(
                "blocks.bytes",
                "a block needs room for at least one image",
            ));
        }
        Ok(())
    }
}

/// The blocks of one sample range.
#[derive(Clone, Debug)]
pub struct BlockPlan {
    config: BlockConfig,
    range: SampleRange,
    /// The range's samples in labelling order.
    order: Vec<u32>,
    /// `pos[s - range.start]`: where sample `s` is in `order`.
    pos: Vec<u32>,
    /// Start of each block in `order`, then `order.len()`.
    starts: Vec<u32>,
}

impl BlockPlan {
    /// The plan of `range` under `config`; `bytes_of(s)` is sample `s`'s decoded size.
    ///
    /// The permutation is Fisher–Yates from the record stream (epoch `u32::MAX`, index
    /// `u32::MAX`), which no record uses.
    pub fn new(
        config: BlockConfig,
        seed: u64,
        range: SampleRange,
        bytes_of: &dyn Fn(u32) -> Result<u64, FormatError>,
    ) -> Result<Self, FormatError> {
        config.validate()?;
        if range.is_empty() {
            return Err(FormatError::invalid(
                "samples",
                format!("the range {range} is empty"),
            ));
        }
        let mut order: Vec<u32> = (range.start..range.end).collect();
        if config.order == BlockOrder::Permuted {
            let mut r = record_rng(seed, u32::MAX, u32::MAX);
            for i in (1..order.len()).rev() {
                let j = r.random_range(0..=i);
                order.swap(i, j);
            }
        }
        let mut pos = vec![0u32; order.len()];
        for (p, &s) in order.iter().enumerate() {
            pos[(s - range.start) as usize] = p as u32;
        }
        let mut starts = vec![0u32];
        let (mut count, mut bytes) = (0u32, 0u64);
        for (p, &s) in order.iter().enumerate() {
            let b = bytes_of(s)?;
            if count > 0 && (count == config.images || bytes.saturating_add(b) > config.bytes) {
                starts.push(p as u32);
                (count, bytes) = (0, 0);
            }
            count += 1;
            bytes = bytes.saturating_add(b);
        }
        starts.push(order.len() as u32);
        Ok(BlockPlan {
            config,
            range,
            order,
            pos,
            starts,
        })
    }

    /// The configuration the plan was made with.
    pub fn config(&self) -> &BlockConfig {
        &self.config
    }

    /// The samples the plan covers.
    pub fn range(&self) -> SampleRange {
        self.range
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    /// Whether the plan has no block (never true: a range is never empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples of block `b`, in labelling order.
    pub fn block(&self, b: usize) -> &[u32] {
        &self.order[self.starts[b] as usize..self.starts[b + 1] as usize]
    }

    /// All samples in labelling order (the blocks one after another).
    pub fn order(&self) -> &[u32] {
        &self.order
    }

    /// The block holding `sample` and the sample's place in it; `None` outside the range.
    pub fn locate(&self, sample: u32) -> Option<(usize, usize)> {
        if !self.range.contains(sample) {
            return None;
        }
        let p = self.pos[(sample - self.range.start) as usize];
        let b = self.starts.partition_point(|&s| s <= p) - 1;
        Some((b, (p - self.starts[b]) as usize))
    }

    /// Samples of blocks before `b` (`b` = the first block: none).
    pub fn before(&self, b: usize) -> &[u32] {
        &self.order[..self.starts[b] as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(images: u32, bytes: u64, order: BlockOrder) -> BlockConfig {
        BlockConfig {
            images,
            bytes,
            order,
        }
    }

    #[test]
    fn blocks_tile_the_range_and_respect_both_bounds() {
        let range = SampleRange {
            start: 100,
            end: 1100,
        };
        // Sample s is (s % 7 + 1) × 100 bytes.
        let size = |s: u32| Ok(u64::from(s % 7 + 1) * 100);
        let p = BlockPlan::new(cfg(64, 2_000, BlockOrder::Permuted), 3, range, &size).unwrap();
        let mut seen = vec![false; 1000];
        for b in 0..p.len() {
            let blk = p.block(b);
            assert!(!blk.is_empty() && blk.len() <= 64);
            let bytes: u64 = blk.iter().map(|&s| size(s).unwrap()).sum();
            assert!(bytes <= 2_000, "block {b} holds {bytes} bytes");
            for (i, &s) in blk.iter().enumerate() {
                assert!(!seen[(s - 100) as usize]);
                seen[(s - 100) as usize] = true;
                assert_eq!(p.locate(s), Some((b, i)));
            }
            // Greedy: the next block's first image would not have fitted.
            if b + 1 < p.len() {
                let next = size(p.block(b + 1)[0]).unwrap();
                assert!(blk.len() == 64 || bytes + next > 2_000);
            }
        }
        assert!(seen.iter().all(|&v| v));
        assert_eq!(p.locate(99), None);
        assert_eq!(p.locate(1100), None);
        // Permuted: not sample order, and a different seed gives another order.
        assert_ne!(p.order(), (100..1100).collect::<Vec<_>>());
        let q = BlockPlan::new(cfg(64, 2_000, BlockOrder::Permuted), 4, range, &size).unwrap();
        assert_ne!(p.order(), q.order());
    }

    #[test]
    fn sequential_blocks_are_contiguous_and_a_huge_image_gets_a_block_of_its_own() {
        let range = SampleRange { start: 0, end: 10 };
        let size = |s: u32| Ok(if s == 4 { 1 << 40 } else { 10 });
        let p = BlockPlan::new(cfg(3, 1_000, BlockOrder::Sequential), 0, range, &size).unwrap();
        let blocks: Vec<Vec<u32>> = (0..p.len()).map(|b| p.block(b).to_vec()).collect();
        assert_eq!(
            blocks,
            vec![vec![0, 1, 2], vec![3], vec![4], vec![5, 6, 7], vec![8, 9]]
        );
        assert_eq!(p.before(2), &[0, 1, 2, 3]);
    }

    #[test]
    fn bad_configs_name_their_field() {
        let range = SampleRange { start: 0, end: 4 };
        let e = BlockPlan::new(cfg(0, 1, BlockOrder::Sequential), 0, range, &|_| Ok(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("blocks.images"), "{e}");
        let e = BlockPlan::new(cfg(1, 0, BlockOrder::Sequential), 0, range, &|_| Ok(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("blocks.bytes"), "{e}");
    }
}
