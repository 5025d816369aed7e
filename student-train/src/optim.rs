//! Optimizers (SGD with momentum, AdamW), weight decay, gradient clipping and the learning-rate
//! schedule (constant, cosine or step, with linear warm-up), all as serializable settings so a
//! run's `config.json` says exactly how it was trained.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};

/// Which optimizer.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "name")]
pub enum OptimizerKind {
    /// SGD with (Nesterov) momentum; `momentum = 0` is plain SGD.
    Sgd { momentum: f64, nesterov: bool },
    /// AdamW (decoupled weight decay).
    Adamw { beta1: f32, beta2: f32 },
}

/// How the learning rate changes over the epochs after warm-up.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "name")]
pub enum Schedule {
    Constant,
    /// Half a cosine from the peak down to `min_factor`·peak at the last step.
    Cosine {
        min_factor: f64,
    },
    /// Multiply by `gamma` every `every` epochs.
    Step {
        every: u32,
        gamma: f64,
    },
}

/// Everything about the optimization of one run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub lr: f64,
    pub weight_decay: f32,
    pub schedule: Schedule,
    /// Epochs of linear warm-up from `lr / steps` to `lr` (may be fractional).
    pub warmup_epochs: f64,
    /// Clip each parameter's gradient to this L2 norm.
    pub clip_grad_norm: Option<f32>,
}

impl OptimConfig {
    /// Checks the settings, naming the field that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("`lr` {} must be > 0", self.lr));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(format!("`weight_decay` {} must be ≥ 0", self.weight_decay));
        }
        if !(self.warmup_epochs >= 0.0 && self.warmup_epochs.is_finite()) {
            return Err(format!(
                "`warmup_epochs` {} must be ≥ 0",
                self.warmup_epochs
            ));
        }
        if let Some(c) = self.clip_grad_norm
            && !(c > 0.0 && c.is_finite())
        {
            return Err(format!("`clip_grad_norm` {c} must be > 0"));
        }
        match self.optimizer {
            OptimizerKind::Sgd { momentum, .. } if !(0.0..1.0).contains(&momentum) => {
                return Err(format!("`momentum` {momentum} must lie in [0, 1)"));
            }
            OptimizerKind::Adamw { beta1, beta2 }
                if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2)) =>
            {
                return Err(format!("AdamW betas ({beta1}, {beta2}) must lie in [0, 1)"));
            }
            _ => {}
        }
        match self.schedule {
            Schedule::Cosine { min_factor } if !(0.0..=1.0).contains(&min_factor) => {
                Err(format!("cosine floor {min_factor} must lie in [0, 1]"))
            }
            Schedule::Step { every: 0, .. } => Err("`lr_step_every` must be ≥ 1".into()),
            Schedule::Step { gamma, .. } if !(gamma > 0.0 && gamma <= 1.0) => {
                Err(format!("`lr_step_gamma` {gamma} must lie in (0, 1]"))
            }
            _ => Ok(()),
        }
    }

    /// A fresh optimizer with these settings.
    pub fn init(&self) -> ModuleOptimizer {
        let clip = self.clip_grad_norm.map(GradientClippingConfig::Norm);
        match self.optimizer {
            OptimizerKind::Sgd { momentum, nesterov } => SgdConfig::new()
                .with_momentum((momentum > 0.0).then_some(MomentumConfig {
                    momentum,
                    // PyTorch's default (no dampening), which the KD papers' recipes assume.
                    dampening: 0.0,
                    nesterov,
                }))
                .with_weight_decay((self.weight_decay > 0.0).then_some(WeightDecayConfig {
                    penalty: self.weight_decay,
                }))
                .with_gradient_clipping(clip)
                .init(),
            OptimizerKind::Adamw { beta1, beta2 } => AdamWConfig::new()
                .with_beta_1(beta1)
                .with_beta_2(beta2)
                .with_epsilon(1e-8)
                .with_weight_decay(self.weight_decay)
                .with_grad_clipping(clip)
                .init(),
        }
    }

    /// The learning rate of step `step` (0-based) of `epoch` (0-based), with `steps` steps per
    /// epoch and `epochs` epochs in the run. Warm-up rises linearly per step; the schedule
    /// after it is continuous in steps (cosine) or changes at epoch boundaries (step).
    pub fn lr_at(&self, epoch: u32, step: usize, steps: usize, epochs: u32) -> f64 {
        let steps = steps.max(1) as f64;
        let t = f64::from(epoch) * steps + step as f64;
        let warm = self.warmup_epochs * steps;
        if t < warm {
            // Capped: with a warm-up shorter than a step, (t + 1)/warm would exceed 1.
            return self.lr * ((t + 1.0) / warm).min(1.0);
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine { min_factor } => {
                let total = f64::from(epochs) * steps - warm;
                let progress = if total <= 1.0 {
                    0.0
                } else {
                    ((t - warm) / (total - 1.0)).clamp(0.0, 1.0)
                };
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.lr * (min_factor + (1.0 - min_factor) * cos)
            }
            Schedule::Step { every, gamma } => self.lr * gamma.powi((epoch / every) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: Schedule, warmup: f64) -> OptimConfig {
        OptimConfig {
            optimizer: OptimizerKind::Sgd {
                momentum: 0.9,
                nesterov: false,
            },
            lr: 0.1,
            weight_decay: 5e-4,
            schedule,
            warmup_epochs: warmup,
            clip_grad_norm: None,
        }
    }

    #[test]
    fn schedules_follow_their_formulas() {
        let c = cfg(Schedule::Cosine { min_factor: 0.0 }, 0.0);
        // 10 epochs of 10 steps: starts at the peak, halves in the middle, ends at the floor.
        assert!((c.lr_at(0, 0, 10, 10) - 0.1).abs() < 1e-12);
        let mid = c.lr_at(4, 9, 10, 10) + c.lr_at(5, 0, 10, 10);
        assert!((mid / 2.0 - 0.05).abs() < 1e-3, "{mid}");
        assert!(c.lr_at(9, 9, 10, 10).abs() < 1e-12);

        let s = cfg(
            Schedule::Step {
                every: 3,
                gamma: 0.1,
            },
            0.0,
        );
        assert_eq!(s.lr_at(2, 5, 10, 10), 0.1);
        assert!((s.lr_at(3, 0, 10, 10) - 0.01).abs() < 1e-15);
        assert!((s.lr_at(6, 0, 10, 10) - 0.001).abs() < 1e-15);

        // Warm-up: 2 epochs of 5 steps rise linearly to the peak.
        let w = cfg(Schedule::Constant, 2.0);
        assert!((w.lr_at(0, 0, 5, 10) - 0.01).abs() < 1e-12);
        assert!((w.lr_at(1, 4, 5, 10) - 0.1).abs() < 1e-12);
        assert_eq!(w.lr_at(2, 0, 5, 10), 0.1);
        // A warm-up shorter than one step never exceeds the peak.
        let short = cfg(Schedule::Constant, 0.01);
        assert_eq!(short.lr_at(0, 0, 10, 10), 0.1);
    }

    #[test]
    fn out_of_range_settings_name_their_flag() {
        let mut c = cfg(Schedule::Constant, 0.0);
        c.lr = 0.0;
        assert!(c.validate().unwrap_err().contains("`lr`"));
        let mut c = cfg(Schedule::Constant, -1.0);
        assert!(c.validate().unwrap_err().contains("`warmup_epochs`"));
        c.warmup_epochs = 0.0;
        c.clip_grad_norm = Some(0.0);
        assert!(c.validate().unwrap_err().contains("`clip_grad_norm`"));
        c.clip_grad_norm = None;
        c.optimizer = OptimizerKind::Sgd {
            momentum: 1.0,
            nesterov: false,
        };
        assert!(c.validate().unwrap_err().contains("`momentum`"));
        assert!(
            cfg(
                Schedule::Step {
                    every: 0,
                    gamma: 0.1
                },
                0.0
            )
            .validate()
            .is_err()
        );
        assert!(
            cfg(Schedule::Cosine { min_factor: 0.0 }, 1.0)
                .validate()
                .is_ok()
        );
    }
}
