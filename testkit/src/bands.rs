//! Synthetic, learnable data and label stores for tests and benchmarks: images whose class is a
//! bright horizontal band (flip-invariant, so any recipe keeps labels right), and a store whose
//! "teacher" puts logit 5 on the (mixed) true classes, written exactly as `distill label` would
//! lay it out (dataset fingerprint, `teacher_input` size, realized augmentation per record).

use anyhow::Result;
use datasets::{Dataset, write_npy};
use formats::Recipe;
use formats::{
    FORMAT_NAME, FORMAT_VERSION, Manifest, Quality, Record, SampleRange, SoftLabel, ValueCodec,
};
use label_store::{OpenMode, RecordQuality, StoreWriter};
use replay::sampler::{MixedLabel, Sampler};
use std::path::Path;

/// Shape of a synthetic split.
#[derive(Clone, Copy, Debug)]
pub struct Bands {
    pub side: usize,
    pub channels: usize,
    pub classes: usize,
}

impl Bands {
    /// Writes `n` images of `split` as npy arrays in `dir` (`{split}_images.npy`,
    /// `{split}_labels.npy`); `salt` varies labels and noise between splits.
    pub fn write(&self, dir: &Path, split: &str, n: usize, salt: usize) -> Result<()> {
        let (s, c, k) = (self.side, self.channels, self.classes);
        let mut images = Vec::with_capacity(n * s * s * c);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i * 3 + salt) % k;
            labels.push(class as u8);
            for y in 0..s {
                for x in 0..s {
                    let band = y * k / s;
                    for ch in 0..c {
                        let noise = ((i * 31 + y * 17 + x * 13 + ch * 7 + salt) % 90) as u8;
                        images.push(if band == class { 150 + noise } else { noise });
                    }
                }
            }
        }
        let shape: Vec<usize> = if c == 1 {
            vec![n, s, s]
        } else {
            vec![n, s, s, c]
        };
        write_npy(
            &dir.join(format!("{split}_images.npy")),
            "|u1",
            &shape,
            &images,
        )?;
        write_npy(
            &dir.join(format!("{split}_labels.npy")),
            "|u1",
            &[n],
            &labels,
        )?;
        Ok(())
    }
}

/// Writes a store of `data` with `epochs` augmented epochs of `recipe` at the images' size,
/// top-`k`, labelled as a perfect teacher would (logit 5 on the mixed true classes).
/// With decode-once `blocks`, labelled as `distill label` labels with them: partners inside each
/// block, and permuted blocks staged whole.
pub fn write_store(
    dir: &Path,
    data: &dyn Dataset,
    epochs: u32,
    k: u32,
    recipe: &Recipe,
    seed: u64,
    blocks: Option<formats::BlockConfig>,
) -> Result<Manifest> {
    let n = data.len();
    let (w, h) = data.dims(0)?;
    let classes = data.classes() as usize;
    let mut draft = Manifest {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        creator: concat!(
            "distill ",
            env!("CARGO_PKG_VERSION"),
            " student-train synth"
        )
        .into(),
        created: formats::manifest::now_rfc3339(),
        teachers: vec![],
        dataset: data.fingerprint().clone(),
        datasets: data.parts().to_vec(),
        recipe: serde_json::to_value(recipe).unwrap_or_default(),
        seed,
        epochs,
        classes: classes as u32,
        k,
        codec: ValueCodec::Q8,
        chunk_records: 1024,
        samples: SampleRange { start: 0, end: n },
        shards: vec![],
        quality: Quality::default(),
        decode_probe: Some(datasets::probe::decode_probe(data)?),
        blocks,
        teacher_input: Some(formats::manifest::TeacherInput::size(w, h)),
        features: None,
        extra: Default::default(),
    };
    draft.format_version = draft.needed_version();
    let range = SampleRange { start: 0, end: n };
    let c = u64::from(data.channels());
    let plan = blocks
        .map(|b| {
            replay::block::BlockPlan::new(b, seed, range, &|s| {
                data.dims(s).map(|(w, h)| u64::from(w) * u64::from(h) * c)
            })
        })
        .transpose()?
        .map(std::sync::Arc::new);
    let mut sampler = Sampler::new(recipe, seed, n, w, h)?;
    if let Some(p) = &plan {
        sampler = sampler.with_plan(std::sync::Arc::clone(p));
    }
    let mut writer = StoreWriter::open(dir, draft, OpenMode::Overwrite, 3)?;
    let mut dense = vec![0f32; classes];
    let record = |e: u32, s: u32, dense: &mut Vec<f32>| -> Result<Record> {
        let aug = sampler.sample(e, s, &|i| data.dims(i))?;
        let hard = |i: u32| {
            data.label(i)
                .ok_or_else(|| anyhow::anyhow!("sample {i} has no hard label: bands need them"))
        };
        let label = hard(s)?;
        let partner = match &aug.mix {
            Some(m) => hard(m.partner)?,
            None => label,
        };
        MixedLabel::new(&aug, label, partner, w, h).dense_into(dense);
        let logits: Vec<f32> = dense
            .iter()
            .enumerate()
            .map(|(c, p)| 5.0 * p + 0.1 * ((s as usize + c) % 3) as f32)
            .collect();
        Ok(Record {
            aug,
            label: SoftLabel::from_logits(&logits, k as usize)?,
        })
    };
    if let Some(plan) = plan.as_ref().filter(|_| writer.staged_groups().is_some()) {
        for b in 0..plan.len() {
            let mut group = Vec::new();
            for e in 0..epochs {
                for &s in plan.block(b) {
                    group.push((e, s, record(e, s, &mut dense)?, RecordQuality::default()));
                }
            }
            writer.append_group(&group)?;
        }
        return Ok(writer.finish()?);
    }
    for e in 0..epochs {
        for s in 0..n {
            writer.append(e, s, &record(e, s, &mut dense)?, &RecordQuality::default())?;
        }
    }
    Ok(writer.finish()?)
}
