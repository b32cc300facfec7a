//! The training settings as the page edits them, and starting and stopping a run. The model in
//! use stays until a new run has succeeded (see [`super::worker_events`]).

use leptos::prelude::*;
use medtransfer_core::head::HeadKind;
use medtransfer_core::train::{ClassWeighting, TrainConfig, limits};
use serde::{Deserialize, Serialize};

use super::{ImageStatus, Project, TrainingState};
use crate::protocol::{Envelope, ImageId, ToWorker};

/// The training settings as the page edits, saves and exports them; every value is kept inside
/// core's [`limits`] (see [`Settings::clamped`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The MLP head (the source recipe's) rather than a linear one.
    pub mlp: bool,
    /// Most epochs.
    pub epochs: usize,
    /// Items per optimiser step.
    pub batch: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Class weights in the loss.
    pub class_weights: ClassWeighting,
    /// Share of each class held out for validation, in [`limits::VALIDATION_SHARE`].
    pub validation_share: f64,
    /// Fixes the initial weights, the shuffling and the split.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        let d = TrainConfig::default();
        Self {
            mlp: matches!(d.head, HeadKind::Mlp { .. }),
            epochs: d.epochs,
            batch: d.batch_size,
            learning_rate: d.learning_rate,
            class_weights: d.class_weights,
            validation_share: 0.2,
            seed: d.seed,
        }
    }
}

impl Settings {
    /// The same settings with every value inside core's [`limits`]: counts are clamped, a
    /// learning rate or share that is not a valid number falls back to the default.
    pub fn clamped(self) -> Self {
        let defaults = Self::default();
        let share = &limits::VALIDATION_SHARE;
        Self {
            epochs: self
                .epochs
                .clamp(*limits::EPOCHS.start(), *limits::EPOCHS.end()),
            batch: self
                .batch
                .clamp(*limits::BATCH_SIZE.start(), *limits::BATCH_SIZE.end()),
            learning_rate: if limits::learning_rate_ok(self.learning_rate) {
                self.learning_rate
            } else {
                defaults.learning_rate
            },
            validation_share: if self.validation_share.is_finite() {
                self.validation_share.clamp(*share.start(), *share.end())
            } else {
                defaults.validation_share
            },
            ..self
        }
    }

    /// Core's training configuration for these settings.
    pub fn train_config(&self) -> TrainConfig {
        let defaults = TrainConfig::default();
        TrainConfig {
            head: if self.mlp {
                defaults.head
            } else {
                HeadKind::Linear
            },
            epochs: self.epochs,
            batch_size: self.batch,
            learning_rate: self.learning_rate,
            class_weights: self.class_weights,
            seed: self.seed,
            ..defaults
        }
    }
}

impl Project {
    /// Sends every embedded image to the worker to train a new head. The model in use and its
    /// metrics stay until the new one exists.
    pub fn start_training(self) {
        let settings = self.settings.get_untracked().clamped();
        let classes = self.classes.get_untracked();
        let names: Vec<String> = classes.iter().map(|c| c.name.get_untracked()).collect();
        self.training_classes.set_value(names.clone());
        let items: Vec<(ImageId, usize)> = classes
            .iter()
            .enumerate()
            .flat_map(|(label, c)| {
                c.images
                    .get_untracked()
                    .into_iter()
                    .filter(|i| i.status == ImageStatus::Ready)
                    .map(move |i| (i.id, label))
            })
            .collect();
        let (epochs, result) = self
            .training
            .with_untracked(|t| (t.epochs.clone(), t.result.clone()));
        self.before_training.set_value((epochs, result.clone()));
        self.training.set(TrainingState {
            running: true,
            planned_epochs: settings.epochs,
            epochs: Vec::new(),
            result,
            error: None,
        });
        self.send(Envelope::new(ToWorker::Train {
            classes: names,
            items,
            validation_share: settings.validation_share,
            config: settings.train_config(),
        }));
    }

    /// Asks the worker to stop training after the current epoch (the best epoch is kept).
    pub fn stop_training(self) {
        self.send(Envelope::new(ToWorker::Stop));
    }

    /// The training run failed or was interrupted: the epochs and model from before it come
    /// back, with the reason.
    pub(crate) fn training_failed(self, error: String) {
        let (epochs, result) = self.before_training.get_value();
        self.training.update(|t| {
            if !t.running {
                return;
            }
            t.running = false;
            t.planned_epochs = epochs.len();
            t.epochs = epochs;
            t.result = result;
            t.error = Some(error);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_settings_are_clamped_to_core_limits() {
        let wild = Settings {
            mlp: false,
            epochs: 0,
            batch: 10_000_000,
            learning_rate: f64::NAN,
            class_weights: ClassWeighting::On,
            validation_share: 7.0,
            seed: 3,
        }
        .clamped();
        assert_eq!(wild.epochs, 1);
        assert_eq!(wild.batch, *limits::BATCH_SIZE.end());
        assert_eq!(wild.learning_rate, Settings::default().learning_rate);
        assert_eq!(wild.validation_share, 0.5);
        assert_eq!((wild.mlp, wild.seed), (false, 3));
        let negative = Settings {
            learning_rate: -1.0,
            validation_share: -0.2,
            ..Settings::default()
        }
        .clamped();
        assert_eq!(negative.learning_rate, Settings::default().learning_rate);
        assert_eq!(negative.validation_share, 0.0);
        assert_eq!(Settings::default().clamped(), Settings::default());
    }
}
