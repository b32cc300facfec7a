use burn::tensor::Device;
use half::f16;

use super::run::Subset;
use super::*;
use crate::efficientnet::Tail;
use crate::efficientnet::cut_shape;
use crate::efficientnet::tail::tail_tensor_shapes;
use crate::readback::read_f32;
use crate::rng::SeededRng;
use crate::test_support::names;
use crate::train::LabelledEmbeddings;
use crate::train::{OptimizerKind, TrainConfig, train as fit};

/// A tail of 1 block with small random weights (no pretrained network in unit tests).
fn random_tail(seed: u64) -> TailWeights {
    let mut rng = SeededRng::derive(seed, 1);
    TailWeights {
        blocks: 1,
        tensors: tail_tensor_shapes(1)
            .into_iter()
            .map(|(name, shape)| {
                let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
                let bound = (3.0 / fan_in as f32).sqrt();
                let len: usize = shape.iter().product();
                let values = (0..len)
                    .map(|_| {
                        if shape.len() == 1 {
                            0.1
                        } else {
                            rng.uniform(-bound, bound)
                        }
                    })
                    .collect();
                (name, shape, values)
            })
            .collect(),
    }
}

/// Two classes whose cut-point activations differ weakly in the first 8 channels' level.
fn cut_set(per_class: usize, seed: u64) -> CutDataset {
    let (c, h, w) = cut_shape(1);
    let mut rng = SeededRng::derive(seed, 2);
    let mut set = CutDataset::default();
    for label in 0..2 {
        for _ in 0..per_class {
            let values = (0..c * h * w)
                .map(|i| {
                    let shift = if i / (h * w) < 8 && label == 1 {
                        0.4
                    } else {
                        0.0
                    };
                    f16::from_f32((rng.uniform(0.0, 1.0) + shift).min(6.0))
                })
                .collect();
            set.features.push(CutFeatures { values });
            set.labels.push(label);
        }
    }
    set
}

/// The frozen tail's embeddings of `set`.
fn embeddings(tail: &TailWeights, set: &CutDataset) -> LabelledEmbeddings {
    let device = Device::flex();
    let module = Tail::from_weights(tail, &device).expect("fits");
    let rows: Vec<&CutFeatures> = set.features.iter().collect();
    let out = module.forward(features::batch_tensor(&rows, 1, &device));
    let dim = out.dims()[1];
    let flat = pollster::block_on(read_f32(out)).expect("reads");
    LabelledEmbeddings {
        embeddings: flat.chunks(dim).map(<[f32]>::to_vec).collect(),
        labels: set.labels.clone(),
    }
}

/// A linear head fitted on the frozen embeddings of `set` (a strong penalty: a weak start).
fn start_head(tail: &TailWeights, set: &CutDataset) -> TrainedHead {
    let config = TrainConfig {
        head: crate::head::HeadKind::Linear,
        optimizer: OptimizerKind::Lbfgs,
        weight_decay: 1.0,
        epochs: 50,
        patience: None,
        ..TrainConfig::default()
    };
    pollster::block_on(fit(
        &names(2),
        &embeddings(tail, set),
        None,
        &config,
        &Device::flex(),
        &CancelToken::new(),
        &mut |_| {},
    ))
    .expect("fits the head")
}

/// Hears nothing.
struct Quiet;
impl Progress for Quiet {}

fn settings() -> FineTuneConfig {
    FineTuneConfig {
        blocks: 1,
        epochs: 4,
        batch_size: 8,
        head_learning_rate: 3e-3,
        backbone_learning_rate: 1e-3,
        weight_decay: 0.0,
        penalty: TunePenalty::Decay,
        patience: None,
    }
}

fn tune(
    start: &TrainedHead,
    tail: &TailWeights,
    train: &CutDataset,
    val: Option<&CutDataset>,
) -> FineTuned {
    pollster::block_on(fine_tune(
        start,
        tail,
        train,
        val,
        &settings(),
        ThresholdRule::BalancedAccuracy,
        7,
        &Device::flex(),
        &CancelToken::new(),
        &mut Quiet,
    ))
    .expect("fine-tunes")
}

/// Class-weighted validation loss of a tail and head on `set`.
fn loss_on(tail: &TailWeights, head: &TrainedHead, set: &CutDataset) -> f64 {
    let classifier = TunedClassifier::new(
        tail,
        &head.config,
        &head.weights,
        &head.normalization,
        &Device::flex(),
    )
    .expect("builds");
    let probs = pollster::block_on(classifier.predict(&set.features)).expect("predicts");
    crate::train::host_loss(&probs, &set.labels, &head.class_weights, head.loss)
}

#[test]
fn fine_tuning_trains_the_tail_and_is_reproducible() {
    let tail = random_tail(3);
    let train = cut_set(16, 4);
    let val = cut_set(8, 5);
    let start = start_head(&tail, &train);
    // Without validation every epoch runs and the last is kept.
    let free = tune(&start, &tail, &train, None);
    assert_eq!(free.head.history.len(), 4);
    let (first, last) = (
        free.head.history[0].train_loss,
        free.head.history[3].train_loss,
    );
    assert!(last < first, "training loss {first} → {last}");
    assert!(free.tail != tail, "the blocks changed");
    assert!(free.head.weights != start.weights, "the head changed");
    assert!(free.tail.check().is_ok());
    // With validation the kept model is never worse there than the head alone (epoch 0).
    let tuned = tune(&start, &tail, &train, Some(&val));
    let alone = loss_on(&tail, &start, &val);
    let kept = loss_on(&tuned.tail, &tuned.head, &val);
    assert!(
        kept <= alone + 1e-9,
        "kept {kept} vs the head alone {alone}"
    );
    if tuned.head.kept_epoch == 0 {
        assert!(tuned.tail == tail && tuned.head.weights == start.weights);
    }
    let validation = tuned.head.validation.as_ref().expect("validation figures");
    assert_eq!(validation.n, 16);
    assert!(tuned.head.threshold.is_some(), "two classes: a threshold");
    // Same data and seed: the same model.
    assert!(tune(&start, &tail, &train, Some(&val)) == tuned);
    // The classifier built from the stored weights predicts what validation measured.
    let classifier = TunedClassifier::new(
        &tuned.tail,
        &tuned.head.config,
        &tuned.head.weights,
        &tuned.head.normalization,
        &Device::flex(),
    )
    .expect("builds");
    let probs = pollster::block_on(classifier.predict(&val.features)).expect("predicts");
    let again = evaluate(
        &probs,
        &val.labels,
        &names(2),
        &EvaluationOptions::default(),
    )
    .expect("evaluates");
    assert_eq!(again.accuracy, validation.accuracy);
    assert_eq!(again.auc, validation.auc);
}

#[test]
fn bad_settings_and_data_are_refused() {
    let tail = random_tail(3);
    let train = cut_set(4, 4);
    let start = start_head(&tail, &train);
    let attempt = |config: &FineTuneConfig, data: &CutDataset, cancel: &CancelToken| {
        pollster::block_on(fine_tune(
            &start,
            &tail,
            data,
            None,
            config,
            ThresholdRule::BalancedAccuracy,
            1,
            &Device::flex(),
            cancel,
            &mut Quiet,
        ))
    };
    let ok = CancelToken::new();
    for config in [
        FineTuneConfig {
            blocks: 0,
            ..settings()
        },
        FineTuneConfig {
            blocks: 2,
            ..settings()
        },
        FineTuneConfig {
            epochs: 0,
            ..settings()
        },
        FineTuneConfig {
            backbone_learning_rate: f64::NAN,
            ..settings()
        },
        FineTuneConfig {
            patience: Some(0),
            ..settings()
        },
    ] {
        assert!(
            matches!(attempt(&config, &train, &ok), Err(TrainError::Config(_))),
            "{config:?}"
        );
    }
    let mut short = train.clone();
    short.features[2].values.pop();
    assert!(matches!(
        attempt(&settings(), &short, &ok),
        Err(TrainError::Data(_))
    ));
    let mut labels = train.clone();
    labels.labels[0] = 5;
    assert!(matches!(
        attempt(&settings(), &labels, &ok),
        Err(TrainError::Data(_))
    ));
    let cancelled = CancelToken::new();
    cancelled.cancel();
    assert!(matches!(
        attempt(&settings(), &train, &cancelled),
        Err(TrainError::Cancelled)
    ));
    // Without validation every epoch runs and the last is kept, with argmax.
    let tuned = attempt(&settings(), &train, &ok).expect("tunes");
    assert_eq!((tuned.head.kept_epoch, tuned.head.threshold), (4, None));
}

#[test]
fn a_classifier_refuses_activations_of_another_cut() {
    let tail = random_tail(3);
    let train = cut_set(4, 4);
    let start = start_head(&tail, &train);
    let classifier = TunedClassifier::new(
        &tail,
        &start.config,
        &start.weights,
        &start.normalization,
        &Device::flex(),
    )
    .expect("builds");
    let wrong = CutFeatures {
        values: vec![f16::ZERO; 10],
    };
    assert!(pollster::block_on(classifier.predict(&[wrong])).is_err());
    // The pretrained tail with its head predicts what the head predicts on its embeddings.
    let probs = pollster::block_on(classifier.predict(&train.features)).expect("predicts");
    let head = crate::train::Classifier::new(
        &start.config,
        &start.weights,
        &start.normalization,
        &Device::flex(),
    )
    .expect("builds");
    let direct =
        pollster::block_on(head.predict(&embeddings(&tail, &train).embeddings)).expect("predicts");
    for (a, b) in probs.iter().flatten().zip(direct.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn a_run_on_a_subset_asks_about_the_callers_items_and_gets_its_own_views() {
    struct Views(Vec<Vec<usize>>);
    impl Progress for Views {
        fn augmented_views(&mut self, items: &[usize]) -> Vec<(usize, Vec<f32>)> {
            self.0.push(items.to_vec());
            // One view of every one of the caller's five items.
            (0..5).map(|i| (i, vec![i as f32])).collect()
        }
        fn extra_training(&mut self, train: &[usize], validation: &[usize]) -> LabelledEmbeddings {
            self.0.push(train.to_vec());
            self.0.push(validation.to_vec());
            LabelledEmbeddings::default()
        }
    }
    let mut inner = Views(Vec::new());
    let mut subset = Subset {
        inner: &mut inner,
        items: &[4, 1, 3],
    };
    let views = subset.augmented_views(&[0, 1, 2]);
    assert_eq!(views, [(1, vec![1.0]), (2, vec![3.0]), (0, vec![4.0])]);
    subset.extra_training(&[2], &[0, 1]);
    assert_eq!(inner.0, [vec![4, 1, 3], vec![3], vec![4, 1]]);
}

/// Squared distance of two tails' weights.
fn distance(a: &TailWeights, b: &TailWeights) -> f64 {
    a.tensors
        .iter()
        .zip(&b.tensors)
        .flat_map(|(x, y)| x.2.iter().zip(&y.2))
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum()
}

#[test]
fn the_recipes_penalty_holds_the_blocks_near_their_pretrained_weights() {
    let tail = random_tail(3);
    let train = cut_set(16, 4);
    let start = start_head(&tail, &train);
    assert!(
        start.train_config.weight_decay > 0.0,
        "a penalised linear head"
    );
    let run = |penalty| {
        pollster::block_on(fine_tune(
            &start,
            &tail,
            &train,
            None,
            &FineTuneConfig {
                penalty,
                ..settings()
            },
            ThresholdRule::BalancedAccuracy,
            7,
            &Device::flex(),
            &CancelToken::new(),
            &mut Quiet,
        ))
        .expect("fine-tunes")
    };
    let (free, held) = (run(TunePenalty::Decay), run(TunePenalty::Recipe));
    let (d_free, d_held) = (distance(&free.tail, &tail), distance(&held.tail, &tail));
    assert!(d_held < d_free, "L2-SP {d_held} vs none {d_free}");
    assert_ne!(held.tail, tail, "the blocks still train");
}
