//! Top-k soft labels: what the store keeps of one teacher output, and how the teacher
//! distribution is rebuilt from it at any temperature.
//!
//! A teacher gives `C` logits `z`. The store keeps the `k` largest, shifted so the largest is 0
//! (softmax does not change under a shift), and two numbers that describe the other `n = C − k`
//! classes, the *tail*: its equivalent logit at τ = 1 and at τ = 4,
//!
//! ```text
//! t(τ) = τ · ( ln Σ_{j ∈ tail} exp(z_j / τ) − ln n ) − z_max
//! ```
//!
//! i.e. the one logit that, given to all `n` tail classes, carries exactly the tail's probability
//! mass at that temperature. `t(1)` makes the full log-sum-exp at τ = 1 (and so the residual mass
//! outside the top-k) exact; `t(4)` makes the tail mass exact at the usual KD temperature. For other
//! temperatures `t(τ)` is interpolated linearly in `1/τ`, which is exact when the tail logits are
//! Gaussian (`t(τ) = μ + σ²/(2τ)`), and clamped so no tail class outranks the k-th class. The tail
//! classes share their mass equally: their individual logits are not stored, which is the one
//! approximation of the scheme (its error is measured and reported by `inspect` and BENCHMARKS.md).

use crate::error::FormatError;

/// The two temperatures at which the tail mass is stored exactly.
pub const TAIL_TEMPERATURES: [f32; 2] = [1.0, 4.0];

/// Smallest tail logit kept (relative to the top). `exp(-60000)` is 0 in any float, so clamping
/// to it loses nothing and keeps every stored number finite.
pub const TAIL_FLOOR: f32 = -60000.0;

/// The top-k of one teacher output, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftLabel {
    /// Class indices of the k largest logits, largest first (ties: lower index first).
    pub indices: Vec<u32>,
    /// Those logits minus the largest: `logits[0] == 0`, non-increasing, all ≤ 0.
    pub logits: Vec<f32>,
    /// Equivalent tail logits `t(1)` and `t(4)` relative to the top (see the module docs).
    /// Both 0 when `k` equals the class count (there is no tail).
    pub tail: [f32; 2],
}

/// The teacher distribution rebuilt at one temperature: `top[i]` is the probability of
/// `indices[i]`, every one of the `tail_count` other classes has `tail_each`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconstruction {
    pub top: Vec<f32>,
    pub tail_each: f32,
    pub tail_count: usize,
}

impl SoftLabel {
    /// Keeps the top `k` of a teacher's full logits and summarizes the tail.
    ///
    /// Errors on `k == 0`, `k` larger than the class count, and NaN or infinite logits (naming the
    /// class index).
    pub fn from_logits(logits: &[f32], k: usize) -> Result<Self, FormatError> {
        let classes = logits.len();
        if k == 0 || k > classes {
            return Err(FormatError::invalid(
                "k",
                format!("k = {k} must be between 1 and the class count {classes}"),
            ));
        }
        if let Some((index, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(FormatError::NonFinite {
                field: "logits",
                index,
                value,
            });
        }
        // Insertion into a short sorted list: C·k worst case, but almost every logit fails the
        // first comparison against the current k-th value.
        let mut top: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
        for (j, &v) in logits.iter().enumerate() {
            if top.len() == k && v <= top[k - 1].0 {
                continue;
            }
            let pos = top.iter().position(|&(u, _)| u < v).unwrap_or(top.len());
            top.insert(pos, (v, j as u32));
            top.truncate(k);
        }
        let z0 = top[0].0;
        let indices: Vec<u32> = top.iter().map(|&(_, j)| j).collect();
        let rel: Vec<f32> = top.iter().map(|&(v, _)| v - z0).collect();

        let n = classes - k;
        let tail = if n == 0 {
            [0.0, 0.0]
        } else {
            let mut in_top = indices.clone();
            in_top.sort_unstable();
            let (mut s1, mut s4) = (0.0f64, 0.0f64);
            let mut next = 0;
            for (j, &v) in logits.iter().enumerate() {
                if next < in_top.len() && in_top[next] as usize == j {
                    next += 1;
                    continue;
                }
                let d = f64::from(v - z0);
                s1 += d.exp();
                s4 += (d / 4.0).exp();
            }
            let ln_n = (n as f64).ln();
            let t1 = (s1.ln() - ln_n) as f32;
            let t4 = (4.0 * (s4.ln() - ln_n)) as f32;
            [t1.max(TAIL_FLOOR), t4.max(TAIL_FLOOR)]
        };
        Ok(SoftLabel {
            indices,
            logits: rel,
            tail,
        })
    }

    /// The label of a record in a store without soft labels (an embedding-only teacher's):
    /// no class kept.
    pub fn none() -> Self {
        SoftLabel {
            indices: Vec::new(),
            logits: Vec::new(),
            tail: [0.0; 2],
        }
    }

    /// Number of stored classes.
    pub fn k(&self) -> usize {
        self.indices.len()
    }

    /// Checks the invariants a stored label must hold for `classes` classes.
    pub fn validate(&self, classes: usize) -> Result<(), FormatError> {
        let k = self.indices.len();
        if k == 0 || k > classes {
            return Err(FormatError::invalid(
                "k",
                format!("k = {k} must be between 1 and the class count {classes}"),
            ));
        }
        if self.logits.len() != k {
            return Err(FormatError::invalid(
                "logits",
                format!("{} values for {k} indices", self.logits.len()),
            ));
        }
        for (i, &c) in self.indices.iter().enumerate() {
            if c as usize >= classes {
                return Err(FormatError::invalid(
                    format!("indices[{i}]"),
                    format!("class {c} is not below the class count {classes}"),
                ));
            }
            if self.indices[..i].contains(&c) {
                return Err(FormatError::invalid(
                    format!("indices[{i}]"),
                    format!("class {c} appears twice"),
                ));
            }
        }
        for (i, &v) in self.logits.iter().enumerate() {
            if !v.is_finite() {
                return Err(FormatError::NonFinite {
                    field: "logits",
                    index: i,
                    value: v,
                });
            }
            let prev = if i == 0 { 0.0 } else { self.logits[i - 1] };
            if (i == 0 && v != 0.0) || v > prev {
                return Err(FormatError::invalid(
                    format!("logits[{i}]"),
                    "top-k logits must start at 0 and not increase",
                ));
            }
        }
        for (i, &t) in self.tail.iter().enumerate() {
            if !t.is_finite() {
                return Err(FormatError::NonFinite {
                    field: "tail",
                    index: i,
                    value: t,
                });
            }
        }
        Ok(())
    }

    /// Equivalent logit of every tail class at temperature `tau` (relative to the top), or `None`
    /// when there is no tail.
    pub fn tail_logit(&self, classes: usize, tau: f32) -> Option<f32> {
        if classes <= self.k() {
            return None;
        }
        let [t1, t4] = self.tail;
        // t(τ) = a + b/τ through (1, t1) and (1/4, t4).
        let b = (t1 - t4) * (4.0 / 3.0);
        let a = t1 - b;
        let t = if tau == 1.0 {
            t1
        } else if tau == 4.0 {
            t4
        } else {
            a + b / tau
        };
        Some(t.min(*self.logits.last().expect("k >= 1")))
    }

    /// Full log-sum-exp of the teacher logits at τ = 1, relative to the top logit.
    pub fn log_sum_exp(&self, classes: usize) -> f32 {
        let mut z: f64 = self.logits.iter().map(|&l| f64::from(l).exp()).sum();
        if let Some(t) = self.tail_logit(classes, 1.0) {
            z += (classes - self.k()) as f64 * f64::from(t).exp();
        }
        z.ln() as f32
    }

    /// Rebuilds the teacher distribution at temperature `tau` into `top` (length k); returns the
    /// probability of each tail class.
    pub fn probabilities_into(&self, classes: usize, tau: f32, top: &mut [f32]) -> f32 {
        debug_assert_eq!(top.len(), self.k());
        let inv = 1.0 / f64::from(tau);
        // All exponents are ≤ 0: logits[0] = 0 is the maximum and the tail is clamped below the
        // k-th logit, so nothing overflows.
        let mut z = 0.0f64;
        for (p, &l) in top.iter_mut().zip(&self.logits) {
            let e = (f64::from(l) * inv).exp();
            *p = e as f32;
            z += e;
        }
        let tail_e = match self.tail_logit(classes, tau) {
            Some(t) => {
                let e = (f64::from(t) * inv).exp();
                z += (classes - self.k()) as f64 * e;
                e
            }
            None => 0.0,
        };
        let scale = 1.0 / z;
        for p in top.iter_mut() {
            *p = (f64::from(*p) * scale) as f32;
        }
        (tail_e * scale) as f32
    }

    /// Rebuilds the teacher distribution at temperature `tau`.
    pub fn probabilities(&self, classes: usize, tau: f32) -> Reconstruction {
        let mut top = vec![0.0; self.k()];
        let tail_each = self.probabilities_into(classes, tau, &mut top);
        Reconstruction {
            top,
            tail_each,
            tail_count: classes.saturating_sub(self.k()),
        }
    }

    /// Writes the rebuilt distribution over all classes at temperature `tau` into `out`.
    pub fn dense_into(&self, tau: f32, out: &mut [f32]) {
        let classes = out.len();
        let mut top = [0.0f32; 64];
        let mut heap;
        let top: &mut [f32] = if self.k() <= top.len() {
            &mut top[..self.k()]
        } else {
            heap = vec![0.0; self.k()];
            &mut heap
        };
        let tail_each = self.probabilities_into(classes, tau, top);
        out.fill(tail_each);
        for (&c, &p) in self.indices.iter().zip(top.iter()) {
            out[c as usize] = p;
        }
    }

    /// Probability mass of the top-k classes and entropy (nats) of the rebuilt distribution, both
    /// at τ = 1, computed in one pass without allocating (the writer calls it for every record).
    pub fn mass_and_entropy(&self, classes: usize) -> (f64, f64) {
        let n = classes.saturating_sub(self.k()) as f64;
        // Σ exp(l) and Σ l·exp(l) over the top-k, then the tail's n equal terms:
        // H = ln Z − Σ p·l, with p = exp(l)/Z.
        let (mut z, mut zl) = (0.0f64, 0.0f64);
        for &l in &self.logits {
            let l = f64::from(l);
            let e = l.exp();
            z += e;
            zl += e * l;
        }
        let top = z;
        if let Some(t) = self.tail_logit(classes, 1.0) {
            let t = f64::from(t);
            let e = n * t.exp();
            z += e;
            zl += e * t;
        }
        (top / z, z.ln() - zl / z)
    }

    /// Probability mass of the top-k classes at temperature `tau`.
    pub fn top_mass(&self, classes: usize, tau: f32) -> f32 {
        let r = self.probabilities(classes, tau);
        r.top.iter().sum()
    }

    /// Entropy (nats) of the rebuilt distribution at τ = 1.
    pub fn entropy(&self, classes: usize) -> f64 {
        self.mass_and_entropy(classes).1
    }

    /// KL(full softmax ‖ rebuilt distribution) at temperature `tau`, in nats: the reconstruction
    /// error of this label against the logits it was made from.
    pub fn kl_from_full(&self, full_logits: &[f32], tau: f32) -> f64 {
        let classes = full_logits.len();
        let inv = 1.0 / f64::from(tau);
        let zmax = full_logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lse = full_logits
            .iter()
            .map(|&v| (f64::from(v - zmax) * inv).exp())
            .sum::<f64>()
            .ln();
        let mut q = vec![0.0f32; classes];
        self.dense_into(tau, &mut q);
        full_logits
            .iter()
            .zip(&q)
            .map(|(&v, &qj)| {
                let lp = f64::from(v - zmax) * inv - lse;
                let p = lp.exp();
                if p == 0.0 {
                    0.0
                } else {
                    p * (lp - f64::from(qj).max(f64::MIN_POSITIVE).ln())
                }
            })
            .sum::<f64>()
            .max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax(z: &[f32], tau: f32) -> Vec<f64> {
        let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let e: Vec<f64> = z
            .iter()
            .map(|&v| (f64::from(v - m) / f64::from(tau)).exp())
            .collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn top_k_order_and_ties() {
        let z = [1.0, 3.0, 3.0, -2.0, 0.5];
        let s = SoftLabel::from_logits(&z, 3).unwrap();
        assert_eq!(s.indices, vec![1, 2, 0]);
        assert_eq!(s.logits, vec![0.0, 0.0, -2.0]);
        s.validate(5).unwrap();
    }

    #[test]
    fn tail_mass_exact_at_1_and_4() {
        // Hand-computed: tail = {z3 = -2, z4 = 0.5}, top = 3.
        let z = [1.0, 3.0, 3.0, -2.0, 0.5];
        let s = SoftLabel::from_logits(&z, 3).unwrap();
        let t1 = ((-5.0f64).exp() + (-2.5f64).exp()).ln() - 2f64.ln();
        assert!((f64::from(s.tail[0]) - t1).abs() < 1e-6);
        for tau in TAIL_TEMPERATURES {
            let p = softmax(&z, tau);
            let r = s.probabilities(5, tau);
            let tail_true = p[3] + p[4];
            assert!(
                (f64::from(r.tail_each) * 2.0 - tail_true).abs() < 1e-6,
                "tau {tau}"
            );
            assert!((f64::from(r.top[0]) - p[1]).abs() < 1e-6);
            assert!((f64::from(r.top[2]) - p[0]).abs() < 1e-6);
        }
        // Full log-sum-exp at τ = 1 relative to the top.
        let lse: f64 = z
            .iter()
            .map(|&v| f64::from(v - 3.0).exp())
            .sum::<f64>()
            .ln();
        assert!((f64::from(s.log_sum_exp(5)) - lse).abs() < 1e-6);
    }

    #[test]
    fn no_tail_is_exact_at_every_temperature() {
        let z = [0.3, -1.0, 2.0, 0.0];
        let s = SoftLabel::from_logits(&z, 4).unwrap();
        for tau in [0.5, 1.0, 2.0, 7.0] {
            assert!(s.kl_from_full(&z, tau) < 1e-6);
        }
    }

    #[test]
    fn gaussian_tail_is_interpolated_well() {
        // Deterministic pseudo-Gaussian tail: the 1/τ interpolation should be close at τ = 2.
        let mut z: Vec<f32> = (0..1000)
            .map(|i| {
                let u = (i as f32 + 0.5) / 1000.0;
                // inverse-CDF-ish spread, symmetric
                1.5 * (u / (1.0 - u)).ln() / 1.7
            })
            .collect();
        z[7] = 12.0;
        let s = SoftLabel::from_logits(&z, 10).unwrap();
        let exact = s.kl_from_full(&z, 4.0);
        let between = s.kl_from_full(&z, 2.0);
        assert!(exact < 0.2, "{exact}");
        assert!(between < 0.2, "{between}");
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            SoftLabel::from_logits(&[1.0, f32::NAN], 1),
            Err(FormatError::NonFinite { index: 1, .. })
        ));
        assert!(SoftLabel::from_logits(&[1.0, 2.0], 3).is_err());
        assert!(SoftLabel::from_logits(&[1.0, 2.0], 0).is_err());
        let mut s = SoftLabel::from_logits(&[1.0, 2.0, 3.0], 2).unwrap();
        assert!(s.validate(2).is_err(), "index 2 out of range for 2 classes");
        s.logits[1] = 0.5;
        assert!(s.validate(3).is_err(), "increasing logits");
    }

    #[test]
    fn mass_and_entropy_by_hand() {
        // Two classes stored of three, no tail spread: p = softmax([0, -1, t]).
        let z = [2.0f32, 1.0, 0.0];
        let s = SoftLabel::from_logits(&z, 2).unwrap();
        let p = softmax(&z, 1.0);
        let h: f64 = p.iter().map(|q| -q * q.ln()).sum();
        let (mass, ent) = s.mass_and_entropy(3);
        assert!((mass - (p[0] + p[1])).abs() < 1e-6);
        assert!((ent - h).abs() < 1e-6);
        assert!((f64::from(s.top_mass(3, 1.0)) - mass).abs() < 1e-6);
    }

    #[test]
    fn dense_sums_to_one() {
        let z: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.7).collect();
        let s = SoftLabel::from_logits(&z, 5).unwrap();
        for tau in [0.5f32, 1.0, 3.0, 4.0, 10.0] {
            let mut d = vec![0.0; 50];
            s.dense_into(tau, &mut d);
            let sum: f32 = d.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "tau {tau}: {sum}");
        }
    }
}
