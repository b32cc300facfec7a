use super::*;
use crate::rng::SeededRng;
use crate::split::stratified_folds;
use crate::train::{StopReason, TrainEvent};

/// `n` items per class in 6 dimensions; class c is shifted by 3 along dimension c.
fn blobs(n_per_class: &[usize], seed: u64) -> LabelledEmbeddings {
    let mut rng = SeededRng::new(seed);
    let mut data = LabelledEmbeddings::default();
    for (class, &n) in n_per_class.iter().enumerate() {
        for _ in 0..n {
            let row = (0..6)
                .map(|d| if d == class { 3.0 } else { 0.0 } + rng.normal())
                .collect();
            data.embeddings.push(row);
            data.labels.push(class);
        }
    }
    data
}

fn names(k: usize) -> Vec<String> {
    ["NORMAL", "PNEUMONIA", "COVID"][..k]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn quick(validation_share: f64) -> RunConfig {
    RunConfig {
        train: TrainConfig {
            head: HeadKind::Linear,
            epochs: 5,
            learning_rate: 0.05,
            patience: None,
            ..TrainConfig::default()
        },
        validation_share,
        recipe: Recipe::Manual,
        ..RunConfig::default()
    }
}

/// Records what the run reported; cancels after `cancel_after` epochs when set.
#[derive(Default)]
struct Recorder {
    events: Vec<TrainEvent>,
    waits: usize,
    split: Option<(Vec<usize>, Vec<usize>)>,
    extra_per_item: usize,
    cancel_after: Option<(usize, CancelToken)>,
}

impl Progress for Recorder {
    fn event(&mut self, event: &TrainEvent) {
        self.events.push(event.clone());
    }

    async fn between_epochs(&mut self) {
        if let Some((after, token)) = &self.cancel_after
            && self.waits == *after
        {
            token.cancel();
        }
        self.waits += 1;
    }

    fn extra_training(&mut self, train: &[usize], validation: &[usize]) -> LabelledEmbeddings {
        self.split = Some((train.to_vec(), validation.to_vec()));
        let mut extra = LabelledEmbeddings::default();
        for _ in 0..self.extra_per_item {
            for _ in train {
                extra.embeddings.push(vec![0.0; 6]);
                extra.labels.push(0);
            }
        }
        extra
    }
}

fn go(
    items: &LabelledEmbeddings,
    validation: Validation<'_>,
    config: &RunConfig,
    cancel: &CancelToken,
    recorder: &mut Recorder,
) -> Result<Run, TrainError> {
    let k = items.labels.iter().max().map_or(0, |m| m + 1);
    pollster::block_on(run(
        &names(k),
        items,
        validation,
        config,
        &Device::flex(),
        cancel,
        recorder,
    ))
}

#[test]
fn splits_trains_keeps_the_best_and_evaluates_the_held_out_items() {
    let items = blobs(&[20, 20, 12], 1);
    let mut recorder = Recorder {
        extra_per_item: 1,
        ..Recorder::default()
    };
    let run = go(
        &items,
        Validation::Split { groups: None },
        &quick(0.25),
        &CancelToken::new(),
        &mut recorder,
    )
    .expect("trains");
    // The split covers every item once, holds out a quarter of each class.
    let mut all = [run.train_items.clone(), run.validation_items.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, (0..52).collect::<Vec<_>>());
    for (class, held) in [(0, 5), (1, 5), (2, 3)] {
        let n = run
            .validation_items
            .iter()
            .filter(|&&i| items.labels[i] == class)
            .count();
        assert_eq!(n, held, "class {class}");
    }
    // The hook saw that split, and its rows trained (never the validation items).
    assert_eq!(
        recorder.split,
        Some((run.train_items.clone(), run.validation_items.clone()))
    );
    let Some(TrainEvent::Started {
        train_items,
        validation_items,
        ..
    }) = recorder.events.first()
    else {
        panic!("starts with Started: {:?}", recorder.events.first());
    };
    assert_eq!(*train_items, 2 * run.train_items.len());
    assert_eq!(*validation_items, 13);
    // Epochs ran, one wait before each, and the kept one is the lowest validation loss.
    let trained = &run.trained;
    assert_eq!(trained.history.len(), 5);
    assert_eq!(recorder.waits, 5);
    let best = trained
        .history
        .iter()
        .min_by(|a, b| {
            a.validation_loss
                .partial_cmp(&b.validation_loss)
                .expect("finite")
        })
        .expect("epochs");
    assert_eq!(trained.kept_epoch, best.epoch);
    let validation = trained.validation.as_ref().expect("evaluated");
    assert_eq!(validation.n, 13);
    assert!(validation.accuracy > 0.7, "{}", validation.accuracy);
    assert!(matches!(
        recorder.events.last(),
        Some(TrainEvent::Finished { reason: StopReason::Completed, kept_epoch }) if *kept_epoch == best.epoch
    ));
}

#[test]
fn a_share_of_zero_trains_on_everything_and_a_given_set_validates() {
    let items = blobs(&[8, 8], 2);
    let run = go(
        &items,
        Validation::Split { groups: None },
        &quick(0.0),
        &CancelToken::new(),
        &mut Recorder::default(),
    )
    .expect("trains");
    assert_eq!(run.train_items.len(), 16);
    assert!(run.validation_items.is_empty());
    assert!(run.trained.validation.is_none());

    let given = blobs(&[4, 3], 3);
    let run = go(
        &items,
        Validation::Given {
            set: &given,
            groups: None,
        },
        &quick(0.3),
        &CancelToken::new(),
        &mut Recorder::default(),
    )
    .expect("trains");
    assert_eq!(run.train_items.len(), 16);
    assert!(run.validation_items.is_empty());
    assert_eq!(run.trained.validation.as_ref().map(|v| v.n), Some(7));
}

#[test]
fn groups_stay_on_one_side() {
    let items = blobs(&[12, 12], 4);
    let groups: Vec<String> = (0..24).map(|i| format!("patient{}", i / 3)).collect();
    let run = go(
        &items,
        Validation::Split {
            groups: Some(&groups),
        },
        &quick(0.25),
        &CancelToken::new(),
        &mut Recorder::default(),
    )
    .expect("trains");
    for &v in &run.validation_items {
        assert!(
            run.train_items.iter().all(|&t| groups[t] != groups[v]),
            "{} straddles",
            groups[v]
        );
    }
}

#[test]
fn a_class_too_small_to_split_is_named_and_a_bad_share_refused() {
    let items = blobs(&[6, 6, 1], 5);
    let error = go(
        &items,
        Validation::Split { groups: None },
        &quick(0.2),
        &CancelToken::new(),
        &mut Recorder::default(),
    )
    .expect_err("one COVID item");
    assert!(matches!(error, TrainError::Split { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("\u{201c}COVID\u{201d}"), "{message}");
    assert!(!message.contains("class 2"), "{message}");

    let error = go(
        &blobs(&[6, 6], 5),
        Validation::Split { groups: None },
        &quick(0.7),
        &CancelToken::new(),
        &mut Recorder::default(),
    )
    .expect_err("share above 0.5");
    assert!(matches!(error, TrainError::Config(_)), "{error:?}");
}

#[test]
fn a_stop_between_epochs_keeps_what_ran() {
    let items = blobs(&[10, 10], 6);
    let token = CancelToken::new();
    let mut recorder = Recorder {
        cancel_after: Some((2, token.clone())),
        ..Recorder::default()
    };
    let run = go(
        &items,
        Validation::Split { groups: None },
        &quick(0.3),
        &token,
        &mut recorder,
    )
    .expect("two epochs ran");
    assert_eq!(run.trained.history.len(), 2);
    assert_eq!(run.trained.stop_reason, StopReason::Cancelled);

    let token = CancelToken::new();
    let mut recorder = Recorder {
        cancel_after: Some((0, token.clone())),
        ..Recorder::default()
    };
    let error = go(
        &items,
        Validation::Split { groups: None },
        &quick(0.3),
        &token,
        &mut recorder,
    )
    .expect_err("nothing ran");
    assert!(matches!(error, TrainError::Cancelled), "{error:?}");
}

#[test]
fn read_back_settings_are_clamped_to_the_limits() {
    let wild = RunConfig {
        train: TrainConfig {
            head: HeadKind::Mlp {
                hidden: 0,
                dropout: 3.0,
            },
            epochs: 0,
            batch_size: 10_000_000,
            learning_rate: f64::NAN,
            weight_decay: -1.0,
            label_smoothing: 0.9,
            patience: Some(0),
            seed: 3,
            ..TrainConfig::default()
        },
        validation_share: 7.0,
        folds: 1000,
        threshold: ThresholdRule::Sensitivity { target: 1.5 },
        recipe: Recipe::Manual,
        mlp_budget: f64::NAN,
    }
    .clamped();
    let d = RunConfig::default();
    assert_eq!(
        wild.train.head,
        HeadKind::Mlp {
            hidden: DEFAULT_HIDDEN_UNITS,
            dropout: DEFAULT_DROPOUT
        }
    );
    assert_eq!(wild.train.epochs, 1);
    assert_eq!(wild.train.batch_size, *limits::BATCH_SIZE.end());
    assert_eq!(wild.train.learning_rate, d.train.learning_rate);
    assert_eq!(wild.train.weight_decay, d.train.weight_decay);
    assert_eq!(wild.train.label_smoothing, d.train.label_smoothing);
    assert_eq!(wild.train.patience, d.train.patience);
    assert_eq!(wild.train.seed, 3);
    assert_eq!(wild.validation_share, 0.5);
    assert_eq!(wild.folds, *limits::FOLDS.end());
    assert_eq!(wild.threshold, ThresholdRule::BalancedAccuracy);
    assert_eq!(wild.recipe, Recipe::Manual);
    assert_eq!(wild.mlp_budget, d.mlp_budget);
    let negative = RunConfig {
        validation_share: -0.2,
        ..RunConfig::default()
    }
    .clamped();
    assert_eq!(negative.validation_share, 0.0);
    assert_eq!(RunConfig::default().clamped(), RunConfig::default());
    assert_eq!(
        RunConfig {
            validation_share: f64::NAN,
            ..RunConfig::default()
        }
        .clamped()
        .validation_share,
        DEFAULT_VALIDATION_SHARE
    );
}

#[test]
fn settings_read_back_without_the_share_take_the_default_share() {
    let mut value = serde_json::to_value(RunConfig {
        validation_share: 0.35,
        ..RunConfig::default()
    })
    .expect("serialises");
    let back: RunConfig = serde_json::from_value(value.clone()).expect("parses");
    assert_eq!(back.validation_share, 0.35);
    value
        .as_object_mut()
        .expect("an object")
        .remove("validation_share");
    let back: RunConfig = serde_json::from_value(value).expect("parses");
    assert_eq!(back.validation_share, DEFAULT_VALIDATION_SHARE);
    assert_eq!(back.train, TrainConfig::default());
}

fn cross_validated(
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    k: usize,
) -> Result<CrossValidation, TrainError> {
    let classes = names(items.labels.iter().max().map_or(0, |m| m + 1));
    let config = TrainConfig {
        epochs: 40,
        ..quick(0.0).train
    };
    pollster::block_on(cross_validate(
        &classes,
        items,
        groups,
        k,
        &config,
        &Device::flex(),
        &CancelToken::new(),
        &mut Recorder::default(),
    ))
}

#[test]
fn cross_validation_predicts_every_item_from_a_head_not_trained_on_it() {
    let items = blobs(&[12, 12, 9], 7);
    let cv = cross_validated(&items, None, 3).expect("cross-validates");
    // Every fold holds a third of every class.
    for fold in 0..3 {
        for (class, per_fold) in [(0, 4), (1, 4), (2, 3)] {
            let n = (0..33)
                .filter(|&i| cv.folds[i] == fold && items.labels[i] == class)
                .count();
            assert_eq!(n, per_fold, "fold {fold}, class {class}");
        }
    }
    assert_eq!(cv.out_of_fold.len(), 33);
    for row in &cv.out_of_fold {
        assert_eq!(row.len(), 3);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{row:?}");
    }
    assert_eq!(cv.evaluation.n, 33);
    assert!(cv.evaluation.accuracy > 0.7, "{}", cv.evaluation.accuracy);
    assert!(cv.evaluation.accuracy_ci.is_some());
    // Same seed, same folds and figures.
    let again = cross_validated(&items, None, 3).expect("cross-validates");
    assert_eq!(again.folds, cv.folds);
    assert_eq!(again.evaluation.accuracy, cv.evaluation.accuracy);

    // An item's own label cannot leak: with labels that are pure noise, out-of-fold accuracy
    // stays near chance while a head scored on its own training items would fit them.
    let mut noise = blobs(&[20, 20], 8);
    let mut rng = SeededRng::new(9);
    for row in &mut noise.embeddings {
        *row = (0..6).map(|_| rng.normal()).collect();
    }
    let cv = cross_validated(&noise, None, 4).expect("cross-validates");
    assert!(cv.evaluation.accuracy < 0.8, "{}", cv.evaluation.accuracy);
}

#[test]
fn folds_keep_groups_whole_and_bad_inputs_are_errors() {
    let labels: Vec<usize> = (0..24).map(|i| i / 12).collect();
    let groups: Vec<String> = (0..24).map(|i| format!("patient{}", i / 2)).collect();
    let folds = stratified_folds(&labels, Some(&groups), 3, 1).expect("folds");
    for i in 0..24 {
        for j in 0..24 {
            if groups[i] == groups[j] {
                assert_eq!(folds[i], folds[j], "{} split across folds", groups[i]);
            }
        }
    }
    let items = blobs(&[6, 6], 2);
    assert!(matches!(
        cross_validated(&items, None, 1),
        Err(TrainError::Config(_))
    ));
    let error = cross_validated(&blobs(&[6, 6, 1], 2), None, 3).expect_err("one COVID item");
    assert!(
        error.to_string().contains("\u{201c}COVID\u{201d}"),
        "{error}"
    );
}
