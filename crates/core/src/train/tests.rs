use super::*;
use crate::readback::read_f32;

/// Blobs per class in 8 dimensions, separable but noisy.
fn blobs(n_per_class: &[usize], seed: u64) -> LabelledEmbeddings {
    crate::test_support::blobs(n_per_class, 8, 2.0, seed)
}

use crate::test_support::names;

fn run(
    config: &TrainConfig,
    train_set: &LabelledEmbeddings,
    val: &LabelledEmbeddings,
    k: usize,
) -> TrainedHead {
    pollster::block_on(train(
        &names(k),
        train_set,
        Some(val),
        config,
        &Device::flex(),
        &CancelToken::new(),
        &mut |_| {},
    ))
    .expect("trains")
}

#[test]
fn every_head_and_loss_learns_separable_data() {
    let train_set = blobs(&[60, 60, 60], 1);
    let val = blobs(&[30, 30, 30], 2);
    for head in [
        HeadKind::Linear,
        HeadKind::Mlp {
            hidden: 16,
            dropout: 0.2,
        },
    ] {
        for loss in [LossKind::CrossEntropy, LossKind::MeanSquaredError] {
            let config = TrainConfig {
                head,
                loss: Some(loss),
                epochs: 15,
                learning_rate: 1e-2,
                ..TrainConfig::default()
            };
            let trained = run(&config, &train_set, &val, 3);
            let v = trained.validation.as_ref().expect("validation metrics");
            assert!(v.accuracy > 0.8, "{head:?} {loss:?}: {}", v.accuracy);
            // Loss goes down.
            let first = trained.history[0].train_loss;
            let last = trained
                .history
                .last()
                .map(|h| h.train_loss)
                .unwrap_or(first);
            assert!(last < first, "{head:?} {loss:?}: {first} → {last}");
        }
    }
    // Binary: sigmoid + BCE (the default for two classes) and softmax CE.
    let train2 = blobs(&[50, 150], 3);
    let val2 = blobs(&[25, 75], 4);
    for loss in [None, Some(LossKind::CrossEntropy)] {
        let config = TrainConfig {
            loss,
            epochs: 15,
            learning_rate: 1e-2,
            ..TrainConfig::default()
        };
        let trained = run(&config, &train2, &val2, 2);
        let v = trained.validation.as_ref().expect("validation metrics");
        assert!(v.auc.is_some_and(|a| a > 0.9), "{loss:?} {:?}", v.auc);
        assert!(v.accuracy_ci.is_some());
        let expected_output = if loss.is_none() {
            OutputKind::Sigmoid
        } else {
            OutputKind::Softmax
        };
        assert_eq!(trained.config.output, expected_output);
        // 50 vs 150 items is imbalanced: class weights switch on (N / (K · n_c)).
        assert_eq!(trained.class_weights, vec![2.0, 200.0 / 300.0]);
    }
}

#[test]
fn same_seed_same_result_other_seed_differs() {
    let train_set = blobs(&[40, 40], 5);
    let val = blobs(&[20, 20], 6);
    let config = TrainConfig {
        head: HeadKind::Mlp {
            hidden: 8,
            dropout: 0.3,
        },
        epochs: 4,
        ..TrainConfig::default()
    };
    let a = run(&config, &train_set, &val, 2);
    let b = run(&config, &train_set, &val, 2);
    assert_eq!(a.weights, b.weights);
    assert_eq!(a.history, b.history);
    assert_eq!(a.validation, b.validation);
    let c = run(&TrainConfig { seed: 7, ..config }, &train_set, &val, 2);
    assert_ne!(a.weights, c.weights);
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    // Labels are noise: validation loss cannot keep improving, so training stops early
    // and keeps the epoch with the lowest validation loss.
    let mut train_set = blobs(&[60, 60], 7);
    let mut rng = SeededRng::new(9);
    rng.shuffle(&mut train_set.labels);
    let val = blobs(&[30, 30], 8);
    let config = TrainConfig {
        head: HeadKind::Mlp {
            hidden: 32,
            dropout: 0.0,
        },
        epochs: 200,
        learning_rate: 3e-2,
        schedule: Schedule::Constant,
        patience: Some(3),
        ..TrainConfig::default()
    };
    let trained = run(&config, &train_set, &val, 2);
    assert_eq!(trained.stop_reason, StopReason::EarlyStopped);
    assert!(trained.history.len() < 200);
    let best = trained
        .history
        .iter()
        .min_by(|a, b| {
            a.validation_loss
                .partial_cmp(&b.validation_loss)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .expect("epochs ran");
    assert_eq!(trained.kept_epoch, best.epoch);
    assert_eq!(trained.history.len(), best.epoch + 3);
    // The kept weights reproduce the best epoch's validation loss.
    let classifier = Classifier::new(
        &trained.config,
        &trained.weights,
        &trained.normalization,
        &Device::flex(),
    )
    .expect("builds");
    let probs = pollster::block_on(classifier.predict(&val.embeddings)).expect("predicts");
    let loss = host_loss(&probs, &val.labels, &trained.class_weights, trained.loss);
    let best_loss = best.validation_loss.unwrap_or(f64::NAN);
    assert!((loss - best_loss).abs() < 1e-5, "{loss} vs {best_loss}");
}

#[test]
fn cancel_stops_and_keeps_the_epochs_done() {
    let train_set = blobs(&[20, 20], 10);
    let cancel = CancelToken::new();
    let mut epochs_seen = 0;
    let trained = pollster::block_on(train(
        &names(2),
        &train_set,
        None,
        &TrainConfig {
            epochs: 50,
            ..TrainConfig::default()
        },
        &Device::flex(),
        &cancel,
        &mut |event| {
            if let TrainEvent::Epoch(e) = event {
                epochs_seen = e.epoch;
                if e.epoch == 2 {
                    cancel.cancel();
                }
            }
        },
    ))
    .expect("keeps a model");
    assert_eq!(trained.stop_reason, StopReason::Cancelled);
    assert_eq!(
        (trained.history.len(), trained.kept_epoch, epochs_seen),
        (2, 2, 2)
    );
    assert!(trained.validation.is_none());

    let cancelled_first = CancelToken::new();
    cancelled_first.cancel();
    let result = pollster::block_on(train(
        &names(2),
        &train_set,
        None,
        &TrainConfig::default(),
        &Device::flex(),
        &cancelled_first,
        &mut |_| {},
    ));
    assert!(matches!(result, Err(TrainError::Cancelled)));
}

#[test]
fn bad_settings_and_data_are_errors() {
    let data = blobs(&[5, 5], 11);
    let device = Device::flex();
    let try_config =
        |config: TrainConfig| Trainer::new(&names(2), &data, None, &config, &device).err();
    assert!(
        try_config(TrainConfig {
            learning_rate: 0.0,
            ..TrainConfig::default()
        })
        .is_some()
    );
    assert!(
        try_config(TrainConfig {
            batch_size: 0,
            ..TrainConfig::default()
        })
        .is_some()
    );
    assert!(
        try_config(TrainConfig {
            label_smoothing: 0.7,
            ..TrainConfig::default()
        })
        .is_some()
    );
    assert!(
        Trainer::new(
            &names(3),
            &data,
            None,
            &TrainConfig {
                loss: Some(LossKind::BinaryCrossEntropy),
                ..TrainConfig::default()
            },
            &device
        )
        .is_err()
    );
    // A class with no items, a label out of range, ragged rows.
    assert!(Trainer::new(&names(3), &data, None, &TrainConfig::default(), &device).is_err());
    let mut bad = data.clone();
    bad.labels[0] = 5;
    assert!(Trainer::new(&names(2), &bad, None, &TrainConfig::default(), &device).is_err());
    let mut ragged = data.clone();
    ragged.embeddings[3].push(1.0);
    assert!(Trainer::new(&names(2), &ragged, None, &TrainConfig::default(), &device).is_err());
    assert!(
        Trainer::new(
            &names(2),
            &LabelledEmbeddings::default(),
            None,
            &TrainConfig::default(),
            &device
        )
        .is_err()
    );
}

#[test]
fn losses_match_hand_computation() {
    let device = Device::flex();
    let logits = Tensor::<2>::from_data(
        TensorData::new(vec![2.0f32, 0.0, -1.0, 1.0], [2, 2]),
        &device,
    );
    let targets = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]),
        &device,
    );
    let ce = pollster::block_on(read_f32(per_item_loss(
        logits.clone(),
        targets.clone(),
        LossKind::CrossEntropy,
    )))
    .expect("reads");
    let expected0 = -(2f32.exp() / (2f32.exp() + 1.0)).ln();
    let expected1 = -(1f32.exp() / (1f32.exp() + (-1f32).exp())).ln();
    assert!((ce[0] - expected0).abs() < 1e-5 && (ce[1] - expected1).abs() < 1e-5);
    let mse = pollster::block_on(read_f32(per_item_loss(
        logits,
        targets,
        LossKind::MeanSquaredError,
    )))
    .expect("reads");
    let p0 = 2f32.exp() / (2f32.exp() + 1.0);
    assert!((mse[0] - (1.0 - p0).powi(2)).abs() < 1e-5);
    let z = Tensor::<2>::from_data(TensorData::new(vec![3.0f32, -50.0, 80.0], [3, 1]), &device);
    let y = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [3, 1]), &device);
    let bce = pollster::block_on(read_f32(per_item_loss(z, y, LossKind::BinaryCrossEntropy)))
        .expect("reads");
    assert!((bce[0] - (1.0 + (-3f32).exp()).ln()).abs() < 1e-5);
    // Huge logits stay finite: −ln σ(−50) ≈ 50, −ln(1 − σ(80)) ≈ 80.
    assert!((bce[1] - 50.0).abs() < 1e-3 && (bce[2] - 80.0).abs() < 1e-3);
}

#[test]
fn class_weights_follow_inverse_frequency() {
    let labels = [0, 0, 0, 0, 1];
    assert_eq!(
        class_weights_for(&labels, 2, ClassWeighting::Auto),
        vec![5.0 / 8.0, 2.5]
    );
    assert_eq!(
        class_weights_for(&labels, 2, ClassWeighting::Off),
        vec![1.0, 1.0]
    );
    // 2 vs 3 items is within the 1.5 ratio: no weights.
    assert_eq!(
        class_weights_for(&[0, 0, 1, 1, 1], 2, ClassWeighting::Auto),
        vec![1.0, 1.0]
    );
    assert_eq!(
        class_weights_for(&[0, 1, 1], 2, ClassWeighting::On),
        vec![1.5, 0.75]
    );
}
