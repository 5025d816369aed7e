//! The losses of the KD literature, each a small pure function of tensors.
//!
//! Teacher distributions arrive as dense probabilities at the temperature in use, rebuilt from
//! the stored top-k exactly as FORMAT.md §5 says (`SoftLabel::dense_into`). Targets for
//! cross-entropy are dense too: one-hot, or mixed (λ·y_i + (1−λ)·y_j) for mixup/cutmix records.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

/// Mean over the batch of `−Σ_c y_c · log softmax(s)_c`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (log_softmax(logits, 1) * targets).sum_dim(1).mean().neg()
}

/// [`cross_entropy`] over the `rows` rows of `targets` that hold a hard label (the others are
/// zeros: records of unlabelled samples): their sum over `rows`. With every row labelled, the
/// plain mean (the same bits); with none, zero.
pub fn cross_entropy_rows(logits: Tensor<2>, targets: Tensor<2>, rows: usize) -> Tensor<1> {
    let n = logits.dims()[0];
    if rows == n {
        return cross_entropy(logits, targets);
    }
    let summed = (log_softmax(logits, 1) * targets).sum_dim(1).sum().neg();
    summed.div_scalar(rows.max(1) as f32)
}

/// Mean over the batch of `KL(p_t ‖ softmax(s/τ)) = Σ_c p_t (ln p_t − log softmax(s/τ))`.
/// Classes with `p_t = 0` contribute nothing.
pub fn kl_teacher_student(logits: Tensor<2>, teacher: Tensor<2>, tau: f32) -> Tensor<1> {
    let log_q = log_softmax(logits.div_scalar(tau), 1);
    let log_p = teacher.clone().clamp_min(1e-30).log();
    (teacher * (log_p - log_q)).sum_dim(1).mean()
}

/// How a student's projected features are compared with the teacher's stored ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureLoss {
    /// Mean over rows of `1 − cos(p, t)`, `cos = Σ p·t / sqrt(max(Σp² · Σt², ε²))`, ε = 1e-8.
    Cosine,
    /// PyTorch's `smooth_l1_loss` (β = 1), the mean over every value.
    SmoothL1,
    /// Mean squared error over every value.
    Mse,
}

impl FeatureLoss {
    /// The name the CLI and configs use.
    pub fn name(self) -> &'static str {
        match self {
            FeatureLoss::Cosine => "cosine",
            FeatureLoss::SmoothL1 => "smooth-l1",
            FeatureLoss::Mse => "mse",
        }
    }
}

/// The feature term between `projected` student features and `teacher` features (`[n, d]`).
pub fn feature_loss(projected: Tensor<2>, teacher: Tensor<2>, kind: FeatureLoss) -> Tensor<1> {
    match kind {
        FeatureLoss::Cosine => {
            let dot = (projected.clone() * teacher.clone()).sum_dim(1);
            let pp = projected.powi_scalar(2).sum_dim(1);
            let tt = teacher.powi_scalar(2).sum_dim(1);
            let cos = dot / (pp * tt).clamp_min(1e-16).sqrt();
            cos.neg().add_scalar(1.0).mean()
        }
        FeatureLoss::SmoothL1 => {
            let d = (projected - teacher).abs();
            // 0.5·d² where d < 1, d − 0.5 elsewhere.
            let small = d.clone().lower_elem(1.0);
            let quad = d.clone().powi_scalar(2).mul_scalar(0.5);
            let lin = d.sub_scalar(0.5);
            lin.mask_where(small, quad).mean()
        }
        FeatureLoss::Mse => (projected - teacher).powi_scalar(2).mean(),
    }
}

/// Which loss a student trains with.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "name")]
pub enum LossKind {
    /// Cross-entropy on (mixed) hard labels.
    Ce,
    /// Hinton: `(1 − w)·CE + w·τ²·KL(p_t^τ ‖ p_s^τ)`.
    Kd { weight: f32, tau: f32 },
    /// USI: `CE + w·KL(p_t ‖ p_s)` at τ = 1 (w = 5 by default); `kd_only` drops the CE term.
    Usi { weight: f32, kd_only: bool },
    /// Early-stopped KD: `kd` for epochs below `until`, then `ce`.
    Eskd { weight: f32, tau: f32, until: u32 },
    /// No label term: the feature term alone (`--feature-weight`), as for a teacher that only
    /// embeds.
    Features,
}

impl LossKind {
    /// Checks the hyper-parameters, naming the field that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        let kd = |weight: f32, tau: f32| {
            if !(tau > 0.0 && tau.is_finite()) {
                return Err(format!("`temperature` {tau} must be > 0"));
            }
            if !(0.0..=1.0).contains(&weight) {
                return Err(format!("`kd_weight` {weight} must lie in [0, 1] for kd"));
            }
            Ok(())
        };
        match *self {
            LossKind::Ce | LossKind::Features => Ok(()),
            LossKind::Kd { weight, tau } | LossKind::Eskd { weight, tau, .. } => kd(weight, tau),
            LossKind::Usi { weight, .. } => {
                if weight >= 0.0 && weight.is_finite() {
                    Ok(())
                } else {
                    Err(format!("`kd_weight` {weight} must be ≥ 0 for usi"))
                }
            }
        }
    }

    /// Whether the loss has a cross-entropy term on hard labels in any of `epochs` epochs:
    /// `ce`, `kd` below weight 1, `usi` without `kd_only`, `eskd` (its kd epochs below weight 1,
    /// or any epoch from `until` on). Data without hard labels trains only the others.
    pub fn needs_hard_labels(&self, epochs: u32) -> bool {
        match *self {
            LossKind::Ce => true,
            LossKind::Kd { weight, .. } => weight < 1.0,
            LossKind::Usi { kd_only, .. } => !kd_only,
            LossKind::Eskd { weight, until, .. } => weight < 1.0 || until < epochs,
            LossKind::Features => false,
        }
    }

    /// The temperature the teacher distribution is needed at in `epoch`, or `None` when the
    /// loss uses no teacher then.
    pub fn teacher_tau(&self, epoch: u32) -> Option<f32> {
        match *self {
            LossKind::Ce => None,
            LossKind::Kd { tau, .. } => Some(tau),
            LossKind::Usi { .. } => Some(1.0),
            LossKind::Eskd { tau, until, .. } => (epoch < until).then_some(tau),
            LossKind::Features => None,
        }
    }

    /// The loss of one batch in `epoch`: `targets` dense hard (mixed) labels, `teacher` the
    /// teacher distribution at [`LossKind::teacher_tau`] (ignored when that is `None`).
    pub fn loss(
        &self,
        epoch: u32,
        logits: Tensor<2>,
        targets: Tensor<2>,
        teacher: Option<Tensor<2>>,
    ) -> Tensor<1> {
        let n = logits.dims()[0];
        self.loss_rows(epoch, logits, targets, n, teacher)
    }

    /// [`LossKind::loss`] of a batch in which only `rows` records have a hard label (the rest
    /// of `targets` are zero rows): every cross-entropy term averages over those records
    /// ([`cross_entropy_rows`]), the teacher terms over all.
    pub fn loss_rows(
        &self,
        epoch: u32,
        logits: Tensor<2>,
        targets: Tensor<2>,
        rows: usize,
        teacher: Option<Tensor<2>>,
    ) -> Tensor<1> {
        let cross_entropy = |logits, targets| cross_entropy_rows(logits, targets, rows);
        let teacher = || {
            teacher
                .clone()
                .expect("a teacher distribution for this loss")
        };
        match *self {
            LossKind::Ce => cross_entropy(logits, targets),
            LossKind::Kd { weight, tau } => kd(logits, targets, rows, teacher(), weight, tau),
            LossKind::Eskd { weight, tau, until } => {
                if epoch < until {
                    kd(logits, targets, rows, teacher(), weight, tau)
                } else {
                    cross_entropy(logits, targets)
                }
            }
            LossKind::Usi { weight, kd_only } => {
                let kl = kl_teacher_student(logits.clone(), teacher(), 1.0).mul_scalar(weight);
                if kd_only {
                    kl
                } else {
                    cross_entropy(logits, targets) + kl
                }
            }
            // Zero that still depends on the logits, so the graph reaches every parameter.
            LossKind::Features => logits.sum().mul_scalar(0.0),
        }
    }
}

/// `(1 − w)·CE + w·τ²·KL(p_t^τ ‖ p_s^τ)`, the CE over the `rows` records with a hard label.
pub fn kd(
    logits: Tensor<2>,
    targets: Tensor<2>,
    rows: usize,
    teacher: Tensor<2>,
    w: f32,
    tau: f32,
) -> Tensor<1> {
    let ce = cross_entropy_rows(logits.clone(), targets, rows).mul_scalar(1.0 - w);
    ce + kl_teacher_student(logits, teacher, tau).mul_scalar(w * tau * tau)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(v: &[f32], c: usize) -> Tensor<2> {
        let dev = Device::flex();
        Tensor::<2>::from_data(TensorData::new(v.to_vec(), [v.len() / c, c]), &dev)
    }

    fn scalar(x: Tensor<1>) -> f64 {
        f64::from(x.into_data().try_to_vec::<f32>().unwrap()[0])
    }

    // Hand-computed (Python, float64): logits [1, 2, 3], teacher p = [0.2, 0.3, 0.5].
    const CE: f64 = 0.407_605_964_444_380_1;
    const CE_MIXED: f64 = 1.007_605_964_444_38;
    const KL1: f64 = 0.077_952_950_379_806_6;
    const KL4: f64 = 0.014_685_070_341_104_639;

    #[test]
    fn cross_entropy_by_hand() {
        let s = t(&[1.0, 2.0, 3.0], 3);
        assert!((scalar(cross_entropy(s.clone(), t(&[0.0, 0.0, 1.0], 3))) - CE).abs() < 1e-6);
        assert!((scalar(cross_entropy(s, t(&[0.3, 0.0, 0.7], 3))) - CE_MIXED).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_covers_only_labelled_rows() {
        // Row 2 has no hard label (zeros): the CE is row 1's alone, not halved.
        let s = || t(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0], 3);
        let y = || t(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0], 3);
        assert!((scalar(cross_entropy_rows(s(), y(), 1)) - CE).abs() < 1e-6);
        assert!((scalar(cross_entropy(s(), y())) - CE / 2.0).abs() < 1e-6);
        assert_eq!(scalar(cross_entropy_rows(s(), t(&[0.0; 6], 3), 0)), 0.0);
        // kd's CE term likewise; its KL term averages over both rows.
        let p = t(&[0.2, 0.3, 0.5, 0.2, 0.3, 0.5], 3);
        let kd = LossKind::Kd {
            weight: 0.5,
            tau: 1.0,
        };
        let kl = scalar(kl_teacher_student(s(), p.clone(), 1.0));
        let got = scalar(kd.loss_rows(0, s(), y(), 1, Some(p)));
        assert!((got - (0.5 * CE + 0.5 * kl)).abs() < 1e-5, "{got}");
    }

    #[test]
    fn losses_that_need_hard_labels() {
        let kd = |weight| LossKind::Kd { weight, tau: 4.0 };
        let usi = |kd_only| LossKind::Usi {
            weight: 5.0,
            kd_only,
        };
        let eskd = |weight, until| LossKind::Eskd {
            weight,
            tau: 4.0,
            until,
        };
        let needs: Vec<bool> = [
            LossKind::Ce,
            kd(0.9),
            kd(1.0),
            usi(false),
            usi(true),
            eskd(1.0, 10),
            eskd(1.0, 5),
            eskd(0.9, 10),
        ]
        .iter()
        .map(|l| l.needs_hard_labels(10))
        .collect();
        assert_eq!(needs, [true, true, false, true, false, false, true, true]);
    }

    #[test]
    fn kl_and_kd_by_hand() {
        let s = || t(&[1.0, 2.0, 3.0], 3);
        let p = || t(&[0.2, 0.3, 0.5], 3);
        let y = || t(&[0.0, 0.0, 1.0], 3);
        assert!((scalar(kl_teacher_student(s(), p(), 1.0)) - KL1).abs() < 1e-6);
        assert!((scalar(kl_teacher_student(s(), p(), 4.0)) - KL4).abs() < 1e-6);
        let want = 0.1 * CE + 0.9 * 16.0 * KL4;
        let kd = LossKind::Kd {
            weight: 0.9,
            tau: 4.0,
        };
        assert!((scalar(kd.loss(0, s(), y(), Some(p()))) - want).abs() < 1e-5);
        let usi = LossKind::Usi {
            weight: 5.0,
            kd_only: false,
        };
        assert!((scalar(usi.loss(0, s(), y(), Some(p()))) - (CE + 5.0 * KL1)).abs() < 1e-5);
        let only = LossKind::Usi {
            weight: 5.0,
            kd_only: true,
        };
        assert!((scalar(only.loss(0, s(), y(), Some(p()))) - 5.0 * KL1).abs() < 1e-5);
        let eskd = LossKind::Eskd {
            weight: 0.9,
            tau: 4.0,
            until: 2,
        };
        assert!((scalar(eskd.loss(1, s(), y(), Some(p()))) - want).abs() < 1e-5);
        assert!((scalar(eskd.loss(2, s(), y(), None)) - CE).abs() < 1e-6);
        assert_eq!(eskd.teacher_tau(2), None);
        assert_eq!(usi.teacher_tau(0), Some(1.0));
    }

    #[test]
    fn batch_means_and_zero_teacher_mass() {
        // Two rows: the second has a teacher with a zero entry, which contributes nothing.
        let s = t(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], 3);
        let p = t(&[0.2, 0.3, 0.5, 0.0, 0.5, 0.5], 3);
        let row2 = 0.5f64 * (0.5f64.ln() + 3f64.ln()) * 2.0;
        let got = scalar(kl_teacher_student(s, p, 1.0));
        assert!((got - (KL1 + row2) / 2.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn hyper_parameters_are_checked() {
        assert!(
            LossKind::Kd {
                weight: 1.5,
                tau: 4.0
            }
            .validate()
            .unwrap_err()
            .contains("`kd_weight`")
        );
        assert!(
            LossKind::Kd {
                weight: 0.5,
                tau: 0.0
            }
            .validate()
            .unwrap_err()
            .contains("`temperature`")
        );
        assert!(
            LossKind::Usi {
                weight: -1.0,
                kd_only: false
            }
            .validate()
            .is_err()
        );
        assert!(
            LossKind::Usi {
                weight: 5.0,
                kd_only: false
            }
            .validate()
            .is_ok()
        );
    }

    /// The cases `python/loss_cases.json` holds for `distill.torch`'s losses
    /// (`python/test_torch.py` checks PyTorch against them): inputs drawn here, values computed
    /// by these losses. The file must match what the losses compute now, so it cannot go stale;
    /// `DISTILL_WRITE_LOSS_CASES=1` rewrites it after a deliberate change.
    #[test]
    fn python_loss_cases_match() {
        let (n, c) = (6usize, 7usize);
        let mut x = 0x2545_f491_u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            f64::from(x) / f64::from(u32::MAX)
        };
        let mut logits: Vec<f32> = (0..n * c).map(|_| (next() * 12.0 - 6.0) as f32).collect();
        logits[c + 2] = 30.0; // a confident row: log-softmax must not overflow
        let mut hard = vec![0.0f32; n * c];
        let mut teacher = vec![0.0f32; n * c];
        for r in 0..n {
            hard[r * c + r % c] = if r % 2 == 0 { 1.0 } else { 0.3 };
            if r % 2 == 1 {
                hard[r * c + (r + 3) % c] = 0.7;
            }
            let e: Vec<f64> = (0..c).map(|_| (next() * 6.0).exp()).collect();
            let z: f64 = e.iter().sum();
            for k in 0..c {
                teacher[r * c + k] = (e[k] / z) as f32;
            }
        }
        // A teacher row with zero mass on some classes (a top-k store at k < classes, τ → 0).
        teacher[3 * c..4 * c].copy_from_slice(&[0.0, 0.6, 0.0, 0.4, 0.0, 0.0, 0.0]);
        let losses = [
            ("ce", LossKind::Ce, 0.0f32, 0.0f32, false),
            (
                "kd",
                LossKind::Kd {
                    weight: 0.9,
                    tau: 4.0,
                },
                0.9,
                4.0,
                false,
            ),
            (
                "kd",
                LossKind::Kd {
                    weight: 0.5,
                    tau: 2.0,
                },
                0.5,
                2.0,
                false,
            ),
            (
                "kd",
                LossKind::Kd {
                    weight: 1.0,
                    tau: 1.0,
                },
                1.0,
                1.0,
                false,
            ),
            (
                "usi",
                LossKind::Usi {
                    weight: 5.0,
                    kd_only: false,
                },
                5.0,
                1.0,
                false,
            ),
            (
                "usi",
                LossKind::Usi {
                    weight: 2.0,
                    kd_only: true,
                },
                2.0,
                1.0,
                true,
            ),
        ];
        let cases: Vec<serde_json::Value> = losses
            .iter()
            .map(|&(name, kind, weight, tau, kd_only)| {
                let v = scalar(kind.loss(0, t(&logits, c), t(&hard, c), Some(t(&teacher, c))));
                serde_json::json!({"loss": name, "weight": weight, "temperature": tau,
                                   "kd_only": kd_only, "value": v})
            })
            .collect();
        let rows = |v: &[f32], c: usize| v.chunks(c).map(<[f32]>::to_vec).collect::<Vec<_>>();
        // The feature term: student features [n, ps] through a linear projector (W [ps, d] as
        // burn stores it, b [d]) against teacher features [n, d], one row at zero (cosine's ε).
        let (ps, d) = (5usize, 4usize);
        let mut draw = |len: usize, scale: f64| -> Vec<f32> {
            (0..len).map(|_| ((next() - 0.5) * scale) as f32).collect()
        };
        let student = draw(n * ps, 4.0);
        let w = draw(ps * d, 1.0);
        let bias = draw(d, 0.5);
        let mut tf = draw(n * d, 6.0);
        tf[2 * d..3 * d].fill(0.0);
        let projected = t(&student, ps)
            .matmul(t(&w, d))
            .add(t(&bias, d).reshape([1, d]));
        let feature_cases: Vec<serde_json::Value> =
            [FeatureLoss::Cosine, FeatureLoss::SmoothL1, FeatureLoss::Mse]
                .into_iter()
                .map(|k| {
                    let v = scalar(feature_loss(projected.clone(), t(&tf, d), k));
                    serde_json::json!({"kind": k.name(), "value": v})
                })
                .collect();
        let want = serde_json::json!({
            "comment": "written by student-train's loss::tests::python_loss_cases_match: \
                        distill train's losses (burn, f32) on these inputs",
            "logits": rows(&logits, c), "hard": rows(&hard, c), "teacher": rows(&teacher, c),
            "cases": cases,
            "student_features": rows(&student, ps), "projector_weight": rows(&w, d),
            "projector_bias": bias, "teacher_features": rows(&tf, d),
            "feature_cases": feature_cases,
        });
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../python/loss_cases.json");
        if std::env::var_os("DISTILL_WRITE_LOSS_CASES").is_some() {
            let text = serde_json::to_string_pretty(&want).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
        let text = std::fs::read_to_string(&path).expect("python/loss_cases.json");
        let have: serde_json::Value = serde_json::from_str(&text).unwrap();
        let bias_rows = [bias.clone()].concat();
        for (key, v) in [
            ("logits", &logits),
            ("hard", &hard),
            ("teacher", &teacher),
            ("student_features", &student),
            ("projector_weight", &w),
            ("teacher_features", &tf),
        ] {
            // As f32: serde_json's parsing of f64 text may be off by an ulp of f64.
            let got: Vec<f32> = have[key]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter())
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(&got, v, "{key} of {}", path.display());
        }
        let got_bias: Vec<f32> = have["projector_bias"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got_bias, bias_rows);
        for (cases, keys) in [
            ("cases", &["loss", "weight", "temperature", "kd_only"][..]),
            ("feature_cases", &["kind"][..]),
        ] {
            let (have, want) = (
                have[cases].as_array().unwrap(),
                want[cases].as_array().unwrap(),
            );
            assert_eq!(have.len(), want.len());
            for (h, w) in have.iter().zip(want) {
                let (a, b) = (h["value"].as_f64().unwrap(), w["value"].as_f64().unwrap());
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{h} vs {w}");
                for key in keys {
                    assert_eq!(h[key], w[key], "{h} vs {w}");
                }
            }
        }
    }
}
