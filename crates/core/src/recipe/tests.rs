use super::*;
use crate::model_file::ModelFile;
use crate::rng::SeededRng;
use crate::test_support::{blobs, names};

fn searched(
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    options: &SearchOptions,
) -> Result<Search, TrainError> {
    searched_with_views(items, groups, &[], options)
}

fn searched_with_views(
    items: &LabelledEmbeddings,
    groups: Option<&[String]>,
    views: &[(usize, Vec<f32>)],
    options: &SearchOptions,
) -> Result<Search, TrainError> {
    let k = items.labels.iter().max().map_or(0, |m| m + 1);
    pollster::block_on(search(
        &names(k),
        items,
        groups,
        views,
        options,
        &Device::flex(),
        &CancelToken::new(),
        &mut Events::default(),
    ))
}

/// The automatic recipe on two classes without the MLP.
fn automatic_two_classes(
    items: &LabelledEmbeddings,
    views: &[(usize, Vec<f32>)],
) -> (TrainedHead, Search) {
    pollster::block_on(automatic(
        &names(2),
        items,
        None,
        views,
        None,
        &no_mlp(),
        &Device::flex(),
        &CancelToken::new(),
        &mut Events::default(),
    ))
    .expect("runs")
}

#[derive(Default)]
struct Events(Vec<SearchEvent>);
impl Progress for Events {
    fn search(&mut self, event: &SearchEvent) {
        self.0.push(event.clone());
    }
}

fn no_mlp() -> SearchOptions {
    SearchOptions {
        mlp_budget: 0.0,
        ..SearchOptions::default()
    }
}

#[test]
fn with_five_images_a_class_the_figures_come_from_repeated_folds_over_every_image() {
    let items = blobs(&[5, 5], 16, 1.5, 1);
    let found = searched(&items, None, &SearchOptions::default()).expect("searches");
    assert_eq!((found.folds, found.repeats), (5, SMALL_REPEATS));
    assert_eq!(found.evaluation.n, 10);
    assert!(found.evaluation.accuracy_ci.is_some());
    assert_eq!(found.out_of_fold.len(), 10);
    // Every linear penalty and the (cheap, here) MLP were scored.
    assert_eq!(found.scores.len(), INVERSE_PENALTIES.len() + 1);
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    assert!(matches!(
        found.scores.last().map(|s| &s.candidate),
        Some(Candidate::Mlp { .. })
    ));
    let best = found.chosen().log_loss;
    assert!(found.scores.iter().all(|s| s.log_loss >= best));
    let threshold = found.threshold.expect("two classes get a threshold");
    assert!((0.0..=1.0).contains(&threshold.value));
}

#[test]
fn the_same_seed_gives_the_same_choice_and_another_seed_other_folds() {
    let items = blobs(&[12, 12, 12], 10, 1.0, 2);
    let first = searched(&items, None, &no_mlp()).expect("searches");
    let again = searched(&items, None, &no_mlp()).expect("searches");
    assert_eq!(first, again);
    let other = searched(
        &items,
        None,
        &SearchOptions {
            seed: 7,
            ..no_mlp()
        },
    )
    .expect("searches");
    assert_ne!(first.out_of_fold, other.out_of_fold);
    assert!(first.threshold.is_none(), "three classes have no threshold");
}

/// 60 items of 40 standard-normal values, labelled 0, 1, 0, 1, …: nothing to learn.
fn noise_labels(seed: u64) -> LabelledEmbeddings {
    let mut rng = SeededRng::new(seed);
    LabelledEmbeddings {
        embeddings: (0..60)
            .map(|_| (0..40).map(|_| rng.normal()).collect())
            .collect(),
        labels: (0..60).map(|i| i % 2).collect(),
    }
}

#[test]
fn noise_chooses_a_strong_penalty_and_separable_data_a_weaker_one() {
    let noise = noise_labels(3);
    let found = searched(&noise, None, &no_mlp()).expect("searches");
    assert!(
        matches!(found.chosen().candidate, Candidate::Linear { c, .. } if c <= 1e-2),
        "{:?}",
        found.chosen()
    );
    // Out of fold, noise is not learnt: the figure is near chance, not the training fit.
    assert!(
        found.evaluation.accuracy < 0.7,
        "{}",
        found.evaluation.accuracy
    );
    let separable = blobs(&[40, 40], 6, 4.0, 4);
    let found = searched(&separable, None, &no_mlp()).expect("searches");
    assert!(
        matches!(found.chosen().candidate, Candidate::Linear { c, .. } if c > INVERSE_PENALTIES[2]),
        "{:?}",
        found.chosen()
    );
    assert!(found.evaluation.accuracy > 0.95);
}

#[test]
fn imbalanced_classes_add_weighted_candidates_and_an_expensive_mlp_is_skipped() {
    let items = blobs(&[40, 12], 8, 2.0, 5);
    let found = searched(&items, None, &no_mlp()).expect("searches");
    assert_eq!(found.scores.len(), 2 * INVERSE_PENALTIES.len());
    assert!(found.scores.iter().any(|s| matches!(
        s.candidate,
        Candidate::Linear {
            class_weights: ClassWeighting::On,
            ..
        }
    )));
    assert_eq!(found.skipped.len(), 1);
    assert!(
        found.skipped[0].reason.contains("budget"),
        "{:?}",
        found.skipped
    );
}

#[test]
fn groups_limit_the_folds_and_too_few_items_are_refused_by_name() {
    let items = blobs(&[12, 12], 6, 2.0, 6);
    // Three patients per class, four images each.
    let groups: Vec<String> = (0..24).map(|i| format!("patient {}", i / 4)).collect();
    let found = searched(&items, Some(&groups), &no_mlp()).expect("searches");
    assert_eq!(found.folds, 3);
    assert!(found.grouped);
    let one = blobs(&[5, 1], 6, 2.0, 7);
    let error = searched(&one, None, &no_mlp()).expect_err("one item cannot be cross-validated");
    assert!(error.to_string().contains("class 1"), "{error}");
}

#[test]
fn progress_is_reported_and_a_stop_ends_the_search() {
    let items = blobs(&[10, 10], 6, 2.0, 8);
    let mut events = Events::default();
    pollster::block_on(search(
        &names(2),
        &items,
        None,
        &[],
        &no_mlp(),
        &Device::flex(),
        &CancelToken::new(),
        &mut events,
    ))
    .expect("searches");
    assert_eq!(
        events.0.first(),
        Some(&SearchEvent::Started {
            candidates: INVERSE_PENALTIES.len(),
            folds: 5,
            repeats: 1
        })
    );
    assert_eq!(
        events.0.last(),
        Some(&SearchEvent::Fitted { done: 5, total: 5 })
    );
    let token = CancelToken::new();
    token.cancel();
    let stopped = pollster::block_on(search(
        &names(2),
        &items,
        None,
        &[],
        &no_mlp(),
        &Device::flex(),
        &token,
        &mut Events::default(),
    ));
    assert!(matches!(stopped, Err(TrainError::Cancelled)), "{stopped:?}");
}

#[test]
fn the_automatic_recipe_refits_the_winner_and_its_file_keeps_the_threshold_and_search() {
    let items = blobs(&[15, 15], 8, 1.5, 9);
    let (trained, found) = automatic_two_classes(&items, &[]);
    let Candidate::Linear {
        c, class_weights, ..
    } = found.chosen().candidate.clone()
    else {
        panic!("only linear candidates were scored");
    };
    assert_eq!(trained.config.kind, HeadKind::Linear);
    assert_eq!(trained.train_config.optimizer, OptimizerKind::Lbfgs);
    assert_eq!(trained.train_config.class_weights, class_weights);
    assert!((trained.train_config.weight_decay - 1.0 / (c * 30.0)).abs() < 1e-12);
    assert_eq!(trained.threshold, found.threshold);
    let file = ModelFile::from_trained(&trained, "test").with_search(&found);
    let back = ModelFile::from_bytes(&file.to_bytes()).expect("reads back");
    assert_eq!(back.header.threshold, found.threshold);
    let stored = back.header.search.expect("the search is kept");
    assert_eq!(stored.scores, found.scores);
    assert!(stored.out_of_fold.is_empty());
}

#[test]
fn views_add_augmented_candidates_and_a_held_out_items_views_never_train_its_heads() {
    // Pure-noise labels, and each item's "view" is a copy of its own embedding: if a held-out
    // item's view trained the heads that predict it, the weakly penalised augmented candidates
    // would recall its label out of fold.
    let noise = noise_labels(21);
    let views: Vec<(usize, Vec<f32>)> = noise.embeddings.iter().cloned().enumerate().collect();
    let found = searched_with_views(&noise, None, &views, &no_mlp()).expect("searches");
    assert_eq!(found.scores.len(), 2 * INVERSE_PENALTIES.len());
    let augmented: Vec<&CandidateScore> = found
        .scores
        .iter()
        .filter(|s| {
            matches!(
                s.candidate,
                Candidate::Linear {
                    augmented: true,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(augmented.len(), INVERSE_PENALTIES.len());
    for score in augmented {
        assert!(
            score.accuracy < 0.75,
            "{}: out-of-fold accuracy {} on noise",
            score.candidate.describe(),
            score.accuracy
        );
    }
    // Same seed, same choice.
    let again = searched_with_views(&noise, None, &views, &no_mlp()).expect("searches");
    assert_eq!(again.scores, found.scores);
    assert_eq!(again.chosen, found.chosen);
    // A view of no item, or of the wrong length, is refused.
    let bad = [(60, vec![0.0; 40])];
    assert!(matches!(
        searched_with_views(&noise, None, &bad, &no_mlp()),
        Err(TrainError::Data(_))
    ));
    let short = [(0, vec![0.0; 39])];
    assert!(matches!(
        searched_with_views(&noise, None, &short, &no_mlp()),
        Err(TrainError::Data(_))
    ));
}

#[test]
fn views_that_carry_the_class_are_chosen_and_the_refit_trains_on_them() {
    // Few, overlapping items; each item's views sit near its class's centre, so training on
    // them is better out of fold (the held-out items are still predicted from themselves).
    let items = blobs(&[8, 8], 6, 0.3, 22);
    // blobs' class c is shifted on the features d with d % 2 == c.
    let mut rng = SeededRng::new(23);
    let views: Vec<(usize, Vec<f32>)> = (0..16)
        .flat_map(|i| std::iter::repeat_n(i, 4))
        .map(|i| {
            let label = items.labels[i];
            let view = (0..6)
                .map(|d| if d % 2 == label { 0.8 } else { 0.0 } + 0.3 * rng.normal())
                .collect();
            (i, view)
        })
        .collect();
    let (trained, found) = automatic_two_classes(&items, &views);
    let Candidate::Linear {
        c, augmented: true, ..
    } = found.chosen().candidate
    else {
        panic!("chose {}", found.chosen().candidate.describe());
    };
    assert!(
        found
            .chosen()
            .candidate
            .describe()
            .ends_with("augmented views")
    );
    // Refitted on the 16 items and their 64 views: λ = 1 / (C · 80).
    assert!((trained.train_config.weight_decay - 1.0 / (c * 80.0)).abs() < 1e-12);
}
