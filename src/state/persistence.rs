//! The project in the browser's IndexedDB ([`crate::storage`]): read back at start-up, saved as
//! it changes, every write's outcome checked. A write that fails is said, and what it held stays
//! on the page to be saved again ([`Project::retry_saving`]).

use leptos::prelude::*;
use leptos::task::spawn_local;
use medtransfer_core::train::EpochSummary;
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

use super::images::{offered_train_blocks, offered_views};
use super::{
    ClassEntry, ImageEntry, ImageStatus, NoticeKind, Ownership, Project, Settings, TrainedResult,
    TrainingState,
};
use crate::dom::{jpeg_url, log_step, revoke_url};
use crate::protocol::{EMBEDDING_BYTES, Envelope, ToWorker};
use crate::storage::{self, ImageRecord, MODEL_KEY, PROJECT_KEY, Storage};

/// What is kept of the project in the browser besides its images (see [`crate::storage`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedProject {
    /// `(key, name)` of each class, in order.
    pub classes: Vec<(u32, String)>,
    /// The next free id.
    pub next_id: u32,
    /// The training settings (an older page's are read too).
    #[serde(deserialize_with = "super::training::deserialize_settings")]
    pub settings: Settings,
    /// Augmented views embedded with each image added (absent in older pages' saves: none).
    #[serde(default)]
    pub augmented_views: u32,
    /// The last blocks fine-tuned with the head (absent in older pages' saves: none).
    #[serde(default)]
    pub train_blocks: usize,
    /// The two-class decision threshold.
    pub threshold: f64,
    /// The epochs of the model in use.
    pub epochs: Vec<EpochSummary>,
    /// The model in use and its metrics.
    pub result: Option<TrainedResult>,
}

/// Images per [`ToWorker::Restore`] message.
const RESTORE_CHUNK: usize = 1000;

impl Project {
    /// Reads the saved project (if any) into the page; then saves every change. Called once at
    /// start-up.
    pub async fn restore(self) {
        match Storage::open().await {
            Ok(storage) => {
                self.storage.set_value(Some(storage));
                match self.load_saved().await {
                    Ok(0) => {}
                    Ok(n) => self.tell(
                        NoticeKind::Info,
                        format!("Your project was restored from this browser: {n} images."),
                    ),
                    Err(error) => {
                        // Saving now would overwrite what could not be read: stay read-only.
                        self.tell(
                            NoticeKind::Error,
                            format!("The saved project could not be read ({error}). Nothing will be saved in this session, so the saved copy is left as it is."),
                        );
                        return;
                    }
                }
            }
            Err(error) => self.tell(
                NoticeKind::Error,
                format!("Your work cannot be saved in this browser ({error}); it is lost on reload. Export the project to keep it."),
            ),
        }
        self.restored.set(true);
        spawn_local(async move {
            let persistent = storage::request_persistence().await;
            self.refresh_storage_use(persistent).await;
        });
        if self
            .worker_backend
            .get_untracked()
            .is_some_and(|b| b.is_ok())
        {
            spawn_local(self.feed_worker());
        }
    }

    /// Reads this site's storage use again (after writes); `persistent` when just learnt.
    pub(crate) async fn refresh_storage_use(self, persistent: Option<bool>) {
        if let Some(use_and_quota) = storage::usage_and_quota().await {
            let persistent =
                persistent.or_else(|| self.storage_use.get_untracked().and_then(|(_, p)| p));
            self.storage_use.set(Some((use_and_quota, persistent)));
        }
    }

    /// Replaces the page's project with the saved one; returns how many images it has.
    pub(crate) async fn load_saved(self) -> Result<usize, String> {
        let Some(storage) = self.storage.get_value() else {
            return Ok(0);
        };
        let saved: Option<SavedProject> = storage
            .meta(PROJECT_KEY)
            .await?
            .and_then(|v| v.as_string())
            .map(|json| serde_json::from_str(&json).map_err(|e| e.to_string()))
            .transpose()?;
        let Some(saved) = saved else {
            return Ok(0);
        };
        let started = js_sys::Date::now();
        let records = storage.images().await?;
        log_step("read the saved images", started);
        let classes: Vec<ClassEntry> = saved
            .classes
            .iter()
            .map(|(key, name)| ClassEntry::new(*key, name.clone()))
            .collect();
        let mut orphans = Vec::new();
        let mut max_id = saved.next_id;
        for (key, _) in &saved.classes {
            max_id = max_id.max(key.saturating_add(1));
        }
        for record in &records {
            max_id = max_id.max(record.id.saturating_add(1));
            let Some(class) = classes.iter().find(|c| c.key == record.class_key) else {
                orphans.push(record.id);
                continue;
            };
            let entry = ImageEntry {
                id: record.id,
                name: record.name.clone(),
                thumb: record.thumbnail.as_deref().and_then(jpeg_url),
                status: if record.embedding.is_some() {
                    ImageStatus::Ready
                } else {
                    ImageStatus::Embedding
                },
                views: record.view_count(),
                activations: record.has_activations(),
            };
            class.images.update(|images| images.push(entry));
        }
        log_step("rebuilt the image list", started);
        let _ = storage.delete_images(&orphans).await;
        for class in self.classes.get_untracked() {
            for image in class.images.get_untracked() {
                if let Some(url) = image.thumb {
                    revoke_url(&url);
                }
            }
        }
        self.next_id.set_value(max_id);
        self.classes.set(classes);
        self.settings.set(saved.settings);
        self.augmented_views
            .set(offered_views(saved.augmented_views));
        self.train_blocks
            .set(offered_train_blocks(saved.train_blocks as u64));
        self.threshold.set(saved.threshold);
        let model = storage.model().await?;
        self.training.set(TrainingState {
            running: false,
            planned_epochs: saved.epochs.len(),
            searching: None,
            epochs: saved.epochs,
            result: if model.is_some() { saved.result } else { None },
            error: None,
        });
        self.model_file.set_value(model);
        let count = records.len() - orphans.len();
        self.restored_records.set_value(Some(records));
        Ok(count)
    }

    /// The project's classes, settings and results as saved; while a training runs, the
    /// epochs and model from before it (the ones that stay if it fails).
    fn saved_project(self) -> SavedProject {
        let (epochs, result) = if self.training.with(|t| t.running) {
            self.before_training.get_value()
        } else {
            self.training.with(|t| (t.epochs.clone(), t.result.clone()))
        };
        SavedProject {
            classes: self
                .classes
                .get()
                .iter()
                .map(|c| (c.key, c.name.get()))
                .collect(),
            next_id: self.next_id.get_value(),
            settings: self.settings.get(),
            augmented_views: self.augmented_views.get(),
            train_blocks: self.train_blocks.get(),
            threshold: self.threshold.get(),
            epochs,
            result,
        }
    }

    /// Saves the project's classes, settings and results whenever they change (once the saved
    /// project has been read back). Call it where a reactive owner exists (in a component).
    /// Reading back or importing a project is not a change: `restored` is read untracked, so
    /// that a refused import does not write the old project again (and a storage error then
    /// does not hide the import's own message).
    pub fn save_on_change(self) {
        Effect::new(move || {
            let saved = self.saved_project();
            if !self.restored.get_untracked() {
                return;
            }
            self.save_project_json(&saved);
        });
    }

    fn save_project_json(self, saved: &SavedProject) {
        let Ok(json) = serde_json::to_string(saved) else {
            return;
        };
        self.store("the classes and settings", move |storage| async move {
            storage
                .put_meta(PROJECT_KEY, &JsValue::from_str(&json))
                .await
        });
    }

    /// Runs a storage write in the background. A failure is said, naming `what` was not saved;
    /// nothing else is lost, and [`Project::retry_saving`] writes it again.
    pub(crate) fn store<F, Fut>(self, what: &str, write: F)
    where
        F: FnOnce(Storage) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + 'static,
    {
        // Only the tab that owns the project writes to it.
        if self.ownership.get_untracked() != Ownership::Here {
            return;
        }
        let Some(storage) = self.storage.get_value() else {
            return;
        };
        let what = what.to_string();
        spawn_local(async move {
            if let Err(error) = write(storage).await {
                self.not_saved(what, error);
            }
        });
    }

    /// Writes image records; those that could not be written are kept on the page to write
    /// again.
    pub(crate) async fn store_images(self, what: &str, records: Vec<ImageRecord>) {
        if self.ownership.get_untracked() != Ownership::Here {
            return;
        }
        let Some(storage) = self.storage.get_value() else {
            return;
        };
        if let Err(error) = storage.put_images(&records).await {
            self.unsaved_images.update_value(|kept| {
                kept.retain(|k| records.iter().all(|r| r.id != k.id));
                kept.extend(records);
            });
            self.not_saved(what.to_string(), error);
        }
    }

    fn not_saved(self, what: String, error: String) {
        self.unsaved.update(|u| {
            if !u.contains(&what) {
                u.push(what);
            }
        });
        let list = self.unsaved.get_untracked().join(", ");
        self.tell(
            NoticeKind::Error,
            format!("Not saved in this browser: {list} ({error}). It is kept on this page: free some space or export the project, then press \u{201c}Save again\u{201d}."),
        );
        spawn_local(self.refresh_storage_use(None));
    }

    /// Writes again everything that could not be saved: the kept image records, the project's
    /// classes and settings, and the model in use.
    pub async fn retry_saving(self) {
        let Some(storage) = self.storage.get_value() else {
            return;
        };
        let images = self.unsaved_images.get_value();
        // Images removed meanwhile are not written back.
        let present = |id| self.image_url(id).is_some();
        let images: Vec<ImageRecord> = images.into_iter().filter(|r| present(r.id)).collect();
        let saved = self.saved_project_untracked();
        let outcome = async {
            storage.put_images(&images).await?;
            let json = serde_json::to_string(&saved).map_err(|e| e.to_string())?;
            storage
                .put_meta(PROJECT_KEY, &JsValue::from_str(&json))
                .await?;
            if let Some(model) = self.model_file.get_value() {
                storage
                    .put_meta(MODEL_KEY, &js_sys::Uint8Array::from(model.as_slice()))
                    .await?;
            }
            Ok::<(), String>(())
        }
        .await;
        match outcome {
            Ok(()) => {
                self.unsaved_images.set_value(Vec::new());
                self.unsaved.set(Vec::new());
                self.tell(NoticeKind::Info, "Everything is saved in this browser again.");
            }
            Err(error) => self.tell(
                NoticeKind::Error,
                format!("Saving again failed ({error}); your work is still kept on this page. Export the project to keep it."),
            ),
        }
        self.refresh_storage_use(None).await;
    }

    /// `records` read from storage with the images whose write failed (on the page only) in
    /// place of their saved copies.
    pub(crate) fn with_unsaved(self, mut records: Vec<ImageRecord>) -> Vec<ImageRecord> {
        let unsaved = self.unsaved_images.get_value();
        records.retain(|r| unsaved.iter().all(|u| u.id != r.id));
        records.extend(unsaved);
        records
    }

    fn saved_project_untracked(self) -> SavedProject {
        untrack(|| self.saved_project())
    }

    /// Gives a freshly loaded worker everything saved that it does not have yet: embeddings,
    /// images still to embed (a window at a time), and the trained model.
    pub(crate) async fn feed_worker(self) {
        let Some(storage) = self.storage.get_value() else {
            return;
        };
        let started = js_sys::Date::now();
        let cached = self
            .restored_records
            .try_update_value(Option::take)
            .flatten();
        let records = match cached {
            Some(records) => Ok(records),
            None => storage.images().await,
        };
        let records = match records {
            Ok(records) => records,
            Err(error) => {
                self.tell(
                    NoticeKind::Error,
                    format!("Reading the saved images failed: {error}"),
                );
                return;
            }
        };
        let records = self.with_unsaved(records);
        log_step("read the saved images for the worker", started);
        let mut restore = Vec::new();
        for record in records {
            if self.embeds.with_value(|q| q.was_sent(record.id)) {
                continue;
            }
            if record
                .embedding
                .as_ref()
                .is_some_and(|e| e.len() == EMBEDDING_BYTES)
            {
                restore.push(record);
            } else if let Some(original) = record.original {
                self.embeds.update_value(|q| q.push(record.id, original));
            }
        }
        // In messages of at most RESTORE_CHUNK images: with many views, one message of every
        // row would double a large project's memory at once.
        for chunk in restore.chunks(RESTORE_CHUNK) {
            let mut ids = Vec::with_capacity(chunk.len());
            let mut views = Vec::with_capacity(chunk.len());
            let mut rows = Vec::new();
            for record in chunk {
                ids.push(record.id);
                views.push(record.view_count());
                rows.extend(record.embedding.as_deref().unwrap_or_default());
                rows.extend(record.view_rows());
            }
            self.embeds
                .update_value(|q| q.mark_sent(ids.iter().copied()));
            self.send(Envelope::with_bytes(ToWorker::Restore { ids, views }, rows));
            // The activations for fine-tuning of those that have them, in their own message.
            let with: Vec<&ImageRecord> = chunk.iter().filter(|r| r.has_activations()).collect();
            if !with.is_empty() {
                let ids = with.iter().map(|r| r.id).collect();
                let bytes = with
                    .iter()
                    .flat_map(|r| r.activations.as_deref().unwrap_or_default())
                    .copied()
                    .collect();
                self.send(Envelope::with_bytes(
                    ToWorker::RestoreActivations { ids },
                    bytes,
                ));
            }
        }
        self.send_embeds();
        log_step("fed the worker", started);
        if let Some(model) = self.model_file.get_value() {
            self.send(Envelope::with_bytes(ToWorker::LoadClassifier, model));
        }
    }
}
