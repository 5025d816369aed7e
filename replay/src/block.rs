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

use crate::error::ReplayError;
use crate::sampler::record_rng;
use datasets::DataError;
use datasets::{Dataset, Image};
use formats::manifest::SampleRange;
use formats::{BlockConfig, BlockOrder};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Samples per block by default: large enough that mixup partners are varied.
pub const DEFAULT_BLOCK_IMAGES: u32 = 1024;
/// Decoded bytes per block by default (about 2,000 ImageNet-sized photos; a labelling run holds at
/// most two blocks).
pub const DEFAULT_BLOCK_BYTES: u64 = 1 << 30;

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
        bytes_of: &dyn Fn(u32) -> Result<u64, DataError>,
    ) -> Result<Self, ReplayError> {
        config.validate()?;
        if range.is_empty() {
            return Err(ReplayError::invalid(
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

/// The decoded images of one group, each filled by the first item that needs it, and whether a
/// thread has claimed it for decoding ([`DecodeCache::prefetch`]).
type Slots = Vec<(OnceLock<Result<Arc<Image>, String>>, AtomicBool)>;

/// Decoded images shared by loader threads, group by group (a labelling block, a training
/// window of blocks): an image of a group is decoded by the first work item that needs it and
/// kept until the group's last item is done, so only the groups in flight are in memory. An image
/// asked for outside its group (or with no groups) is decoded for that use alone. Counts every
/// decode.
pub struct DecodeCache {
    data: Arc<dyn Dataset>,
    /// `(group, slot)` of each sample of `range` (`u32::MAX`: in no group).
    at: Vec<(u32, u32)>,
    range: SampleRange,
    sizes: Vec<u32>,
    /// Work items of each group still to finish.
    items: Vec<AtomicUsize>,
    live: Mutex<HashMap<u32, Arc<Slots>>>,
    decoded: AtomicU64,
}

impl DecodeCache {
    /// A cache over `groups` (samples of `range`; a sample in several groups belongs to the
    /// first), group `g` used by `items[g]` work items.
    pub fn new(
        data: Arc<dyn Dataset>,
        range: SampleRange,
        groups: &[Vec<u32>],
        items: &[usize],
    ) -> Self {
        let mut at = vec![(u32::MAX, 0); range.len() as usize];
        let mut sizes = Vec::with_capacity(groups.len());
        for (g, members) in groups.iter().enumerate() {
            let mut slot = 0u32;
            for &s in members {
                if let Some(a) = at.get_mut(s.wrapping_sub(range.start) as usize)
                    && a.0 == u32::MAX
                {
                    *a = (g as u32, slot);
                    slot += 1;
                }
            }
            sizes.push(slot);
        }
        DecodeCache {
            data,
            at,
            range,
            sizes,
            items: items.iter().map(|&n| AtomicUsize::new(n)).collect(),
            live: Mutex::new(HashMap::new()),
            decoded: AtomicU64::new(0),
        }
    }

    /// No groups: every request decodes.
    pub fn uncached(data: Arc<dyn Dataset>) -> Self {
        Self::new(data, SampleRange { start: 0, end: 0 }, &[], &[])
    }

    fn decode(&self, s: u32) -> Result<Arc<Image>, String> {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.data.image(s).map(Arc::new).map_err(|e| e.to_string())
    }

    /// The slot of `s` in `group`'s cache (created on first use), if `s` belongs to `group`.
    fn slot(&self, group: u32, s: u32) -> Option<(Arc<Slots>, usize)> {
        let slot = match self
            .range
            .contains(s)
            .then(|| self.at[(s - self.range.start) as usize])
        {
            Some((g, slot)) if g == group && g != u32::MAX => slot as usize,
            _ => return None,
        };
        let mut live = self.live.lock().expect("decode cache lock");
        let slots = live.entry(group).or_insert_with(|| {
            Arc::new(
                (0..self.sizes[group as usize])
                    .map(|_| (OnceLock::new(), AtomicBool::new(false)))
                    .collect(),
            )
        });
        Some((Arc::clone(slots), slot))
    }

    /// Sample `s`'s image for a work item of `group`: from the group's cache when `s` is in it
    /// (waiting if another thread is decoding it). A failed decode is kept and reported to every
    /// item that asks.
    pub fn get(&self, group: u32, s: u32) -> Result<Arc<Image>, String> {
        match self.slot(group, s) {
            Some((slots, i)) => slots[i].0.get_or_init(|| self.decode(s)).clone(),
            None => self.decode(s),
        }
    }

    /// Decodes those of `samples` (of `group`) that no thread has started on yet, so that the
    /// `get`s of a work item rarely wait for another thread's decode: call it with everything an
    /// item will ask for before it asks.
    pub fn prefetch(&self, group: u32, samples: &[u32]) {
        for &s in samples {
            if let Some((slots, i)) = self.slot(group, s)
                && !slots[i].1.swap(true, Ordering::AcqRel)
            {
                slots[i].0.get_or_init(|| self.decode(s));
            }
        }
    }

    /// One work item of `group` is done; the last one frees the group's images.
    pub fn item_done(&self, group: u32) {
        if let Some(n) = self.items.get(group as usize)
            && n.fetch_sub(1, Ordering::AcqRel) == 1
        {
            self.live.lock().expect("decode cache lock").remove(&group);
        }
    }

    /// Images decoded so far.
    pub fn decoded(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    /// Groups whose images are in memory now.
    pub fn live_groups(&self) -> usize {
        self.live.lock().expect("decode cache lock").len()
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
    fn the_cache_decodes_each_member_once_and_frees_a_group_after_its_last_item() {
        use datasets::{NpyArrays, write_npy};
        let t = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..10 * 4).map(|i| i as u8).collect();
        let labels: Vec<u8> = (0..10).map(|i| i % 2).collect();
        write_npy(
            &t.path().join("train_images.npy"),
            "|u1",
            &[10, 2, 2],
            &pixels,
        )
        .unwrap();
        write_npy(&t.path().join("train_labels.npy"), "|u1", &[10], &labels).unwrap();
        let data: Arc<dyn Dataset> = Arc::new(NpyArrays::open(t.path(), "train").unwrap());
        let range = SampleRange { start: 0, end: 10 };
        let cache = DecodeCache::new(
            Arc::clone(&data),
            range,
            &[vec![3, 1, 4], vec![5, 9, 2, 6]],
            &[2, 1],
        );
        for _ in 0..3 {
            assert_eq!(cache.get(0, 4).unwrap().data, data.image(4).unwrap().data);
            cache.get(0, 1).unwrap();
        }
        assert_eq!(cache.decoded(), 2);
        // Outside its group (or in none): decoded for that use alone.
        cache.get(1, 4).unwrap();
        cache.get(0, 0).unwrap();
        assert_eq!(cache.decoded(), 4);
        assert_eq!(cache.live_groups(), 1);
        cache.item_done(0);
        assert_eq!(cache.live_groups(), 1);
        cache.item_done(0);
        assert_eq!(cache.live_groups(), 0);
        let none = DecodeCache::uncached(data);
        none.get(0, 1).unwrap();
        none.get(0, 1).unwrap();
        assert_eq!(none.decoded(), 2);
        none.item_done(0);
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
