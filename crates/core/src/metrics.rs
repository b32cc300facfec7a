//! Medical classification metrics computed on the host from predicted class probabilities:
//! accuracy, balanced accuracy, per-class precision / sensitivity / specificity / F1, the
//! confusion matrix, ROC curves and AUC (binary or macro one-vs-rest), log loss, the list of
//! misclassified items and percentile-bootstrap confidence intervals.
//!
//! Everything here is plain `f64` arithmetic with a seeded, platform-independent generator, so
//! the CLI (`medtransfer eval --json`) and the browser app report identical figures for the
//! same inputs and seed.
//!
//! Conventions:
//! - precision = TP/(TP+FP), sensitivity (recall) = TP/(TP+FN), specificity = TN/(TN+FP),
//!   F1 = 2PR/(P+R); whenever a denominator is 0 the value is reported as 0.0 (never NaN), so
//!   that the results always serialize to valid JSON.
//! - Predictions are the argmax of each row, ties going to the lowest class index; in a binary
//!   problem an explicit threshold on the class-1 probability may be used instead.
//! - AUC is the Mann–Whitney statistic (ties count 1/2), which equals the trapezoid area under
//!   the ROC curve returned by [`roc_curve`].
//! - Bootstrap intervals are 95% percentile intervals; percentiles use linear interpolation
//!   between order statistics (NumPy's default, "type 7").

use crate::rng::SeededRng;

use bootstrap::bootstrap;
#[cfg(test)]
use bootstrap::percentile;
use roc::OvrColumn;
pub use roc::{binary_auc, roc_curve, sensitivity_specificity_at};

mod bootstrap;
mod roc;

/// Per-class figures (one-vs-rest): the class is the positive, every other class the negative.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMetrics {
    /// The class name.
    pub class: String,
    /// TP/(TP+FP); 0.0 when the class is never predicted.
    pub precision: f64,
    /// TP/(TP+FN) (recall); 0.0 when the class has no items.
    pub sensitivity: f64,
    /// TN/(TN+FP); 0.0 when every item belongs to the class.
    pub specificity: f64,
    /// Harmonic mean of precision and sensitivity; 0.0 when both are 0.
    pub f1: f64,
    /// Number of items whose true class is this one.
    pub support: usize,
}

/// One point of a ROC curve: predicting positive when `score >= threshold` gives these rates.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RocPoint {
    /// The score threshold; the first point of a curve (nothing predicted positive) uses
    /// [`ROC_START_THRESHOLD`] (`f64::MAX`) in place of +∞ so that JSON stays valid.
    pub threshold: f64,
    /// FP/(FP+TN) at this threshold.
    pub false_positive_rate: f64,
    /// TP/(TP+FN) at this threshold.
    pub true_positive_rate: f64,
}

/// Threshold of the first ROC point (0, 0): stands for +∞ ("nothing is positive") but is finite
/// so the curve serializes to JSON (JavaScript reads it as `Number.MAX_VALUE`).
pub const ROC_START_THRESHOLD: f64 = f64::MAX;

/// Lower clamp of the true-class probability in the log loss, so a confident mistake costs
/// `-ln(1e-7)` ≈ 16.1 instead of infinity.
pub const LOG_LOSS_EPSILON: f64 = 1e-7;

/// An item whose predicted class differs from its true class (for review in the UI).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Misclassified {
    /// Position of the item in the input.
    pub index: usize,
    /// Its true class index.
    pub true_class: usize,
    /// The class it was predicted as.
    pub predicted_class: usize,
    /// The predicted class's probability (how confident the mistake was).
    pub probability: f64,
}

/// The full evaluation of a set of predictions; serialized as the `eval --json` output.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Number of items.
    pub n: usize,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    /// Fraction of items predicted correctly.
    pub accuracy: f64,
    /// Mean per-class sensitivity over the classes with support > 0 (robust to imbalance).
    pub balanced_accuracy: f64,
    /// Binary: AUC with class 1 as positive (score = probability of class 1). More than two
    /// classes: macro mean of the one-vs-rest AUCs over the classes that have both positives and
    /// negatives. `None` when no class allows it (e.g. only one class present).
    pub auc: Option<f64>,
    /// 95% percentile-bootstrap interval of the accuracy; `None` without bootstrap samples.
    pub accuracy_ci: Option<[f64; 2]>,
    /// 95% percentile-bootstrap interval of the AUC, over the resamples where the AUC is
    /// computable; `None` without bootstrap samples, when `auc` is `None`, or when no resample
    /// allowed it.
    pub auc_ci: Option<[f64; 2]>,
    /// One-vs-rest figures per class, in class-index order.
    pub per_class: Vec<ClassMetrics>,
    /// Counts indexed `[true class][predicted class]`.
    pub confusion_matrix: Vec<Vec<usize>>,
    /// Binary: one curve (positive = class 1). More than two classes: one one-vs-rest curve per
    /// class, empty for a class without positives or without negatives.
    pub roc: Vec<Vec<RocPoint>>,
    /// The wrongly predicted items, in input order.
    pub misclassified: Vec<Misclassified>,
    /// Mean of `-ln(p_true)`, with `p_true` clamped to `[1e-7, 1]`.
    pub log_loss: f64,
}

/// Below this many evaluated items the figures are called rough ([`Evaluation::small_sample_note`]):
/// a bootstrap interval over n items moves in steps of 1/n and can collapse to one value.
pub const SMALL_SAMPLE: usize = 30;

impl Evaluation {
    /// A warning to show with these figures when they come from fewer than [`SMALL_SAMPLE`]
    /// items or an interval has no width (every resample scored the same); `None` otherwise.
    pub fn small_sample_note(&self) -> Option<String> {
        let collapsed = [self.accuracy_ci, self.auc_ci]
            .iter()
            .flatten()
            .any(|[lo, hi]| lo == hi);
        (self.n < SMALL_SAMPLE || collapsed).then(|| {
            format!(
                "Only {} images were evaluated, so read these figures as rough: their 95% \
                 intervals are resamples of those same images, and an interval such as \
                 1.000–1.000 means every resample scored the same, not that the model is \
                 perfect. More images per class narrow them.",
                self.n
            )
        })
    }
}

/// Settings of [`evaluate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvaluationOptions {
    /// Number of bootstrap resamples for the confidence intervals (default 1000; 0 = no
    /// intervals).
    pub bootstrap_samples: usize,
    /// Seed of the bootstrap resampling (default 0); the same seed gives the same intervals.
    pub seed: u64,
    /// Binary problems only: predict class 1 when `p1 >= threshold`; `None` = argmax. Setting it
    /// with more than two classes is an error.
    pub threshold: Option<f64>,
}

impl Default for EvaluationOptions {
    /// 1000 bootstrap samples, seed 0, argmax predictions.
    fn default() -> Self {
        Self {
            bootstrap_samples: 1000,
            seed: 0,
            threshold: None,
        }
    }
}

/// Why a set of predictions cannot be evaluated.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    /// There are no items to evaluate.
    #[error("no items to evaluate")]
    NoItems,
    /// Fewer than two class names were given.
    #[error("at least 2 classes are needed, got {found}")]
    TooFewClasses {
        /// Number of classes given.
        found: usize,
    },
    /// The number of labels differs from the number of probability rows.
    #[error("{rows} probability rows but {labels} labels")]
    LabelCountMismatch {
        /// Number of probability rows.
        rows: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A probability row does not have one entry per class.
    #[error("row {row} has {found} probabilities but there are {expected} classes")]
    RowLength {
        /// The offending row.
        row: usize,
        /// Number of classes.
        expected: usize,
        /// Length of the row.
        found: usize,
    },
    /// A label is not a valid class index.
    #[error("row {row} has label {label}, but there are only {classes} classes")]
    LabelOutOfRange {
        /// The offending row.
        row: usize,
        /// The label given.
        label: usize,
        /// Number of classes.
        classes: usize,
    },
    /// A probability is NaN or infinite.
    #[error("row {row} has a non-finite probability for class {class}")]
    NonFiniteProbability {
        /// The offending row.
        row: usize,
        /// The class index of the bad entry.
        class: usize,
    },
    /// A threshold was given for a problem with more than two classes.
    #[error("a decision threshold applies to 2 classes only, but there are {classes}")]
    ThresholdNotBinary {
        /// Number of classes.
        classes: usize,
    },
    /// The threshold is NaN.
    #[error("the decision threshold is NaN")]
    InvalidThreshold,
}

/// Evaluates predicted probabilities against true labels.
///
/// `probabilities`: one row per item, each row one probability per class (rows need not sum
/// exactly to 1; they are used as given). `labels`: the true class index per item. `classes`:
/// the class names. Returns an error (never panics) on malformed input; the first bad row in
/// input order is reported.
pub fn evaluate(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    classes: &[String],
    options: &EvaluationOptions,
) -> Result<Evaluation, MetricsError> {
    validate(probabilities, labels, classes, options)?;
    let n = probabilities.len();
    let k = classes.len();

    let predicted: Vec<usize> = probabilities
        .iter()
        .map(|row| predicted_class(row, options.threshold))
        .collect();

    let mut confusion_matrix = vec![vec![0usize; k]; k];
    for (&t, &p) in labels.iter().zip(&predicted) {
        confusion_matrix[t][p] += 1;
    }
    let correct: Vec<bool> = labels.iter().zip(&predicted).map(|(t, p)| t == p).collect();
    let n_correct = correct.iter().filter(|&&c| c).count();
    let accuracy = ratio(n_correct, n);

    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| class_metrics(&confusion_matrix, c, n, &classes[c]))
        .collect();
    let supported: Vec<f64> = per_class
        .iter()
        .filter(|m| m.support > 0)
        .map(|m| m.sensitivity)
        .collect();
    let balanced_accuracy = mean(&supported).unwrap_or(0.0);

    // One-vs-rest score columns: binary uses class 1 only, otherwise every class.
    let positive_classes: Vec<usize> = if k == 2 { vec![1] } else { (0..k).collect() };
    let columns: Vec<OvrColumn> = positive_classes
        .iter()
        .map(|&c| OvrColumn::new(probabilities, labels, c))
        .collect();
    let roc: Vec<Vec<RocPoint>> = columns
        .iter()
        .map(|col| roc_curve(&col.scores, &col.positives))
        .collect();
    let column_aucs: Vec<f64> = columns
        .iter()
        .filter_map(|col| col.weighted_auc(|_| 1))
        .collect();
    let auc = mean(&column_aucs);

    let misclassified: Vec<Misclassified> = probabilities
        .iter()
        .enumerate()
        .filter(|&(i, _)| !correct[i])
        .map(|(i, row)| Misclassified {
            index: i,
            true_class: labels[i],
            predicted_class: predicted[i],
            probability: f64::from(row[predicted[i]]),
        })
        .collect();

    let log_loss = probabilities
        .iter()
        .zip(labels)
        .map(|(row, &t)| -f64::from(row[t]).clamp(LOG_LOSS_EPSILON, 1.0).ln())
        .sum::<f64>()
        / n as f64;

    let (accuracy_ci, auc_ci) = if options.bootstrap_samples == 0 {
        (None, None)
    } else {
        bootstrap(
            &correct,
            if auc.is_some() { &columns } else { &[] },
            options,
        )
    };

    Ok(Evaluation {
        n,
        classes: classes.to_vec(),
        accuracy,
        balanced_accuracy,
        auc,
        accuracy_ci,
        auc_ci,
        per_class,
        confusion_matrix,
        roc,
        misclassified,
        log_loss,
    })
}

/// Checks every input condition of [`evaluate`], reporting the first problem.
fn validate(
    probabilities: &[Vec<f32>],
    labels: &[usize],
    classes: &[String],
    options: &EvaluationOptions,
) -> Result<(), MetricsError> {
    let k = classes.len();
    if probabilities.is_empty() {
        return Err(MetricsError::NoItems);
    }
    if k < 2 {
        return Err(MetricsError::TooFewClasses { found: k });
    }
    if labels.len() != probabilities.len() {
        return Err(MetricsError::LabelCountMismatch {
            rows: probabilities.len(),
            labels: labels.len(),
        });
    }
    if let Some(t) = options.threshold {
        if k != 2 {
            return Err(MetricsError::ThresholdNotBinary { classes: k });
        }
        if t.is_nan() {
            return Err(MetricsError::InvalidThreshold);
        }
    }
    for (row, (probs, &label)) in probabilities.iter().zip(labels).enumerate() {
        if probs.len() != k {
            return Err(MetricsError::RowLength {
                row,
                expected: k,
                found: probs.len(),
            });
        }
        if label >= k {
            return Err(MetricsError::LabelOutOfRange {
                row,
                label,
                classes: k,
            });
        }
        if let Some(class) = probs.iter().position(|p| !p.is_finite()) {
            return Err(MetricsError::NonFiniteProbability { row, class });
        }
    }
    Ok(())
}

/// The predicted class of one row of probabilities: `p1 >= threshold` when a threshold is
/// given (two classes), otherwise the argmax with ties going to the lowest index. The one rule
/// the metrics, the CLI's predictions and the page's predictions share.
pub fn predicted_class(row: &[f32], threshold: Option<f64>) -> usize {
    if let (Some(t), Some(&p1)) = (threshold, row.get(1)) {
        return usize::from(f64::from(p1) >= t);
    }
    let mut best = 0;
    for (i, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = i;
        }
    }
    best
}

/// One-vs-rest figures of class `c` from the confusion matrix.
fn class_metrics(cm: &[Vec<usize>], c: usize, n: usize, name: &str) -> ClassMetrics {
    let tp = cm[c][c];
    let support: usize = cm[c].iter().sum();
    let predicted: usize = cm.iter().map(|row| row[c]).sum();
    let fn_ = support - tp;
    let fp = predicted - tp;
    let tn = n - tp - fn_ - fp;
    let precision = ratio(tp, tp + fp);
    let sensitivity = ratio(tp, tp + fn_);
    let specificity = ratio(tn, tn + fp);
    let f1 = if precision + sensitivity > 0.0 {
        2.0 * precision * sensitivity / (precision + sensitivity)
    } else {
        0.0
    };
    ClassMetrics {
        class: name.to_owned(),
        precision,
        sensitivity,
        specificity,
        f1,
        support,
    }
}

/// `num / den`, or 0.0 when `den` is 0.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The arithmetic mean, `None` for an empty slice.
fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

#[cfg(test)]
mod tests;
