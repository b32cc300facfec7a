//! The training settings as the page edits them, and starting and stopping a run. The model in
//! use stays until a new run has succeeded (see [`super::worker_events`]).

use leptos::prelude::*;
use medtransfer_core::finetune::FineTuneConfig;
use medtransfer_core::head::HeadKind;
use medtransfer_core::run::{Recipe, RunConfig};
use medtransfer_core::threshold::ThresholdRule;
use medtransfer_core::train::{ClassWeighting, DEFAULT_DROPOUT, DEFAULT_HIDDEN_UNITS, TrainConfig};
use serde::Deserialize;

use super::{ImageStatus, Project, TrainingState};
use crate::protocol::{Envelope, ImageId, ToWorker};

/// The training settings as the page edits, saves, exports and sends them: core's
/// [`RunConfig`] (its [`TrainConfig`] and the validation share), kept inside core's
/// [`medtransfer_core::train::limits`] by [`RunConfig::clamped`]. The page edits the recipe
/// (automatic or manual), for an automatic one its folds, for a manual one the head (linear, or
/// the default MLP), epochs, batch size, learning rate, class weights and validation share, and
/// for both the two-class threshold rule and the seed; every other field is core's default (see
/// [`settings_from_json`]).
pub type Settings = RunConfig;

/// The MLP head the page offers: the source recipe's hidden units and dropout.
pub fn mlp_head() -> HeadKind {
    HeadKind::Mlp {
        hidden: DEFAULT_HIDDEN_UNITS,
        dropout: DEFAULT_DROPOUT,
    }
}

/// The settings the page has controls for; also the flat format in which older pages saved
/// and exported them (`batch` for the batch size), read so that those projects keep theirs.
#[derive(Deserialize)]
#[serde(default)]
struct PageFields {
    /// Absent in settings saved before the automatic recipe existed: those trained by hand, so
    /// they read as [`Recipe::Manual`] and keep training as they did.
    recipe: Option<Recipe>,
    mlp: bool,
    epochs: usize,
    #[serde(alias = "batch")]
    batch_size: usize,
    learning_rate: f64,
    class_weights: ClassWeighting,
    validation_share: f64,
    folds: usize,
    threshold: ThresholdRule,
    seed: u64,
}

impl Default for PageFields {
    fn default() -> Self {
        let d = RunConfig::default();
        Self {
            recipe: None,
            mlp: matches!(d.train.head, HeadKind::Mlp { .. }),
            epochs: d.train.epochs,
            batch_size: d.train.batch_size,
            learning_rate: d.train.learning_rate,
            class_weights: d.train.class_weights,
            validation_share: d.validation_share,
            folds: d.folds,
            threshold: d.threshold,
            seed: d.train.seed,
        }
    }
}

impl PageFields {
    /// Core's settings with these fields, every other one its default.
    fn settings(self) -> Settings {
        RunConfig {
            train: TrainConfig {
                head: if self.mlp {
                    mlp_head()
                } else {
                    HeadKind::Linear
                },
                epochs: self.epochs,
                batch_size: self.batch_size,
                learning_rate: self.learning_rate,
                class_weights: self.class_weights,
                seed: self.seed,
                ..TrainConfig::default()
            },
            validation_share: self.validation_share,
            recipe: self.recipe.unwrap_or(Recipe::Manual),
            folds: self.folds,
            threshold: self.threshold,
            ..RunConfig::default()
        }
    }
}

/// The fields of a saved or exported [`RunConfig`]'s `train` that the page has controls for; a
/// missing one takes core's default, and the others are not read, so that what trains is what
/// the page shows.
#[derive(Deserialize)]
#[serde(default)]
struct EditedTrain {
    head: HeadKind,
    epochs: usize,
    batch_size: usize,
    learning_rate: f64,
    class_weights: ClassWeighting,
    seed: u64,
}

impl Default for EditedTrain {
    fn default() -> Self {
        let d = TrainConfig::default();
        Self {
            head: d.head,
            epochs: d.epochs,
            batch_size: d.batch_size,
            learning_rate: d.learning_rate,
            class_weights: d.class_weights,
            seed: d.seed,
        }
    }
}

/// This page's settings: `{"recipe": …, "train": {…}, "validation_share": …}`.
#[derive(Deserialize)]
struct EditedSettings {
    #[serde(default)]
    recipe: Option<Recipe>,
    train: EditedTrain,
    #[serde(default = "default_share")]
    validation_share: f64,
    #[serde(default = "default_folds")]
    folds: usize,
    #[serde(default)]
    threshold: ThresholdRule,
}

fn default_share() -> f64 {
    RunConfig::default().validation_share
}

fn default_folds() -> usize {
    RunConfig::default().folds
}

impl From<EditedSettings> for PageFields {
    fn from(s: EditedSettings) -> Self {
        let t = s.train;
        Self {
            recipe: s.recipe,
            mlp: matches!(t.head, HeadKind::Mlp { .. }),
            epochs: t.epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
            class_weights: t.class_weights,
            validation_share: s.validation_share,
            folds: s.folds,
            threshold: s.threshold,
            seed: t.seed,
        }
    }
}

/// Reads settings saved or exported by this page (they have `train`) or by an older one (flat),
/// keeps the fields the page has controls for and clamps them to core's limits.
///
/// Errors: `value` is not an object of settings, or a field has the wrong type (serde's
/// message names it).
pub fn settings_from_json(value: serde_json::Value) -> Result<Settings, serde_json::Error> {
    let fields: PageFields = if value.get("train").is_some() {
        serde_json::from_value::<EditedSettings>(value)?.into()
    } else {
        serde_json::from_value(value)?
    };
    Ok(fields.settings().clamped())
}

/// `deserialize_with` for a saved project's settings (see [`settings_from_json`]). Settings
/// that cannot be read become the defaults rather than fail the read: the project's classes
/// and images matter more than its settings.
pub(crate) fn deserialize_settings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Settings, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(settings_from_json(value).unwrap_or_default())
}

impl Project {
    /// The class names and every embedded image with its label (class index).
    pub fn ready_items(self) -> (Vec<String>, Vec<(ImageId, usize)>) {
        let classes = self.classes.get_untracked();
        let names = classes.iter().map(|c| c.name.get_untracked()).collect();
        let items = classes
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
        (names, items)
    }

    /// Asks the worker for the embedding map of every embedded image (and the data check's
    /// findings on their embeddings); the answer lands in [`Project::embedding_map`].
    pub fn draw_embedding_map(self) {
        let (classes, items) = self.ready_items();
        self.embedding_map.set(None);
        self.send(Envelope::new(ToWorker::Map { classes, items }));
    }

    /// Sends every embedded image to the worker to train a new head. The model in use and its
    /// metrics stay until the new one exists.
    pub fn start_training(self) {
        let settings = self.settings.get_untracked().clamped();
        let planned_epochs = settings.train.epochs;
        let (names, items) = self.ready_items();
        self.training_classes.set_value(names.clone());
        let (epochs, result) = self
            .training
            .with_untracked(|t| (t.epochs.clone(), t.result.clone()));
        self.before_training.set_value((epochs, result.clone()));
        self.training.set(TrainingState {
            running: true,
            planned_epochs,
            searching: None,
            epochs: Vec::new(),
            result,
            error: None,
        });
        let blocks = self.train_blocks.get_untracked();
        self.send(Envelope::new(ToWorker::Train {
            classes: names,
            items,
            config: settings,
            fine_tune: (blocks > 0).then(|| FineTuneConfig {
                blocks,
                ..FineTuneConfig::default()
            }),
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
            t.searching = None;
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
    use medtransfer_core::train::limits;

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
        // It trained by hand, and still does.
        assert_eq!(read.recipe, Recipe::Manual);
        let nested_without_recipe = serde_json::json!({"train": {"epochs": 4}});
        assert_eq!(
            settings_from_json(nested_without_recipe)
                .expect("reads")
                .recipe,
            Recipe::Manual
        );
    }

    #[test]
    fn folds_and_the_threshold_rule_are_kept_and_clamped() {
        let config = RunConfig {
            folds: 7,
            threshold: ThresholdRule::Sensitivity { target: 0.95 },
            recipe: Recipe::Automatic,
            ..RunConfig::default()
        };
        let read =
            settings_from_json(serde_json::to_value(&config).expect("serialises")).expect("reads");
        assert_eq!(read.folds, 7);
        assert_eq!(read.threshold, ThresholdRule::Sensitivity { target: 0.95 });
        assert_eq!(read.recipe, Recipe::Automatic);
        let wild = serde_json::json!({"recipe": "automatic", "folds": 500,
            "threshold": {"rule": "sensitivity", "target": 3.0}, "train": {}});
        let read = settings_from_json(wild).expect("reads");
        assert_eq!(read.folds, *limits::FOLDS.end());
        assert_eq!(read.threshold, ThresholdRule::default());
    }

    #[test]
    fn read_back_settings_are_clamped_and_only_the_pages_fields_read() {
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
        // A field of the wrong type is an error (the import keeps the page's settings), not
        // a silent fall back to an older format.
        assert!(settings_from_json(serde_json::json!({"train": {"epochs": -1}})).is_err());
        // Fields without a control take core's defaults: what trains is what the page shows.
        let crafted = serde_json::json!({"train": {
            "loss": "binary_cross_entropy", "head": {"kind": "mlp", "hidden": 1, "dropout": 0.9},
            "label_smoothing": 0.3, "epochs": 9
        }});
        let read = settings_from_json(crafted).expect("reads");
        assert_eq!(read.train.loss, None);
        assert_eq!(read.train.head, mlp_head());
        assert_eq!(read.train.label_smoothing, 0.0);
        assert_eq!(read.train.epochs, 9);
    }
}
