//! Percentile-bootstrap 95% intervals of accuracy and AUC (see [`super`]'s conventions:
//! NumPy's "type 7" percentiles, a seeded generator).

use super::*;

/// Percentile-bootstrap 95% intervals of the accuracy and of the (macro) AUC over `columns`
/// (empty = no AUC interval). Each resample draws n items with replacement from
/// `SeededRng::new(options.seed)`; a resample where no column's AUC is computable is skipped
/// for the AUC only.
pub(super) fn bootstrap(
    correct: &[bool],
    columns: &[OvrColumn],
    options: &EvaluationOptions,
) -> (Option<[f64; 2]>, Option<[f64; 2]>) {
    let n = correct.len();
    let mut rng = SeededRng::new(options.seed);
    let mut counts = vec![0u64; n];
    let mut accuracies = Vec::with_capacity(options.bootstrap_samples);
    let mut aucs = Vec::with_capacity(options.bootstrap_samples);
    let mut column_aucs = Vec::with_capacity(columns.len());
    for _ in 0..options.bootstrap_samples {
        counts.fill(0);
        for _ in 0..n {
            counts[rng.below(n)] += 1;
        }
        let hits: u64 = counts
            .iter()
            .zip(correct)
            .filter(|&(_, &ok)| ok)
            .map(|(&c, _)| c)
            .sum();
        accuracies.push(hits as f64 / n as f64);
        column_aucs.clear();
        column_aucs.extend(
            columns
                .iter()
                .filter_map(|col| col.weighted_auc(|i| counts[i])),
        );
        if let Some(auc) = mean(&column_aucs) {
            aucs.push(auc);
        }
    }
    (interval95(&mut accuracies), interval95(&mut aucs))
}

/// The 2.5th and 97.5th percentiles (linear interpolation), `None` for no values.
fn interval95(values: &mut [f64]) -> Option<[f64; 2]> {
    values.sort_by(f64::total_cmp);
    Some([percentile(values, 0.025)?, percentile(values, 0.975)?])
}

/// The `q`-quantile (0..=1) of sorted `values` by linear interpolation between order statistics
/// at position `q·(m−1)`; `None` when empty.
pub(super) fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = (pos.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let frac = pos - lo as f64;
    Some(sorted[lo] + frac * (sorted[hi] - sorted[lo]))
}
