//! The decision threshold of a two-class model, chosen on predictions the model did not train
//! on (out-of-fold, or the validation items) by a rule the user picks: the largest Youden's
//! J = sensitivity + specificity − 1 (the best balanced accuracy; Youden 1950, *Cancer* 3:32),
//! or the highest threshold that keeps a target sensitivity (screening).
//!
//! The positive class is class 1 (the second class; the score is its probability), as in
//! [`crate::metrics`]; an item is called positive when its score is at least the threshold.

use serde::{Deserialize, Serialize};

use crate::metrics::{ROC_START_THRESHOLD, RocPoint, roc_curve};

/// How the threshold is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum ThresholdRule {
    /// The largest balanced accuracy (Youden's J); among equals, the threshold nearest 0.5.
    #[default]
    BalancedAccuracy,
    /// The highest threshold whose sensitivity is at least `target` (in `(0, 1]`): the fewest
    /// false positives that miss at most `1 − target` of the positives.
    Sensitivity {
        /// The sensitivity to keep, e.g. 0.95.
        target: f64,
    },
}

impl ThresholdRule {
    /// The rule as a user reads it.
    pub fn describe(&self) -> String {
        match self {
            Self::BalancedAccuracy => "best balanced accuracy".into(),
            Self::Sensitivity { target } => format!("sensitivity at least {target}"),
        }
    }
}

/// A chosen threshold and what it gave on the predictions it was chosen on (optimistic for
/// new data: it was fitted to them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Predict class 1 when its probability is at least this, in `[0, 1]`.
    pub value: f64,
    /// The rule that chose it.
    pub rule: ThresholdRule,
    /// Sensitivity (true-positive rate of class 1) at the threshold.
    pub sensitivity: f64,
    /// Specificity (true-negative rate) at the threshold.
    pub specificity: f64,
}

/// Chooses a threshold on `scores` (probability of class 1 per item) and `labels` (class
/// index per item, 1 = positive); the value lies halfway between the score of the last item
/// called positive and the next lower score, so it does not sit on an item.
///
/// `None` when there are no positives or no negatives, the lengths differ, a score is not
/// finite, or a sensitivity target is outside `(0, 1]`.
pub fn choose_threshold(
    scores: &[f64],
    labels: &[usize],
    rule: ThresholdRule,
) -> Option<Threshold> {
    // roc_curve is empty for unequal lengths, NaN, or a missing class; infinities are refused
    // here.
    if scores.iter().any(|s| s.is_infinite()) {
        return None;
    }
    let positives: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
    choose_on_roc(&roc_curve(scores, &positives), rule)
}

/// [`choose_threshold`] on a ROC curve as [`roc_curve`] makes it (descending thresholds, the
/// first one [`ROC_START_THRESHOLD`]), e.g. the curve of a validation
/// [`crate::metrics::Evaluation`]. `None` for an empty curve or a target outside `(0, 1]`.
pub fn choose_on_roc(curve: &[RocPoint], rule: ThresholdRule) -> Option<Threshold> {
    if let ThresholdRule::Sensitivity { target } = rule
        && !(target > 0.0 && target <= 1.0)
    {
        return None;
    }
    // Point i calls positive every score ≥ its threshold.
    let points: Vec<_> = curve
        .iter()
        .enumerate()
        .filter(|(_, p)| p.threshold < ROC_START_THRESHOLD)
        .collect();
    let below = |i: usize| curve.get(i + 1).map_or(0.0, |p| p.threshold);
    let value_at = |i: usize| (curve[i].threshold + below(i)) / 2.0;
    let chosen = match rule {
        ThresholdRule::BalancedAccuracy => points
            .iter()
            .map(|&(i, p)| (i, p.true_positive_rate - p.false_positive_rate))
            .fold(None, |best: Option<(usize, f64)>, (i, j)| match best {
                Some((b, bj))
                    if bj > j + 1e-12
                        || ((bj - j).abs() <= 1e-12
                            && (value_at(b) - 0.5).abs() <= (value_at(i) - 0.5).abs()) =>
                {
                    Some((b, bj))
                }
                _ => Some((i, j)),
            })
            .map(|(i, _)| i),
        ThresholdRule::Sensitivity { target } => points
            .iter()
            .find(|(_, p)| p.true_positive_rate >= target - 1e-12)
            .map(|&(i, _)| i),
    }?;
    let point = &curve[chosen];
    Some(Threshold {
        value: value_at(chosen).clamp(0.0, 1.0),
        rule,
        sensitivity: point.true_positive_rate,
        specificity: 1.0 - point.false_positive_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sensitivity_specificity_at;

    #[test]
    fn the_best_balanced_accuracy_separates_separable_scores_between_the_classes() {
        // Negatives score 0.1–0.3, positives 0.35–0.9: a threshold in (0.3, 0.35] is perfect,
        // although 0.5 would miss a positive.
        let scores = [0.1, 0.2, 0.3, 0.35, 0.6, 0.9];
        let labels = [0, 0, 0, 1, 1, 1];
        let t = choose_threshold(&scores, &labels, ThresholdRule::BalancedAccuracy)
            .expect("both classes");
        assert!(t.value > 0.3 && t.value < 0.35, "{t:?}");
        assert_eq!((t.sensitivity, t.specificity), (1.0, 1.0));
        assert_eq!(
            sensitivity_specificity_at(&scores, &labels, t.value),
            (1.0, 1.0)
        );
    }

    #[test]
    fn a_sensitivity_target_keeps_enough_positives_with_the_fewest_false_positives() {
        // 10 positives and 10 negatives interleaved; 0.9 sensitivity = 9 positives above.
        let scores: Vec<f64> = (0..20).map(|i| f64::from(i) / 20.0).collect();
        let labels: Vec<usize> = (0..20).map(|i| usize::from(i % 2 == 1 || i > 14)).collect();
        let target = 0.9;
        let t = choose_threshold(&scores, &labels, ThresholdRule::Sensitivity { target })
            .expect("both classes");
        let (sensitivity, specificity) = sensitivity_specificity_at(&scores, &labels, t.value);
        assert!(sensitivity >= target, "{t:?}");
        assert_eq!((sensitivity, specificity), (t.sensitivity, t.specificity));
        // Any higher threshold on the scores than the lowest one it calls positive loses the
        // target.
        let lowest = scores
            .iter()
            .copied()
            .filter(|&s| s >= t.value)
            .fold(f64::INFINITY, f64::min);
        for &s in scores.iter().filter(|&&s| s > lowest) {
            assert!(
                sensitivity_specificity_at(&scores, &labels, s).0 < target,
                "{s}"
            );
        }
    }

    #[test]
    fn nothing_is_chosen_without_both_classes_or_with_a_bad_target() {
        assert!(choose_threshold(&[0.2, 0.4], &[1, 1], ThresholdRule::BalancedAccuracy).is_none());
        assert!(
            choose_threshold(
                &[0.2, 0.4],
                &[0, 1],
                ThresholdRule::Sensitivity { target: 0.0 }
            )
            .is_none()
        );
        assert!(
            choose_threshold(&[0.2, f64::NAN], &[0, 1], ThresholdRule::BalancedAccuracy).is_none()
        );
        assert!(choose_threshold(&[0.2], &[0, 1], ThresholdRule::BalancedAccuracy).is_none());
    }
}
