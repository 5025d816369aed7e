//! Evaluation of students on a test split: accuracy and, against a teacher's test labels, the
//! fidelity metrics of Stanton et al. (top-1 agreement and predictive KL).

use crate::checkpoint::Checkpoint;
use crate::error::TrainError;
use crate::input::upload;
use crate::models::Student;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Device;
use datasets::Dataset;
use formats::Recipe;
use label_store::LabelStore;
use replay::batch::NO_LABEL;
use replay::sampler::Sampler;
use replay::stream::{Source, Stream, StreamConfig};
use std::sync::Arc;

/// Evaluation of one student.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Top-1 accuracy on the samples with a hard label; `None` when none has one (a transfer
    /// set read `unlabelled`: then agreement and KL say how the student does).
    pub accuracy: Option<f64>,
    /// Top-1 agreement with the teacher, when teacher labels were given.
    pub agreement: Option<f64>,
    /// Mean KL(p_t ‖ p_s) at τ = 1 in nats, when teacher labels were given.
    pub kl: Option<f64>,
    /// What `kl` measured against: the teacher's full distribution (a test store with k =
    /// classes) or the one rebuilt from its top-k, whose own error can be as large as the
    /// fidelity gaps measured (label the test split with `--topk` = classes).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kl_vs: Option<KlReference>,
    /// Mean cosine between the student's projected features and the teacher's stored ones,
    /// when both are at hand ([`Evaluator::with_features`] and a projector).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub feature_cosine: Option<f64>,
    pub samples: u64,
}

/// The teacher distribution a fidelity KL is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KlReference {
    /// Every class's logit was stored (k = classes): the distribution is exact.
    #[serde(rename = "full")]
    Full,
    /// Rebuilt from the top-k and the stored tail (FORMAT.md §5): approximate.
    #[serde(rename = "top-k rebuild")]
    TopK,
}

impl KlReference {
    /// The name metrics and `eval` print.
    pub fn name(self) -> &'static str {
        match self {
            KlReference::Full => "full",
            KlReference::TopK => "top-k rebuild",
        }
    }
}

/// Evaluates students on a test split (un-augmented, resized to the input size), optionally
/// against a teacher's labels of the same split.
pub struct Evaluator {
    stream: Arc<Stream>,
    /// The teacher test store's records, which the stream replays (with their store's rule:
    /// a format version 1 store's crops through the 2×2 kernel it was labelled with).
    replayed: Option<Arc<label_store::reader::DecodedEpoch>>,
    teacher: Option<TeacherTest>,
    /// The teacher's stored features of every test sample (`n × d`), for the feature cosine.
    features: Option<(Vec<f32>, usize)>,
    /// The students' normalization, applied on the device.
    mean: Vec<f32>,
    std: Vec<f32>,
}

/// A teacher's test labels: top-1 class and rebuilt distribution at τ = 1 per sample.
struct TeacherTest {
    top1: Vec<u32>,
    /// `samples × classes`, the store's classes.
    classes: usize,
    probs: Vec<f32>,
    reference: KlReference,
}

/// How the evaluator makes a student's inputs: the student's size and normalization, and the
/// centre-crop fraction for image folders evaluated without teacher test labels.
#[derive(Clone, Copy, Debug)]
pub struct EvalView<'a> {
    pub size: (u32, u32),
    pub mean: &'a [f32],
    pub std: &'a [f32],
    pub crop_pct: f64,
}

impl Evaluator {
    /// An evaluator of `data`; `labels` must be a store of this very split made with `--aug
    /// none` or `--aug center`, whose recipe the evaluator then replays. Without a store, image
    /// folders are evaluated on centre crops (`crop_pct`, 0.875 as timm and torchvision evaluate)
    /// and other datasets on whole images.
    pub fn new(
        data: Arc<dyn Dataset>,
        labels: Option<Arc<LabelStore>>,
        view: EvalView<'_>,
        batch: usize,
        threads: usize,
    ) -> Result<Self, TrainError> {
        let EvalView {
            size,
            mean,
            std,
            crop_pct,
        } = view;
        if data.is_empty() {
            return Err(TrainError::config("the evaluation split has no samples"));
        }
        if !data.labelled() && labels.is_none() {
            return Err(TrainError::config(
                "the evaluation data has no hard labels (`unlabelled`): give the teacher's labels \
                 of it (a store labelled from it without augmentation) to measure agreement and KL",
            ));
        }
        // The teacher's classes (the data's, unless it has no hard labels); the data's for a
        // store without soft labels (an embedding-only teacher's: features only).
        let classes = labels
            .as_ref()
            .and_then(|s| s.manifest.label_classes())
            .unwrap_or(data.classes()) as usize;
        let recipe = match &labels {
            Some(store) => eval_recipe(store)?,
            // Photos of varied sizes (image folders, tar shards): the standard centre crop.
            None if data.encoded() => Recipe::center(crop_pct),
            None => Recipe::none(),
        };
        // The student sees what the teacher saw: with teacher test labels, their stored
        // records are replayed (the stream checks the store against the data); without,
        // parameters come from the evaluation recipe.
        let source = match &labels {
            Some(store) => Source::Store(Arc::clone(store)),
            None => Source::Sampler(Arc::new(Sampler::new(
                &recipe,
                0,
                data.len(),
                size.0,
                size.1,
            )?)),
        };
        let n = data.len();
        let stream = Stream::new(
            data,
            source,
            StreamConfig {
                batch,
                threads,
                prefetch: replay::stream::default_prefetch(threads),
                seed: 0,
                mean: mean.to_vec(),
                std: std.to_vec(),
                size,
                shuffle: false,
                window: 0,
                multi_crop: 1,
                part: replay::stream::Part::WHOLE,
                digest: false,
                pixels: true,
            },
        )?;
        let (teacher, replayed) = match &labels {
            Some(store) => {
                if store.samples().start != 0 || store.samples().end != n {
                    return Err(TrainError::Mismatch(format!(
                        "{}: field samples is {}, but evaluation needs every one of the {n} samples \
                         (merge the shards first)",
                        store.dir.display(),
                        store.samples(),
                    )));
                }
                let decoded = Arc::new(store.decode_epoch(0)?);
                let teacher = store
                    .manifest
                    .has_labels()
                    .then(|| teacher_test(store, &decoded, n, classes))
                    .transpose()?;
                (teacher, Some(decoded))
            }
            None => (None, None),
        };
        Ok(Evaluator {
            stream: Arc::new(stream),
            replayed,
            teacher,
            features: None,
            mean: mean.to_vec(),
            std: std.to_vec(),
        })
    }

    /// The evaluator measuring, for students with a projector, the cosine of their projected
    /// features with the teacher test store's feature head `head` (an error naming the store
    /// when it has none).
    pub fn with_features(mut self, store: &LabelStore, head: usize) -> Result<Self, TrainError> {
        let fs = store.features(head)?;
        let epoch = fs.decode_epoch(0)?;
        let (n, d) = (store.samples().end, fs.dim());
        let mut all = vec![0f32; n as usize * d];
        for (s, row) in (0..n).zip(all.chunks_exact_mut(d)) {
            epoch.get_into(s, row)?;
        }
        self.features = Some((all, d));
        Ok(self)
    }

    /// Accuracy (and agreement and KL with teacher labels) of `model`, run on `device` in
    /// inference mode (BatchNorm on running statistics).
    pub fn evaluate(&self, model: &Student, device: &Device) -> Result<EvalReport, TrainError> {
        Ok(self
            .evaluate_all(&[model], device)?
            .pop()
            .expect("one report per model"))
    }

    /// [`Evaluator::evaluate`] of several students in one pass over the split: each batch is
    /// decoded and uploaded once and fed to every model.
    pub fn evaluate_all(
        &self,
        models: &[&Student],
        device: &Device,
    ) -> Result<Vec<EvalReport>, TrainError> {
        let with: Vec<(&Student, Option<&Linear>)> = models.iter().map(|m| (*m, None)).collect();
        self.evaluate_projected(&with, device)
    }

    /// [`Evaluator::evaluate_all`] of students with their feature projectors: with the
    /// teacher's test features ([`Evaluator::with_features`]), a student with a projector also
    /// gets its [`EvalReport::feature_cosine`].
    pub fn evaluate_projected(
        &self,
        models: &[(&Student, Option<&Linear>)],
        device: &Device,
    ) -> Result<Vec<EvalReport>, TrainError> {
        let projectors: Vec<Option<Linear>> =
            models.iter().map(|m| m.1.map(|p| p.valid())).collect();
        let models: Vec<Student> = models.iter().map(|m| m.0.valid()).collect();
        let device = device.clone().without_autodiff();
        let mut sums = vec![(0u64, 0u64, 0f64); models.len()];
        let mut cosines = vec![0f64; models.len()];
        let (mut n_all, mut labelled) = (0u64, 0u64);
        let loader = self
            .stream
            .epoch(0, self.replayed.iter().cloned().collect(), None)?;
        let (w, h) = self.stream.size();
        let (w, h) = (w as usize, h as usize);
        let c = self.mean.len();
        for batch in loader {
            let b = batch?;
            let x = upload(b.inputs, b.n, (c, h, w), &self.mean, &self.std, &device);
            for (mi, (model, (correct, agree, kl))) in models.iter().zip(&mut sums).enumerate() {
                let (features, logits) = model.forward_features(x.clone());
                if let (Some(p), Some((tf, d))) = (&projectors[mi], &self.features) {
                    let projected = p
                        .forward(features)
                        .into_data()
                        .try_to_vec::<f32>()
                        .map_err(|e| TrainError::config(format!("reading features: {e:?}")))?;
                    if projected.len() != b.n * d {
                        return Err(TrainError::Mismatch(format!(
                            "the projector gives {} values per sample, the test store's \
                             features have {d}",
                            projected.len() / b.n.max(1)
                        )));
                    }
                    for (i, row) in projected.chunks_exact(*d).enumerate() {
                        let s = b.samples[i] as usize;
                        let t = &tf[s * d..(s + 1) * d];
                        cosines[mi] += formats::feature::reconstruction(t, row).0;
                    }
                }
                let logits = logits
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| TrainError::config(format!("reading logits: {e:?}")))?;
                // The students' classes (the stream's, or `--student-classes` where the data and
                // store have none).
                let cl = logits.len() / b.n.max(1);
                if let Some(t) = &self.teacher
                    && t.classes != cl
                {
                    return Err(TrainError::Mismatch(format!(
                        "the student has {cl} classes, the teacher test labels {}: agreement and \
                         KL compare distributions over the same classes",
                        t.classes
                    )));
                }
                for (i, row) in logits.chunks(cl.max(1)).enumerate() {
                    let pred = argmax(row);
                    let s = b.samples[i] as usize;
                    *correct += u64::from(pred == b.labels[i]);
                    if let Some(t) = &self.teacher {
                        *agree += u64::from(pred == t.top1[s]);
                        *kl += kl_from_logits(&t.probs[s * cl..(s + 1) * cl], row);
                    }
                }
            }
            n_all += b.n as u64;
            labelled += b.labels.iter().filter(|&&l| l != NO_LABEL).count() as u64;
        }
        let n = n_all.max(1) as f64;
        Ok(sums
            .into_iter()
            .zip(cosines)
            .zip(&projectors)
            .map(|(((correct, agree, kl), cos), p)| EvalReport {
                accuracy: (labelled > 0).then(|| correct as f64 / labelled as f64),
                agreement: self.teacher.as_ref().map(|_| agree as f64 / n),
                kl: self.teacher.as_ref().map(|_| kl / n),
                kl_vs: self.teacher.as_ref().map(|t| t.reference),
                feature_cosine: (p.is_some() && self.features.is_some()).then_some(cos / n),
                samples: n_all,
            })
            .collect())
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `KL(p ‖ softmax(logits))` in nats, in f64.
pub fn kl_from_logits(p: &[f32], logits: &[f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    p.iter()
        .zip(logits)
        .filter(|(p, _)| **p > 0.0)
        .map(|(&p, &l)| {
            let p = p as f64;
            p * (p.ln() - (l as f64 - lse))
        })
        .sum()
}

/// The teacher's top-1 and distribution at τ = 1 of every sample of a test store (a store
/// without soft labels has none: its views alone are replayed, for the feature cosine).
fn teacher_test(
    store: &LabelStore,
    decoded: &label_store::DecodedEpoch,
    n: u32,
    classes: usize,
) -> Result<TeacherTest, TrainError> {
    let mut top1 = Vec::with_capacity(n as usize);
    let mut probs = vec![0f32; n as usize * classes];
    let mut rec = formats::Record::empty(0);
    for s in 0..n {
        decoded.get_into(s, &mut rec)?;
        top1.push(rec.label.indices[0]);
        let i = s as usize;
        rec.label
            .dense_into(1.0, &mut probs[i * classes..(i + 1) * classes]);
    }
    let reference = if store.manifest.k >= store.manifest.classes {
        KlReference::Full
    } else {
        KlReference::TopK
    };
    Ok(TeacherTest {
        top1,
        classes,
        probs,
        reference,
    })
}

/// The recipe of a teacher test store, when it is one the evaluator can replay (`none` or a
/// centre crop); an error naming the store otherwise.
fn eval_recipe(store: &LabelStore) -> Result<Recipe, TrainError> {
    let recipe: Recipe = serde_json::from_value(store.manifest.recipe.clone()).map_err(|e| {
        TrainError::Mismatch(format!(
            "{}: field recipe is not a recipe: {e}",
            store.dir.display()
        ))
    })?;
    if recipe.is_random() {
        return Err(TrainError::Mismatch(format!(
            "{}: recipe {:?} augments; teacher test labels must be made without augmentation (recipe none or center)",
            store.dir.display(),
            recipe.name
        )));
    }
    Ok(recipe)
}

/// Evaluates the student `ck` holds on `data` (resized to its input, with its normalization)
/// on `device`, and against `labels` (a `--split test --aug none` store) when given.
pub fn evaluate_checkpoint(
    ck: &Checkpoint,
    data: Arc<dyn Dataset>,
    labels: Option<Arc<LabelStore>>,
    batch: usize,
    threads: usize,
    crop_pct: f64,
    device: &Device,
) -> Result<EvalReport, TrainError> {
    let input = ck.meta.input;
    input
        .check_data(data.as_ref(), "the evaluation data")
        .map_err(|e| TrainError::Mismatch(format!("{}: {e}", ck.path.display())))?;
    if let Some(store) = &labels
        && !data.labelled()
        && !store.manifest.has_labels()
    {
        return Err(TrainError::config(format!(
            "{} holds no soft labels and the evaluation data no hard labels: nothing to measure \
             (evaluate against a store with the teacher's labels, or labelled data)",
            store.dir.display()
        )));
    }
    let ev = Evaluator::new(
        data,
        labels,
        EvalView {
            size: (input.width as u32, input.height as u32),
            mean: &ck.meta.mean,
            std: &ck.meta.std,
            crop_pct,
        },
        batch,
        threads,
    )?;
    ev.evaluate(&ck.student(device)?, device)
}
