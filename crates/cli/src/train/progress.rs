//! What `medtransfer train` shows while core runs: the class counts once the items are split
//! (or the search starts), the augmented views' embedding, the search's fold fits and the
//! epochs.

use std::time::Instant;

use indicatif::ProgressBar;
use medtransfer_core::augment::AugmentConfig;
use medtransfer_core::embeddings::View;
use medtransfer_core::recipe::SearchEvent;
use medtransfer_core::run::Progress;
use medtransfer_core::train::{EpochSummary, LabelledEmbeddings, TrainEvent};
use serde_json::Value;

use super::TrainArgs;
use crate::backbone::{Backbone, progress_bar};
use crate::dataset::LabelledFile;

/// The CLI's side of a run: once the split is made it reports the class counts, embeds the
/// training images' augmented views and lists skipped files; then it shows the epochs.
pub(super) struct CliProgress<'a> {
    pub args: &'a TrainArgs,
    pub backbone: &'a mut Backbone,
    pub classes: &'a [String],
    /// The usable training-folder images, in the order of the run's items.
    pub usable: &'a [&'a LabelledFile],
    /// Labels of every usable image, the validation folder's included.
    pub all_labels: Vec<usize>,
    /// Images in the validation folder (0 without `--val`).
    pub validation_folder_images: usize,
    pub skipped: &'a [Value],
    /// The embedding bar, finished once augmentation is done.
    pub embedding_bar: ProgressBar,
    pub embed_started: Instant,
    pub embed_seconds: f64,
    pub training_bar: Option<ProgressBar>,
    pub train_started: Option<Instant>,
    /// Training rows (augmented views included), from [`TrainEvent::Started`].
    pub train_rows: usize,
    /// The automatic recipe's fold fits.
    pub search_bar: Option<ProgressBar>,
    /// When the search started.
    pub search_started: Option<Instant>,
    /// Whether the class counts were printed and the embedding bar finished.
    pub announced: bool,
}

impl CliProgress<'_> {
    /// Prints the class counts and the skipped files once it is known which images train.
    fn items_known(&mut self, train: usize, validation: usize) {
        if self.args.json || self.announced {
            return;
        }
        let mut counts = vec![0; self.classes.len()];
        for &label in &self.all_labels {
            if let Some(n) = counts.get_mut(label) {
                *n += 1;
            }
        }
        self.embedding_bar.println(format!(
            "classes: {} ({train} training, {} validation images)",
            self.classes
                .iter()
                .zip(counts)
                .map(|(c, n)| format!("{c} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            validation + self.validation_folder_images
        ));
    }

    fn embedding_done(&mut self) {
        if self.announced {
            return;
        }
        self.announced = true;
        self.embedding_bar.finish_and_clear();
        self.embed_seconds = self.embed_started.elapsed().as_secs_f64();
        if !self.args.json {
            for s in self.skipped {
                eprintln!(
                    "skipped {}: {}",
                    s["path"].as_str().unwrap_or("?"),
                    s["error"].as_str().unwrap_or("?")
                );
            }
        }
    }
}

impl Progress for CliProgress<'_> {
    fn extra_training(&mut self, train: &[usize], validation: &[usize]) -> LabelledEmbeddings {
        self.items_known(train.len(), validation.len());
        let extra = augmented_views(
            self.backbone,
            train.iter().filter_map(|&i| self.usable.get(i).copied()),
            self.args,
            &self.embedding_bar,
        );
        self.embedding_done();
        extra
    }

    fn augmented_views(&mut self, items: &[usize]) -> Vec<(usize, Vec<f32>)> {
        if self.args.augment.unwrap_or(0) == 0 {
            return Vec::new();
        }
        self.items_known(items.len(), 0);
        let views = views_of(
            self.backbone,
            items
                .iter()
                .filter_map(|&i| self.usable.get(i).map(|file| (i, *file))),
            self.args,
            &self.embedding_bar,
        );
        self.embedding_done();
        views
    }

    fn search(&mut self, event: &SearchEvent) {
        match event {
            SearchEvent::Started {
                candidates,
                folds,
                repeats,
            } => {
                self.items_known(self.usable.len(), 0);
                self.embedding_done();
                let bar = progress_bar(0, "cross-val", self.args.json);
                if !self.args.json {
                    bar.println(format!(
                        "automatic recipe: {candidates} candidates, {folds} folds{}",
                        if *repeats > 1 {
                            format!(" × {repeats} repeats")
                        } else {
                            String::new()
                        }
                    ));
                }
                self.search_bar = Some(bar);
                self.search_started = Some(Instant::now());
            }
            SearchEvent::Fitted { done, total } => {
                if let Some(bar) = &self.search_bar {
                    bar.set_length(*total as u64);
                    bar.set_position(*done as u64);
                    if done == total {
                        bar.finish_and_clear();
                    }
                }
            }
        }
    }

    fn event(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Started {
                epochs,
                train_items,
                class_weights,
                loss,
                ..
            } => {
                self.train_rows = *train_items;
                let bar = progress_bar(*epochs, "training", self.args.json);
                if !self.args.json {
                    bar.println(format!("loss: {loss:?}, class weights: {class_weights:?}"));
                }
                self.training_bar = Some(bar);
                self.train_started = Some(Instant::now());
            }
            TrainEvent::Epoch(summary) => {
                if let Some(bar) = &self.training_bar {
                    bar.inc(1);
                    if !self.args.json {
                        bar.println(epoch_line(summary));
                    }
                }
            }
            TrainEvent::Finished { .. } => {
                if let Some(bar) = &self.training_bar {
                    bar.finish_and_clear();
                }
            }
            TrainEvent::Batch { .. } => {}
        }
    }
}

/// Embeddings of `--augment` augmented views of each of `files` (those that cannot be
/// embedded are left out: their original was embedded, so they are rare), advancing `bar`.
pub(super) fn augmented_views<'f>(
    backbone: &mut Backbone,
    files: impl Iterator<Item = &'f LabelledFile>,
    args: &TrainArgs,
    bar: &ProgressBar,
) -> LabelledEmbeddings {
    let mut extra = LabelledEmbeddings::default();
    let files: Vec<&LabelledFile> = files.collect();
    for (i, embedding) in views_of(backbone, files.iter().copied().enumerate(), args, bar) {
        extra.embeddings.push(embedding);
        extra.labels.push(files[i].label);
    }
    extra
}

/// `--augment N` views of each `(item, file)`, embedded through the cache: `(item, embedding)`
/// per view that could be made (a file that fails is already reported for its original).
fn views_of<'f>(
    backbone: &mut Backbone,
    files: impl Iterator<Item = (usize, &'f LabelledFile)>,
    args: &TrainArgs,
    bar: &ProgressBar,
) -> Vec<(usize, Vec<f32>)> {
    let views = args.augment.unwrap_or(0);
    if views == 0 {
        return Vec::new();
    }
    let mut requests = Vec::new();
    let mut owners = Vec::new();
    for (item, file) in files {
        for index in 1..=views {
            let view = View::Augmented {
                index,
                seed: args.seed,
            };
            requests.push((file.path.clone(), view));
            owners.push(item);
        }
    }
    bar.inc_length(requests.len() as u64);
    let results = backbone.embed(&requests, &AugmentConfig::default(), bar);
    results
        .into_iter()
        .zip(owners)
        .filter_map(|(result, item)| result.ok().map(|embedding| (item, embedding)))
        .collect()
}

/// `--cv`: each fold's training side gets its augmented views; nothing is printed per fold.
pub(super) struct CrossValidationProgress<'a> {
    pub args: &'a TrainArgs,
    pub backbone: &'a mut Backbone,
    pub usable: &'a [&'a LabelledFile],
    pub bar: ProgressBar,
}

impl Progress for CrossValidationProgress<'_> {
    fn extra_training(&mut self, train: &[usize], _validation: &[usize]) -> LabelledEmbeddings {
        augmented_views(
            self.backbone,
            train.iter().filter_map(|&i| self.usable.get(i).copied()),
            self.args,
            &self.bar,
        )
    }

    fn event(&mut self, event: &TrainEvent) {
        if let TrainEvent::Finished { .. } = event {
            self.bar.inc(1);
        }
    }
}

pub(super) fn epoch_line(s: &EpochSummary) -> String {
    let mut line = format!(
        "epoch {:>3}  lr {:.2e}  train loss {:.4} acc {:.3}",
        s.epoch, s.learning_rate, s.train_loss, s.train_accuracy
    );
    if let (Some(l), Some(a)) = (s.validation_loss, s.validation_accuracy) {
        line.push_str(&format!("  val loss {l:.4} acc {a:.3}"));
        if let Some(b) = s.validation_balanced_accuracy {
            line.push_str(&format!(" bal {b:.3}"));
        }
        if let Some(auc) = s.validation_auc {
            line.push_str(&format!(" auc {auc:.3}"));
        }
        if s.is_best {
            line.push_str("  *");
        }
    }
    line
}
