//! What configures a training run: the loss, optimiser, schedule and class weighting, the
//! valid range of every setting ([`limits`]) and [`TrainConfig`] with the defaults chosen on
//! validation data (`docs/RESULTS.md`).

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::head::{HeadKind, OutputKind};

/// The loss minimised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Softmax cross-entropy (any number of classes).
    CrossEntropy,
    /// Binary cross-entropy on one sigmoid logit (two classes; the source recipe).
    BinaryCrossEntropy,
    /// Mean squared error between the softmax probabilities and the one-hot target.
    MeanSquaredError,
}

impl LossKind {
    /// The output layer this loss trains: a single sigmoid for binary cross-entropy, else softmax.
    pub fn output(self) -> OutputKind {
        match self {
            LossKind::BinaryCrossEntropy => OutputKind::Sigmoid,
            LossKind::CrossEntropy | LossKind::MeanSquaredError => OutputKind::Softmax,
        }
    }
}

/// The optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Adam; `weight_decay` is added to the gradient (L2).
    Adam,
    /// AdamW; `weight_decay` is decoupled from the gradient.
    AdamW,
    /// Full-batch L-BFGS on the convex problem of a linear head (cross-entropy or binary
    /// cross-entropy), on the host: `weight_decay` is the L2 penalty λ (mean loss + λ/2‖W‖²,
    /// in [`limits::L2_PENALTY`]) and `epochs` the most solver iterations; the learning rate,
    /// batch size, schedule and patience do not apply. See `train/logistic.rs`.
    Lbfgs,
}

/// How the learning rate changes over training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Cosine decay from the rate to zero over all planned steps.
    Cosine,
}

/// Whether classes are weighted by inverse frequency in the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassWeighting {
    /// On when the largest training class has more than 1.5× the items of the smallest.
    Auto,
    /// Always: weight of class c = N / (K · n_c).
    On,
    /// Every item counts the same.
    Off,
}

/// Hidden units of the default MLP head (the source recipe's Dense(1024)).
pub const DEFAULT_HIDDEN_UNITS: usize = 1024;
/// Dropout of the default MLP head's hidden units.
pub const DEFAULT_DROPOUT: f32 = 0.5;

/// Ratio of largest to smallest class above which [`ClassWeighting::Auto`] weights classes.
pub const IMBALANCE_RATIO: f64 = 1.5;

/// The valid ranges of the settings a user edits: [`TrainConfig`]'s checks use them, and the
/// page's inputs (and the settings of an imported project) are clamped to them.
pub mod limits {
    use std::ops::{Range, RangeInclusive};

    /// Epochs (most passes over the training items).
    pub const EPOCHS: RangeInclusive<usize> = 1..=100_000;
    /// Items per optimiser step.
    pub const BATCH_SIZE: RangeInclusive<usize> = 1..=65_536;
    /// The learning rate lies strictly between these bounds.
    pub const LEARNING_RATE: (f64, f64) = (0.0, 10.0);
    /// Weight decay (L2 for Adam, decoupled for AdamW), half-open.
    pub const WEIGHT_DECAY: Range<f64> = 0.0..1.0;
    /// The L2 penalty λ of an L-BFGS fit, half-open (λ = 1 / (C·n) for scikit-learn's C: a
    /// strong penalty on few items exceeds 1).
    pub const L2_PENALTY: Range<f64> = 0.0..1e4;
    /// Hidden units of an MLP head.
    pub const HIDDEN_UNITS: RangeInclusive<usize> = 1..=65_536;
    /// Dropout of an MLP head's hidden units, half-open.
    pub const DROPOUT: Range<f32> = 0.0..1.0;
    /// Label smoothing ε, half-open.
    pub const LABEL_SMOOTHING: Range<f32> = 0.0..0.5;
    /// Folds of a cross-validation.
    pub const FOLDS: RangeInclusive<usize> = 2..=50;
    /// The share of each class held out for validation (0: none, train on everything).
    pub const VALIDATION_SHARE: RangeInclusive<f64> = 0.0..=0.5;
    /// Augmented views embedded per image (each is one more forward pass per image).
    pub const AUGMENTED_VIEWS: RangeInclusive<u32> = 0..=64;

    /// Whether `rate` is a valid learning rate (finite, strictly inside [`LEARNING_RATE`]).
    pub fn learning_rate_ok(rate: f64) -> bool {
        rate.is_finite() && rate > LEARNING_RATE.0 && rate < LEARNING_RATE.1
    }

    /// `range` as a user reads it: "from 1 to 100000".
    pub fn inclusive<T: std::fmt::Display>(range: &RangeInclusive<T>) -> String {
        format!("from {} to {}", range.start(), range.end())
    }

    /// `range` as a user reads it: "at least 0 and below 1".
    pub fn half_open<T: std::fmt::Display>(range: &Range<T>) -> String {
        format!("at least {} and below {}", range.start, range.end)
    }
}

/// Everything that configures a training run. The defaults were chosen on validation data
/// (see `docs/RESULTS.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Linear or MLP head.
    pub head: HeadKind,
    /// The loss; `None` = binary cross-entropy for two classes, cross-entropy above.
    pub loss: Option<LossKind>,
    /// Adam or AdamW.
    pub optimizer: OptimizerKind,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Weight decay (L2 for Adam, decoupled for AdamW).
    pub weight_decay: f64,
    /// Items per optimiser step.
    pub batch_size: usize,
    /// Most passes over the training items.
    pub epochs: usize,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Stop after this many epochs without a lower validation loss and restore the best
    /// epoch's weights; `None` trains all epochs (the best epoch is still restored when there
    /// is validation data).
    pub patience: Option<usize>,
    /// Class weights in the loss.
    pub class_weights: ClassWeighting,
    /// Label smoothing ε in `[0, 0.5)`: targets become `1 − ε + ε/K` and `ε/K`.
    pub label_smoothing: f32,
    /// Fixes the initial weights, the shuffling and dropout.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The source recipe's head (1024 hidden units, lr 1e-4) won on validation data; see
    /// `docs/RESULTS.md` for the grid.
    fn default() -> Self {
        Self {
            head: HeadKind::Mlp {
                hidden: DEFAULT_HIDDEN_UNITS,
                dropout: DEFAULT_DROPOUT,
            },
            loss: None,
            optimizer: OptimizerKind::AdamW,
            learning_rate: 1e-4,
            weight_decay: 0.1,
            batch_size: 32,
            epochs: 30,
            schedule: Schedule::Cosine,
            patience: Some(8),
            class_weights: ClassWeighting::Auto,
            label_smoothing: 0.0,
            seed: 42,
        }
    }
}

impl TrainConfig {
    /// The loss used for `num_classes` classes.
    pub fn resolved_loss(&self, num_classes: usize) -> LossKind {
        self.loss.unwrap_or(if num_classes == 2 {
            LossKind::BinaryCrossEntropy
        } else {
            LossKind::CrossEntropy
        })
    }

    /// The valid range of [`TrainConfig::weight_decay`] for this optimiser, and its name.
    pub fn weight_decay_limits(&self) -> (std::ops::Range<f64>, &'static str) {
        match self.optimizer {
            OptimizerKind::Lbfgs => (limits::L2_PENALTY, "the L2 penalty"),
            OptimizerKind::Adam | OptimizerKind::AdamW => (limits::WEIGHT_DECAY, "weight decay"),
        }
    }

    pub(super) fn validate(&self, num_classes: usize) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !limits::learning_rate_ok(self.learning_rate) {
            let (low, high) = limits::LEARNING_RATE;
            return bad(format!(
                "the learning rate must be above {low} and below {high}, got {}",
                self.learning_rate
            ));
        }
        if self.optimizer == OptimizerKind::Lbfgs {
            if self.head != HeadKind::Linear {
                return bad("L-BFGS fits the linear head only".into());
            }
            if self.resolved_loss(num_classes) == LossKind::MeanSquaredError {
                return bad("L-BFGS fits the cross-entropy losses only".into());
            }
        }
        let (decay, what) = self.weight_decay_limits();
        if !decay.contains(&self.weight_decay) {
            return bad(format!(
                "{what} must be {}, got {}",
                limits::half_open(&decay),
                self.weight_decay
            ));
        }
        if !limits::BATCH_SIZE.contains(&self.batch_size) {
            return bad(format!(
                "the batch size must be {}, got {}",
                limits::inclusive(&limits::BATCH_SIZE),
                self.batch_size
            ));
        }
        if !limits::EPOCHS.contains(&self.epochs) {
            return bad(format!(
                "epochs must be {}, got {}",
                limits::inclusive(&limits::EPOCHS),
                self.epochs
            ));
        }
        if !limits::LABEL_SMOOTHING.contains(&self.label_smoothing) {
            return bad(format!(
                "label smoothing must be {}, got {}",
                limits::half_open(&limits::LABEL_SMOOTHING),
                self.label_smoothing
            ));
        }
        if self.patience == Some(0) {
            return bad("patience must be at least 1 epoch".into());
        }
        if self.resolved_loss(num_classes) == LossKind::BinaryCrossEntropy && num_classes != 2 {
            return bad(format!(
                "binary cross-entropy needs exactly two classes, got {num_classes}"
            ));
        }
        Ok(())
    }
}
