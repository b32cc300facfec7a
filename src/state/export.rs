//! The project as a `.mtproject` file ([`medtransfer_core::project_file`]): export, and import
//! that stores the new project completely before the page switches to it.

use leptos::prelude::*;
use medtransfer_core::embeddings::{decode_embedding, decode_rows, encode_embedding, encode_rows};
use medtransfer_core::finetune::{CutFeatures, STORED_BLOCKS};
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::project_file::{ProjectArchive, ProjectImage};
use medtransfer_core::train::limits;

use super::images::{offered_train_blocks, offered_views};
use super::persistence::SavedProject;
use super::training::settings_from_json;
use super::{ModelOrigin, Project, Settings, TrainedResult};
use crate::dom::{log_step, revoke_url};
use crate::storage::ImageRecord;

/// The key of the page's augmented views per image in an exported project's settings (beside
/// core's [`Settings`]).
const AUGMENTED_VIEWS_KEY: &str = "augmented_views";
/// The key of the page's fine-tuning depth there.
const TRAIN_BLOCKS_KEY: &str = "train_blocks";

impl Project {
    /// The project as a `.mtproject` file: every embedded image (thumbnail, embedding, name,
    /// class), the settings and the model in use, which keeps the class names it was trained
    /// with even when classes were renamed or added since. Returns the bytes and how many
    /// images still waiting for their embedding were left out.
    ///
    /// # Errors
    /// Storage is unavailable or unreadable, or the archive could not be written.
    pub async fn export(self) -> Result<(Vec<u8>, usize), String> {
        let storage = self
            .storage
            .get_value()
            .ok_or("this browser's storage is not available")?;
        let records = self.with_unsaved(storage.images().await?);
        let classes = self.classes.get_untracked();
        let mut images = Vec::new();
        let mut left_out = 0;
        for record in records {
            let Some(class) = classes.iter().position(|c| c.key == record.class_key) else {
                continue;
            };
            match record.embedding.as_deref().and_then(decode_embedding) {
                Some(embedding) => images.push(ProjectImage {
                    views: decode_rows(record.views.as_deref().unwrap_or_default())
                        .into_iter()
                        .take(*limits::AUGMENTED_VIEWS.end() as usize)
                        .collect(),
                    activations: record
                        .activations
                        .as_deref()
                        .and_then(|a| CutFeatures::from_bytes(a, STORED_BLOCKS)),
                    name: record.name,
                    class,
                    thumbnail: record.thumbnail,
                    embedding,
                }),
                None => left_out += 1,
            }
        }
        let mut settings =
            serde_json::to_value(self.settings.get_untracked()).map_err(|e| e.to_string())?;
        if let Some(fields) = settings.as_object_mut() {
            fields.insert(
                AUGMENTED_VIEWS_KEY.into(),
                self.augmented_views.get_untracked().into(),
            );
            fields.insert(
                TRAIN_BLOCKS_KEY.into(),
                self.train_blocks.get_untracked().into(),
            );
        }
        let archive = ProjectArchive {
            classes: classes.iter().map(|c| c.name.get_untracked()).collect(),
            images,
            settings,
            model: self
                .model_file
                .get_value()
                .filter(|bytes| ModelFile::from_bytes(bytes).is_ok()),
        };
        let bytes = archive
            .to_bytes("MedTransfer web app")
            .map_err(|e| e.to_string())?;
        Ok((bytes, left_out))
    }

    /// Replaces the project with an imported `.mtproject` file. The file is checked, then the
    /// new project is stored in one transaction; only then does the page switch to it. A
    /// failure at any point (a damaged file, a full disk, a closed tab) leaves the current
    /// project whole, on the page and in storage. Returns the number of images.
    ///
    /// # Errors
    /// The file is not a valid project, or storage refused it; the message says which.
    pub async fn import(self, bytes: Vec<u8>) -> Result<usize, String> {
        let archive = ProjectArchive::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let storage = self
            .storage
            .get_value()
            .ok_or("this browser's storage is not available")?;
        let settings: Settings = settings_from_json(archive.settings.clone())
            .unwrap_or_else(|_| self.settings.get_untracked().clamped());
        // Class keys 0.., image ids after them.
        let classes: Vec<(u32, String)> = archive
            .classes
            .iter()
            .enumerate()
            .map(|(i, name)| (i as u32, name.clone()))
            .collect();
        let first_id = classes.len() as u32;
        let records: Vec<ImageRecord> = archive
            .images
            .iter()
            .enumerate()
            .map(|(i, image)| ImageRecord {
                id: first_id + i as u32,
                class_key: image.class as u32,
                name: image.name.clone(),
                original: None,
                thumbnail: image.thumbnail.clone(),
                embedding: Some(encode_embedding(&image.embedding)),
                views: (!image.views.is_empty()).then(|| encode_rows(&image.views)),
                activations: image.activations.as_ref().map(CutFeatures::to_bytes),
            })
            .collect();
        let model = archive
            .model
            .as_deref()
            .and_then(|bytes| ModelFile::from_bytes(bytes).ok().map(|m| (bytes, m)));
        let saved = SavedProject {
            classes,
            next_id: first_id + records.len() as u32,
            settings,
            augmented_views: archive
                .settings
                .get(AUGMENTED_VIEWS_KEY)
                .and_then(serde_json::Value::as_u64)
                .map_or(0, |n| offered_views(n.min(u64::from(u32::MAX)) as u32)),
            train_blocks: archive
                .settings
                .get(TRAIN_BLOCKS_KEY)
                .and_then(serde_json::Value::as_u64)
                .map_or(0, offered_train_blocks),
            threshold: model
                .as_ref()
                .and_then(|(_, m)| m.header.threshold)
                .map_or(0.5, |t| t.value),
            epochs: model
                .as_ref()
                .map(|(_, m)| m.header.history.clone())
                .unwrap_or_default(),
            // The imported model has no validation ids of this session: its own metrics.
            result: model.as_ref().map(|(_, file)| TrainedResult {
                classes: file.header.classes.clone(),
                kept_epoch: file.header.kept_epoch,
                origin: ModelOrigin::Imported,
                // An automatic recipe's figures are its out-of-fold ones; a fine-tuned model's
                // are those of its held-out images.
                validation: file
                    .header
                    .search
                    .as_ref()
                    .filter(|_| file.header.fine_tuning.is_none())
                    .map(|s| s.evaluation.clone())
                    .or_else(|| file.header.validation.clone()),
                validation_ids: Vec::new(),
                search: file.header.search.clone(),
                threshold: file.header.threshold,
                millis: 0.0,
                fine_tuned: file.header.fine_tuning.as_ref().map(|f| {
                    crate::protocol::FineTunedSummary {
                        blocks: f.blocks,
                        head_only_accuracy: None,
                        head_only_auc: None,
                    }
                }),
            }),
        };
        let json = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
        // Nothing the old project does may be saved while the new one is written.
        self.restored.set(false);
        let started = js_sys::Date::now();
        let written = storage
            .replace_project(&records, &json, model.as_ref().map(|(bytes, _)| *bytes))
            .await;
        log_step("saved the imported project", started);
        if let Err(error) = written {
            self.restored.set(true);
            return Err(error);
        }
        // Stored: the old project's worker and pending tasks stop, the page switches.
        self.generation.update_value(|g| *g += 1);
        self.worker_generation.update_value(|g| *g += 1);
        self.worker.update_value(|w| {
            if let Some(w) = w.take() {
                w.terminate();
            }
        });
        self.embeds.update_value(|q| q.reset());
        self.unsaved_images.set_value(Vec::new());
        self.unsaved.set(Vec::new());
        self.fail_pending_classifications("a project was imported; pick the picture again");
        let count = self.load_saved().await;
        for p in self.predictions.get_untracked() {
            revoke_url(&p.url);
        }
        self.predictions.set(Vec::new());
        self.restored.set(true);
        // A new worker holds exactly the imported project.
        self.restart_worker();
        let count = count.map_err(|error| {
            format!("{error}; the project was imported but could not be read back: reload the page")
        })?;
        Ok(count)
    }
}
