//! The training settings as the page edits them, and starting and stopping a run. The model in
//! use stays until a new run has succeeded (see [`super::worker_events`]).

use leptos::prelude::*;
use medtransfer_core::head::HeadKind;
use medtransfer_core::run::RunConfig;
use medtransfer_core::train::{ClassWeighting, TrainConfig};
use serde::Deserialize;

use super::{ImageStatus, Project, TrainingState};
use crate::protocol::{Envelope, ImageId, ToWorker};

/// The training settings as the page edits, saves, exports and sends them: core's
/// [`RunConfig`] (its [`TrainConfig`] and the validation share), kept inside core's [`medtransfer_core::train::limits`]
/// by [`RunConfig::clamped`].
pub type Settings = RunConfig;

/// The hidden units and dropout of the MLP head the page offers (the source recipe's).
pub fn mlp_head() -> HeadKind {
    match TrainConfig::default().head {
        head @ HeadKind::Mlp { .. } => head,
        HeadKind::Linear => HeadKind::Mlp {
            hidden: 1024,
            dropout: 0.5,
        },
    }
}

/// Settings as pages before version 0.2 saved and exported them (a flat mirror of a few
/// fields); read so that their projects keep their settings.
#[derive(Deserialize)]
#[serde(default)]
struct LegacySettings {
    mlp: bool,
    epochs: usize,
    batch: usize,
    learning_rate: f64,
    class_weights: ClassWeighting,
    validation_share: f64,
    seed: u64,
}

impl Default for LegacySettings {
    fn default() -> Self {
        let d = RunConfig::default();
        Self {
            mlp: matches!(d.train.head, HeadKind::Mlp { .. }),
            epochs: d.train.epochs,
            batch: d.train.batch_size,
            learning_rate: d.train.learning_rate,
            class_weights: d.train.class_weights,
            validation_share: d.validation_share,
            seed: d.train.seed,
        }
    }
}

impl From<LegacySettings> for RunConfig {
    fn from(l: LegacySettings) -> Self {
        let d = RunConfig::default();
        RunConfig {
            train: TrainConfig {
                head: if l.mlp { mlp_head() } else { HeadKind::Linear },
                epochs: l.epochs,
                batch_size: l.batch,
                learning_rate: l.learning_rate,
                class_weights: l.class_weights,
                seed: l.seed,
                ..d.train
            },
            validation_share: l.validation_share,
        }
    }
}

/// This version's settings (they have `train`), else an older page's.
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredSettings {
    Current(RunConfig),
    Legacy(LegacySettings),
}

/// Reads settings saved or exported by this page or an older one, clamped to core's limits.
///
/// Errors: `value` is not a JSON object of settings (the serde message).
pub fn settings_from_json(value: serde_json::Value) -> Result<Settings, serde_json::Error> {
    let stored: StoredSettings = serde_json::from_value(value)?;
    Ok(match stored {
        StoredSettings::Current(config) => config,
        StoredSettings::Legacy(legacy) => legacy.into(),
    }
    .clamped())
}

/// `deserialize_with` for a saved project's settings (see [`settings_from_json`]).
pub(crate) fn deserialize_settings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Settings, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    settings_from_json(value).map_err(serde::de::Error::custom)
}

impl Project {
    /// Sends every embedded image to the worker to train a new head. The model in use and its
    /// metrics stay until the new one exists.
    pub fn start_training(self) {
        let settings = self.settings.get_untracked().clamped();
        let planned_epochs = settings.train.epochs;
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
            planned_epochs,
            epochs: Vec::new(),
            result,
            error: None,
        });
        self.send(Envelope::new(ToWorker::Train {
            classes: names,
            items,
            config: settings,
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
    fn an_older_pages_settings_keep_their_values() {
        let old = serde_json::json!({
            "mlp": false, "epochs": 12, "batch": 16, "learning_rate": 0.001,
            "class_weights": "off", "validation_share": 0.3, "seed": 7
        });
        let read = settings_from_json(old).expect("reads");
        assert_eq!(read.train.head, HeadKind::Linear);
        assert_eq!(
            (read.train.epochs, read.train.batch_size, read.train.seed),
            (12, 16, 7)
        );
        assert_eq!(read.train.learning_rate, 0.001);
        assert_eq!(read.train.class_weights, ClassWeighting::Off);
        assert_eq!(read.validation_share, 0.3);
    }

    #[test]
    fn settings_read_back_are_core_s_and_clamped() {
        let mut config = RunConfig::default();
        config.train.epochs = 0;
        config.validation_share = 9.0;
        let read =
            settings_from_json(serde_json::to_value(&config).expect("serialises")).expect("reads");
        assert_eq!(read.train.epochs, 1);
        assert_eq!(read.validation_share, 0.5);
        let legacy_wild = serde_json::json!({"epochs": 0, "learning_rate": -3.0});
        let read = settings_from_json(legacy_wild).expect("reads");
        assert_eq!(read.train.epochs, 1);
        assert_eq!(
            read.train.learning_rate,
            RunConfig::default().train.learning_rate
        );
        assert!(settings_from_json(serde_json::json!(5)).is_err());
    }
}
