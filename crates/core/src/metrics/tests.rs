use super::*;

fn names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("c{i}")).collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn no_bootstrap() -> EvaluationOptions {
    EvaluationOptions {
        bootstrap_samples: 0,
        ..EvaluationOptions::default()
    }
}

/// O(n²) pairwise Mann–Whitney count, ties 1/2.
fn brute_auc(scores: &[f64], positives: &[bool]) -> Option<f64> {
    let (mut num, mut pairs) = (0.0, 0usize);
    for (i, &pi) in positives.iter().enumerate() {
        for (j, &pj) in positives.iter().enumerate() {
            if pi && !pj {
                pairs += 1;
                if scores[i] > scores[j] {
                    num += 1.0;
                } else if scores[i] == scores[j] {
                    num += 0.5;
                }
            }
        }
    }
    (pairs > 0).then(|| num / pairs as f64)
}

fn trapezoid(curve: &[RocPoint]) -> f64 {
    curve
        .windows(2)
        .map(|w| {
            (w[1].false_positive_rate - w[0].false_positive_rate)
                * (w[0].true_positive_rate + w[1].true_positive_rate)
                / 2.0
        })
        .sum()
}

/// Random k-class data where the true class gets a boosted score, scores quantized to
/// create ties.
fn random_data(n: usize, k: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = SeededRng::new(seed);
    let mut probs = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label = rng.below(k);
        let mut row: Vec<f64> = (0..k).map(|_| rng.next_f64()).collect();
        row[label] += 0.6;
        let sum: f64 = row.iter().sum();
        probs.push(
            row.iter()
                .map(|v| ((v / sum * 20.0).round() / 20.0) as f32)
                .collect(),
        );
        labels.push(label);
    }
    (probs, labels)
}

/// Binary rows `[1 - p, p]`.
fn binary_rows(p1: &[f32]) -> Vec<Vec<f32>> {
    p1.iter().map(|&p| vec![1.0 - p, p]).collect()
}

#[test]
fn two_class_hand_computed() {
    // Interleaved input; negatives (label 0) and positives (label 1).
    let p1 = [0.1f32, 0.9, 0.7, 0.8, 0.2, 0.6, 0.3, 0.55, 0.4, 0.2];
    let labels = [0usize, 1, 0, 1, 0, 1, 0, 1, 1, 1];
    let eval =
        evaluate(&binary_rows(&p1), &labels, &names(2), &no_bootstrap()).expect("valid input");
    // Negatives predicted 0,1,0,0 ; positives predicted 1,1,1,1,0,0.
    assert_eq!(eval.confusion_matrix, vec![vec![3, 1], vec![2, 4]]);
    assert_eq!(eval.n, 10);
    assert!(close(eval.accuracy, 0.7, 1e-12));
    let c1 = &eval.per_class[1];
    assert_eq!(c1.support, 6);
    assert!(close(c1.precision, 4.0 / 5.0, 1e-12));
    assert!(close(c1.sensitivity, 4.0 / 6.0, 1e-12));
    assert!(close(c1.specificity, 3.0 / 4.0, 1e-12));
    assert!(close(c1.f1, 8.0 / 11.0, 1e-12));
    let c0 = &eval.per_class[0];
    assert_eq!((c0.class.as_str(), c0.support), ("c0", 4));
    assert!(close(c0.precision, 3.0 / 5.0, 1e-12));
    assert!(close(c0.sensitivity, 3.0 / 4.0, 1e-12));
    assert!(close(c0.specificity, 4.0 / 6.0, 1e-12));
    assert!(close(c0.f1, 2.0 / 3.0, 1e-12));
    assert!(close(eval.balanced_accuracy, 17.0 / 24.0, 1e-12));
    // Pairs: 0.9, 0.8 beat all 4; 0.6, 0.55, 0.4 beat 3; 0.2 beats 0.1 and ties 0.2.
    assert!(close(eval.auc.expect("computable"), 18.5 / 24.0, 1e-12));
    let p_true = [0.9, 0.9, 0.3, 0.8, 0.8, 0.6, 0.7, 0.55, 0.4, 0.2];
    let expected_ll = p_true.iter().map(|p: &f64| -p.ln()).sum::<f64>() / 10.0;
    assert!(close(eval.log_loss, expected_ll, 1e-6));
    let wrong: Vec<usize> = eval.misclassified.iter().map(|m| m.index).collect();
    assert_eq!(wrong, vec![2, 8, 9]);
    assert_eq!(eval.misclassified[0].predicted_class, 1);
    assert!(close(eval.misclassified[0].probability, 0.7, 1e-6));
    assert_eq!(eval.roc.len(), 1);
    assert_eq!(eval.accuracy_ci, None);
    assert_eq!(eval.auc_ci, None);
}

#[test]
fn three_class_hand_computed() {
    let one_hot = |c: usize| {
        let mut row = vec![0.1f32; 3];
        row[c] = 0.8;
        row
    };
    // (true, predicted) pairs giving [[2,1,0],[0,3,1],[1,0,2]].
    let pairs = [
        (0, 0),
        (0, 0),
        (0, 1),
        (1, 1),
        (1, 1),
        (1, 1),
        (1, 2),
        (2, 2),
        (2, 2),
        (2, 0),
    ];
    let probs: Vec<Vec<f32>> = pairs.iter().map(|&(_, p)| one_hot(p)).collect();
    let labels: Vec<usize> = pairs.iter().map(|&(t, _)| t).collect();
    let eval = evaluate(&probs, &labels, &names(3), &no_bootstrap()).expect("valid");
    assert_eq!(
        eval.confusion_matrix,
        vec![vec![2, 1, 0], vec![0, 3, 1], vec![1, 0, 2]]
    );
    assert!(close(eval.accuracy, 0.7, 1e-12));
    assert!(close(eval.balanced_accuracy, 25.0 / 36.0, 1e-12));
    // Class 1: TP 3, FP 1, FN 1, TN 5.
    let c1 = &eval.per_class[1];
    assert!(close(c1.precision, 0.75, 1e-12));
    assert!(close(c1.sensitivity, 0.75, 1e-12));
    assert!(close(c1.specificity, 5.0 / 6.0, 1e-12));
    assert_eq!(eval.roc.len(), 3);
    assert_eq!(eval.misclassified.len(), 3);
}

#[test]
fn balanced_accuracy_skips_absent_class_and_auc_skips_it_too() {
    let probs = vec![
        vec![0.7f32, 0.2, 0.1],
        vec![0.2, 0.7, 0.1],
        vec![0.6, 0.3, 0.1],
        vec![0.3, 0.3, 0.4],
    ];
    let labels = [0usize, 1, 1, 1];
    let eval = evaluate(&probs, &labels, &names(3), &no_bootstrap()).expect("valid");
    // Sensitivities: class 0 1/1, class 1 1/3, class 2 absent (skipped).
    assert!(close(
        eval.balanced_accuracy,
        (1.0 + 1.0 / 3.0) / 2.0,
        1e-12
    ));
    assert_eq!(eval.per_class[2].support, 0);
    assert_eq!(eval.per_class[2].sensitivity, 0.0);
    assert_eq!(eval.per_class[2].precision, 0.0);
    assert!(eval.roc[2].is_empty());
    let a0 = binary_auc(&[0.7, 0.2, 0.6, 0.3], &[true, false, false, false]);
    let a1 = binary_auc(&[0.2, 0.7, 0.3, 0.3], &[false, true, true, true]);
    let expected = (a0.expect("a0") + a1.expect("a1")) / 2.0;
    assert!(close(eval.auc.expect("auc"), expected, 1e-7));
}

#[test]
fn only_one_class_present_gives_no_auc() {
    let eval = evaluate(
        &binary_rows(&[0.2, 0.4, 0.9]),
        &[0, 0, 0],
        &names(2),
        &EvaluationOptions::default(),
    )
    .expect("valid");
    assert_eq!(eval.auc, None);
    assert_eq!(eval.auc_ci, None);
    assert!(eval.accuracy_ci.is_some());
    assert!(eval.roc[0].is_empty());
    assert!(close(eval.accuracy, 2.0 / 3.0, 1e-12));
    // Class 1 never present, predicted once: precision 0, sensitivity 0 (0/0), f1 0.
    assert_eq!(eval.per_class[1].f1, 0.0);
}

#[test]
fn argmax_ties_go_to_lowest_index() {
    let probs = vec![vec![0.5f32, 0.5], vec![0.2, 0.4]];
    let eval = evaluate(&probs, &[1, 1], &names(2), &no_bootstrap()).expect("valid");
    assert_eq!(eval.confusion_matrix, vec![vec![0, 0], vec![1, 1]]);
    let probs3 = vec![vec![0.2f32, 0.4, 0.4]];
    let eval3 = evaluate(&probs3, &[2], &names(3), &no_bootstrap()).expect("valid");
    assert_eq!(eval3.misclassified[0].predicted_class, 1);
}

#[test]
fn binary_auc_matches_brute_force_with_ties() {
    let mut rng = SeededRng::new(42);
    for round in 0..20 {
        let n = 5 + round * 13;
        let scores: Vec<f64> = (0..n).map(|_| rng.below(8) as f64 / 8.0).collect();
        let positives: Vec<bool> = (0..n).map(|_| rng.below(3) == 0).collect();
        let fast = binary_auc(&scores, &positives);
        let slow = brute_auc(&scores, &positives);
        match (fast, slow) {
            (Some(a), Some(b)) => assert!(close(a, b, 1e-12), "{a} vs {b}"),
            (a, b) => assert_eq!(a, b),
        }
    }
    // -0.0 and 0.0 tie.
    assert_eq!(binary_auc(&[-0.0, 0.0], &[true, false]), Some(0.5));
}

#[test]
fn binary_auc_extremes_and_degenerate() {
    let scores = [0.1, 0.2, 0.3, 0.8, 0.9];
    let pos = [false, false, false, true, true];
    assert_eq!(binary_auc(&scores, &pos), Some(1.0));
    let rev: Vec<bool> = pos.iter().map(|p| !p).collect();
    assert_eq!(binary_auc(&scores, &rev), Some(0.0));
    assert_eq!(binary_auc(&scores, &[false; 5]), None);
    assert_eq!(binary_auc(&scores, &[true; 5]), None);
    assert_eq!(binary_auc(&scores, &pos[..3]), None);
    assert_eq!(binary_auc(&[f64::NAN, 0.1], &[true, false]), None);
    assert_eq!(binary_auc(&[], &[]), None);
}

#[test]
fn roc_curve_shape_and_area() {
    let mut rng = SeededRng::new(3);
    for round in 0..10 {
        let n = 10 + round * 17;
        let scores: Vec<f64> = (0..n).map(|_| rng.below(12) as f64 / 12.0).collect();
        let positives: Vec<bool> = (0..n).map(|i| i % 3 == 0 || rng.below(4) == 0).collect();
        let curve = roc_curve(&scores, &positives);
        let first = curve.first().expect("non-empty");
        let last = curve.last().expect("non-empty");
        assert_eq!(first.threshold, ROC_START_THRESHOLD);
        assert_eq!(
            (first.false_positive_rate, first.true_positive_rate),
            (0.0, 0.0)
        );
        assert_eq!(
            (last.false_positive_rate, last.true_positive_rate),
            (1.0, 1.0)
        );
        let mut distinct = scores.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup();
        assert_eq!(curve.len(), distinct.len() + 1);
        for w in curve.windows(2) {
            assert!(w[1].threshold < w[0].threshold);
            assert!(w[1].false_positive_rate >= w[0].false_positive_rate);
            assert!(w[1].true_positive_rate >= w[0].true_positive_rate);
        }
        let auc = binary_auc(&scores, &positives).expect("computable");
        assert!(close(trapezoid(&curve), auc, 1e-12));
    }
    assert!(roc_curve(&[0.1, 0.2], &[true, true]).is_empty());
    assert!(roc_curve(&[0.1, 0.2], &[true]).is_empty());
}

#[test]
fn roc_points_match_threshold_rates() {
    let p1 = [0.1, 0.9, 0.7, 0.8, 0.2, 0.6, 0.3, 0.55, 0.4, 0.2];
    let labels = [0usize, 1, 0, 1, 0, 1, 0, 1, 1, 1];
    let positives: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
    for point in roc_curve(&p1, &positives).iter().skip(1) {
        let (sens, spec) = sensitivity_specificity_at(&p1, &labels, point.threshold);
        assert!(close(sens, point.true_positive_rate, 1e-12));
        assert!(close(1.0 - spec, point.false_positive_rate, 1e-12));
    }
}

#[test]
fn macro_ovr_auc_is_mean_of_class_aucs() {
    let (probs, labels) = random_data(300, 3, 11);
    let eval = evaluate(&probs, &labels, &names(3), &no_bootstrap()).expect("valid");
    let per_class: Vec<f64> = (0..3)
        .map(|c| {
            let scores: Vec<f64> = probs.iter().map(|r| f64::from(r[c])).collect();
            let pos: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            let auc = binary_auc(&scores, &pos).expect("computable");
            assert!(close(trapezoid(&eval.roc[c]), auc, 1e-12));
            auc
        })
        .collect();
    let expected = per_class.iter().sum::<f64>() / 3.0;
    assert!(close(eval.auc.expect("auc"), expected, 1e-12));
    assert!(eval.auc.expect("auc") > 0.6);
}

#[test]
fn bootstrap_intervals() {
    let (probs, labels) = random_data(60, 2, 5);
    let opts = EvaluationOptions {
        bootstrap_samples: 500,
        seed: 7,
        threshold: None,
    };
    let small = evaluate(&probs, &labels, &names(2), &opts).expect("valid");
    let acc = small.accuracy_ci.expect("accuracy ci");
    let auc = small.auc_ci.expect("auc ci");
    assert!(
        acc[0] <= small.accuracy && small.accuracy <= acc[1],
        "{acc:?}"
    );
    let point_auc = small.auc.expect("auc");
    assert!(auc[0] <= point_auc && point_auc <= auc[1], "{auc:?}");
    assert!(acc[0] < acc[1] && auc[0] < auc[1]);

    let again = evaluate(&probs, &labels, &names(2), &opts).expect("valid");
    assert_eq!(again, small);
    let other_seed = EvaluationOptions { seed: 8, ..opts };
    let other = evaluate(&probs, &labels, &names(2), &other_seed).expect("valid");
    // With 60 items the accuracy takes few values, so its percentiles may coincide; the
    // AUC interval is fine-grained enough to move with the seed.
    assert_ne!(other.auc_ci, small.auc_ci);
    assert_eq!(other.accuracy, small.accuracy);

    let (big_probs, big_labels) = random_data(2000, 2, 5);
    let big = evaluate(&big_probs, &big_labels, &names(2), &opts).expect("valid");
    let big_acc = big.accuracy_ci.expect("accuracy ci");
    let big_auc = big.auc_ci.expect("auc ci");
    assert!(big_acc[1] - big_acc[0] < acc[1] - acc[0]);
    assert!(big_auc[1] - big_auc[0] < auc[1] - auc[0]);
    assert!(big_acc[0] <= big.accuracy && big.accuracy <= big_acc[1]);
    let big_other = evaluate(&big_probs, &big_labels, &names(2), &other_seed).expect("valid");
    assert_ne!(big_other.accuracy_ci, big.accuracy_ci);
    assert_ne!(big_other.auc_ci, big.auc_ci);
    assert_eq!(big_other.auc, big.auc);
}

#[test]
fn bootstrap_multiclass_contains_point() {
    let (probs, labels) = random_data(150, 4, 9);
    let eval = evaluate(&probs, &labels, &names(4), &EvaluationOptions::default()).expect("valid");
    let ci = eval.auc_ci.expect("auc ci");
    let auc = eval.auc.expect("auc");
    assert!(ci[0] <= auc && auc <= ci[1], "{ci:?} {auc}");
}

#[test]
fn percentile_interpolates() {
    let v = [1.0, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&v, 1.0), Some(5.0));
    assert_eq!(percentile(&v, 0.5), Some(3.0));
    assert!(close(percentile(&v, 0.1).expect("some"), 1.4, 1e-12));
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(percentile(&[2.0], 0.975), Some(2.0));
}

#[test]
fn threshold_changes_predictions_and_misclassified() {
    let p1 = [0.1f32, 0.35, 0.45, 0.6, 0.25, 0.9];
    let labels = [0usize, 1, 0, 1, 1, 0];
    let rows = binary_rows(&p1);
    let argmax = evaluate(&rows, &labels, &names(2), &no_bootstrap()).expect("valid");
    // Argmax predictions: 0,0,0,1,0,1 → wrong at 1, 4, 5.
    let wrong: Vec<usize> = argmax.misclassified.iter().map(|m| m.index).collect();
    assert_eq!(wrong, vec![1, 4, 5]);
    let low = EvaluationOptions {
        threshold: Some(0.3),
        ..no_bootstrap()
    };
    let eval = evaluate(&rows, &labels, &names(2), &low).expect("valid");
    // p1 >= 0.3 predictions: 0,1,1,1,0,1 → wrong at 2, 4, 5.
    let wrong: Vec<usize> = eval.misclassified.iter().map(|m| m.index).collect();
    assert_eq!(wrong, vec![2, 4, 5]);
    assert_eq!(eval.confusion_matrix, vec![vec![1, 2], vec![1, 2]]);
    let m = &eval.misclassified[0];
    assert_eq!((m.true_class, m.predicted_class), (0, 1));
    assert!(close(m.probability, 0.45, 1e-6));
    assert!(close(eval.misclassified[1].probability, 0.75, 1e-6));
    // Threshold exactly on a score counts as positive.
    let at = EvaluationOptions {
        threshold: Some(f64::from(0.25f32)),
        ..no_bootstrap()
    };
    let eval_at = evaluate(&rows, &labels, &names(2), &at).expect("valid");
    assert!(eval_at.misclassified.iter().all(|m| m.index != 4));
    // The slider helper agrees with the per-class figures.
    let p1_f64: Vec<f64> = p1.iter().map(|&p| f64::from(p)).collect();
    let (sens, spec) = sensitivity_specificity_at(&p1_f64, &labels, 0.3);
    assert!(close(sens, eval.per_class[1].sensitivity, 1e-12));
    assert!(close(spec, eval.per_class[1].specificity, 1e-12));
    assert!(close(sens, 2.0 / 3.0, 1e-12) && close(spec, 1.0 / 3.0, 1e-12));
    // AUC does not depend on the threshold.
    assert_eq!(eval.auc, argmax.auc);
}

#[test]
fn sensitivity_specificity_edge_cases() {
    assert_eq!(sensitivity_specificity_at(&[], &[], 0.5), (0.0, 0.0));
    assert_eq!(
        sensitivity_specificity_at(&[0.9, 0.1], &[1, 1], 0.5),
        (0.5, 0.0)
    );
    assert_eq!(
        sensitivity_specificity_at(&[0.9, 0.1], &[0, 0], 0.5),
        (0.0, 0.5)
    );
}

#[test]
fn errors_for_bad_inputs() {
    let opts = EvaluationOptions::default();
    let two = names(2);
    assert_eq!(evaluate(&[], &[], &two, &opts), Err(MetricsError::NoItems));
    assert_eq!(
        evaluate(&[vec![1.0]], &[0], &names(1), &opts),
        Err(MetricsError::TooFewClasses { found: 1 })
    );
    assert_eq!(
        evaluate(&[vec![0.5, 0.5]], &[0, 1], &two, &opts),
        Err(MetricsError::LabelCountMismatch { rows: 1, labels: 2 })
    );
    let err = evaluate(&[vec![0.5, 0.5], vec![0.2, 0.3, 0.5]], &[0, 1], &two, &opts);
    assert_eq!(
        err,
        Err(MetricsError::RowLength {
            row: 1,
            expected: 2,
            found: 3
        })
    );
    assert!(err.err().is_some_and(|e| e.to_string().contains("row 1")));
    assert_eq!(
        evaluate(&[vec![0.5, 0.5], vec![0.5, 0.5]], &[0, 2], &two, &opts),
        Err(MetricsError::LabelOutOfRange {
            row: 1,
            label: 2,
            classes: 2
        })
    );
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(
            evaluate(&[vec![0.5, 0.5], vec![0.5, bad]], &[0, 1], &two, &opts),
            Err(MetricsError::NonFiniteProbability { row: 1, class: 1 })
        );
    }
    let thr = EvaluationOptions {
        threshold: Some(0.5),
        ..opts
    };
    assert_eq!(
        evaluate(&[vec![0.2, 0.3, 0.5]], &[0], &names(3), &thr),
        Err(MetricsError::ThresholdNotBinary { classes: 3 })
    );
    let nan_thr = EvaluationOptions {
        threshold: Some(f64::NAN),
        ..opts
    };
    assert_eq!(
        evaluate(&[vec![0.5, 0.5]], &[0], &two, &nan_thr),
        Err(MetricsError::InvalidThreshold)
    );
}

#[test]
fn log_loss_clamps_zero_probability() {
    let eval = evaluate(
        &[vec![1.0, 0.0], vec![0.0, 1.0]],
        &[1, 1],
        &names(2),
        &no_bootstrap(),
    )
    .expect("valid");
    let expected = -(LOG_LOSS_EPSILON.ln()) / 2.0;
    assert!(close(eval.log_loss, expected, 1e-12));
    assert!(eval.log_loss.is_finite());
}

#[test]
fn json_round_trip_is_valid() {
    let (probs, labels) = random_data(40, 3, 1);
    let eval = evaluate(&probs, &labels, &names(3), &EvaluationOptions::default()).expect("valid");
    let json = serde_json::to_string(&eval).expect("serializes");
    assert!(!json.contains("null") || eval.auc.is_none());
    let back: Evaluation = serde_json::from_str(&json).expect("parses");
    // serde_json's default float parsing may be off by an ulp, so compare loosely.
    assert_eq!(back.confusion_matrix, eval.confusion_matrix);
    assert_eq!(back.misclassified.len(), eval.misclassified.len());
    assert!(close(back.accuracy, eval.accuracy, 1e-12));
    assert!(close(back.log_loss, eval.log_loss, 1e-12));
    assert_eq!(back.roc.len(), 3);
    for (a, b) in back.roc.iter().zip(&eval.roc) {
        assert_eq!(a.len(), b.len());
        for (p, q) in a.iter().zip(b) {
            assert!(close(p.true_positive_rate, q.true_positive_rate, 1e-12));
            assert!(close(p.false_positive_rate, q.false_positive_rate, 1e-12));
        }
    }
    assert_eq!(back.roc[0][0].threshold, f64::MAX);
}

#[test]
fn few_items_or_a_collapsed_interval_get_a_note() {
    let (probs, labels) = random_data(10, 2, 3);
    let small = evaluate(&probs, &labels, &names(2), &no_bootstrap()).expect("valid");
    let note = small.small_sample_note().expect("10 items are few");
    assert!(note.starts_with("Only 10 images"), "{note}");
    let (probs, labels) = random_data(200, 2, 4);
    let mut large = evaluate(&probs, &labels, &names(2), &no_bootstrap()).expect("valid");
    assert_eq!(large.small_sample_note(), None);
    large.accuracy_ci = Some([0.4, 0.6]);
    large.auc_ci = Some([1.0, 1.0]);
    assert!(
        large.small_sample_note().is_some(),
        "a collapsed interval is said"
    );
}
