//! ROC curves and AUC: the Mann–Whitney statistic (ties count 1/2), weighted by bootstrap
//! multiplicities for the intervals, and one-vs-rest score columns sorted once (see
//! [`super`]'s conventions).

use super::*;

/// Binary AUC (Mann–Whitney U / (P·N), ties count 1/2) of `scores` against boolean
/// `positives`: the probability that a random positive scores above a random negative.
/// `None` if there are no positives or no negatives, the slices differ in length, or a score is
/// NaN. O(n log n).
pub fn binary_auc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    if scores.len() != positives.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    weighted_auc(&ascending_order(scores), scores, positives, |_| 1)
}

/// ROC curve of `scores` against `positives`, predicting positive when `score >= threshold`.
///
/// Starts at (0, 0) with threshold [`ROC_START_THRESHOLD`] (`f64::MAX`, standing for +∞ so JSON
/// stays valid), then one point per distinct score in descending order, ending at (1, 1) with
/// the lowest score. Empty when there are no positives or no negatives, when the slices differ
/// in length, or when a score is NaN. Its trapezoid area equals [`binary_auc`].
pub fn roc_curve(scores: &[f64], positives: &[bool]) -> Vec<RocPoint> {
    if scores.len() != positives.len() || scores.iter().any(|s| s.is_nan()) {
        return Vec::new();
    }
    let total_pos = positives.iter().filter(|&&p| p).count();
    let total_neg = positives.len() - total_pos;
    if total_pos == 0 || total_neg == 0 {
        return Vec::new();
    }
    let mut order = ascending_order(scores);
    order.reverse();
    let mut curve = vec![RocPoint {
        threshold: ROC_START_THRESHOLD,
        false_positive_rate: 0.0,
        true_positive_rate: 0.0,
    }];
    let (mut tp, mut fp) = (0usize, 0usize);
    for group in tie_groups(&order, scores) {
        for &i in group {
            if positives[i] {
                tp += 1;
            } else {
                fp += 1;
            }
        }
        curve.push(RocPoint {
            threshold: scores[group[0]],
            false_positive_rate: ratio(fp, total_neg),
            true_positive_rate: ratio(tp, total_pos),
        });
    }
    curve
}

/// Sensitivity and specificity of a binary problem (class 1 = positive, any other label =
/// negative) when predicting positive for `p1 >= threshold`; backs the threshold slider.
/// A rate whose denominator is 0 is 0.0. Pairs beyond the shorter slice are ignored.
pub fn sensitivity_specificity_at(p1: &[f64], labels: &[usize], threshold: f64) -> (f64, f64) {
    let (mut tp, mut fn_, mut tn, mut fp) = (0usize, 0usize, 0usize, 0usize);
    for (&p, &label) in p1.iter().zip(labels) {
        match (label == 1, p >= threshold) {
            (true, true) => tp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
            (false, true) => fp += 1,
        }
    }
    (ratio(tp, tp + fn_), ratio(tn, tn + fp))
}

/// Indices of `scores` sorted by ascending score (total order; equal scores stay adjacent).
pub(super) fn ascending_order(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order
}

/// Splits a score-sorted index list into runs of equal score (`==`, so -0.0 and 0.0 tie).
pub(super) fn tie_groups<'a>(
    order: &'a [usize],
    scores: &'a [f64],
) -> impl Iterator<Item = &'a [usize]> {
    order.chunk_by(move |&a, &b| scores[a] == scores[b])
}

/// Mann–Whitney AUC where item `i` counts `weight(i)` times (bootstrap multiplicities); `order`
/// must sort the items by ascending score. Exact integer counting, ties count 1/2. `None` when
/// the weighted positives or negatives are empty.
pub(super) fn weighted_auc(
    order: &[usize],
    scores: &[f64],
    positives: &[bool],
    weight: impl Fn(usize) -> u64,
) -> Option<f64> {
    // Twice the U statistic, so that tie halves stay integers.
    let mut twice_u: u128 = 0;
    let mut neg_below: u128 = 0;
    let mut total_pos: u128 = 0;
    for group in tie_groups(order, scores) {
        let (mut gp, mut gn) = (0u128, 0u128);
        for &i in group {
            let w = u128::from(weight(i));
            if positives[i] {
                gp += w;
            } else {
                gn += w;
            }
        }
        twice_u += 2 * gp * neg_below + gp * gn;
        neg_below += gn;
        total_pos += gp;
    }
    let total_neg = neg_below;
    if total_pos == 0 || total_neg == 0 {
        return None;
    }
    Some(twice_u as f64 / (2 * total_pos * total_neg) as f64)
}

/// One one-vs-rest score column (probability of one class, positive = that class), pre-sorted
/// once so that every bootstrap resample's AUC is a linear pass.
pub(super) struct OvrColumn {
    pub(super) scores: Vec<f64>,
    pub(super) positives: Vec<bool>,
    order: Vec<usize>,
}

impl OvrColumn {
    /// The column of class `c` from validated rows.
    pub(super) fn new(probabilities: &[Vec<f32>], labels: &[usize], c: usize) -> Self {
        let scores: Vec<f64> = probabilities
            .iter()
            .map(|row| row.get(c).map_or(0.0, |&p| f64::from(p)))
            .collect();
        let positives = labels.iter().map(|&l| l == c).collect();
        let order = ascending_order(&scores);
        Self {
            scores,
            positives,
            order,
        }
    }

    /// The column's AUC with item multiplicities `weight`.
    pub(super) fn weighted_auc(&self, weight: impl Fn(usize) -> u64) -> Option<f64> {
        weighted_auc(&self.order, &self.scores, &self.positives, weight)
    }
}
