//! The compute worker as the project sees it: starting one, sending it work, taking in its
//! replies, and surviving its death (a lost GPU, or a file that crashes the decoder) without
//! losing anything the user did.

use std::collections::HashMap;

use leptos::prelude::*;
use leptos::task::spawn_local;

use super::{ImageStatus, ModelOrigin, NoticeKind, Project, TrainedResult};
use crate::dom::{jpeg_url, revoke_url};
use crate::protocol::{Envelope, FromWorker, ImageId, ToWorker, split_embedded};
use crate::storage::{ImageRecord, MODEL_KEY};
use crate::worker_client::{WorkerClient, WorkerEvent};

/// What a prediction of a replaced model says once a new model is trained.
const STALE_PREDICTION: &str =
    "predicted by the previous model; pick the image again to predict it with the new one";

/// Worker deaths in a row, with no reply in between that shows progress, before the page gives
/// up (a worker that dies at once each time would otherwise restart forever).
const MAX_WORKER_RESTARTS: u32 = 3;

/// Whether a worker's last words say the GPU was lost (then the next worker uses the CPU);
/// any other death (a bug, a file that breaks a decoder) keeps the GPU.
pub fn is_device_loss(reason: &str) -> bool {
    let reason = reason.to_lowercase();
    [
        "device lost",
        "devicelost",
        "device was lost",
        "device is lost",
        "lost the device",
    ]
    .iter()
    .any(|words| reason.contains(words))
}

impl Project {
    /// Starts a compute worker and routes its events into the project's signals.
    ///
    /// # Errors
    /// The browser would not start the worker.
    pub fn attach(self) -> Result<(), String> {
        self.worker_generation.update_value(|g| *g += 1);
        let generation = self.worker_generation.get_value();
        let client = WorkerClient::start(move |event| {
            if self.worker_generation.get_value() != generation {
                return;
            }
            match event {
                WorkerEvent::Reply(envelope) => self.on_worker_message(*envelope),
                WorkerEvent::Lost { reason } => self.on_worker_lost(reason),
            }
        })?;
        self.worker.set_value(Some(client));
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::install(self);
        Ok(())
    }

    /// Hands the pretrained weights to the worker (and keeps them for a restart).
    pub fn load_model(self, weights: Vec<u8>) {
        let force_cpu = self.restarts.get_value().1;
        self.send(Envelope::with_bytes(
            ToWorker::LoadModel { force_cpu },
            weights.clone(),
        ));
        self.weights.set_value(Some(weights));
    }

    /// Sends a message to the current worker (dropped when there is none).
    pub fn send(self, envelope: Envelope<ToWorker>) {
        self.worker.with_value(|w| {
            if let Some(w) = w {
                w.send(&envelope);
            }
        });
    }

    /// Queues an image's bytes to embed and sends what the window allows.
    pub(crate) fn embed(self, id: ImageId, bytes: Vec<u8>) {
        self.embeds.update_value(|q| q.push(id, bytes));
        self.send_embeds();
    }

    /// Sends queued images while the window has room (only once the network is loaded, so a
    /// worker that dies while loading holds no image).
    pub(crate) fn send_embeds(self) {
        if self
            .worker_backend
            .get_untracked()
            .is_none_or(|b| b.is_err())
        {
            return;
        }
        let batch = self
            .embeds
            .try_update_value(|q| q.next_to_send())
            .unwrap_or_default();
        // Views are drawn with the seed in the settings when the image is sent.
        let views = self.augmented_views.get_untracked();
        let seed = self.settings.with_untracked(|s| s.train.seed);
        for (id, bytes) in batch {
            self.send(Envelope::with_bytes(
                ToWorker::Embed { id, views, seed },
                bytes,
            ));
        }
    }

    /// Sends an image to the worker for its ImageNet logits; the answer lands in
    /// [`Project::classified`] under the returned id.
    pub fn classify(self, bytes: Vec<u8>) -> ImageId {
        let mut id = 0;
        self.classify_pending.update_value(|(pending, next)| {
            id = *next;
            *next = next.wrapping_add(1).max(0x8000_0000);
            pending.insert(id);
        });
        self.send(Envelope::with_bytes(ToWorker::Classify { id }, bytes));
        id
    }

    /// Answers every unanswered classify request with `reason` (its worker is gone).
    pub(crate) fn fail_pending_classifications(self, reason: &str) {
        let pending: Vec<ImageId> = self
            .classify_pending
            .try_update_value(|(p, _)| p.drain().collect())
            .unwrap_or_default();
        if !pending.is_empty() {
            self.classified
                .update(|c| c.extend(pending.into_iter().map(|id| (id, Err(reason.to_string())))));
        }
    }

    /// The worker died (its wasm panicked: a lost GPU, a bug, a file that breaks a decoder).
    /// Only an image that was in flight alone when a worker died for the second time is left
    /// out; a new worker (on the CPU only after a lost GPU) gets the saved project.
    fn on_worker_lost(self, reason: String) {
        web_sys::console::warn_1(&format!("the compute worker stopped: {reason}").into());
        self.worker_generation.update_value(|g| *g += 1);
        self.worker.update_value(|w| {
            if let Some(w) = w.take() {
                w.terminate();
            }
        });
        let verdict = self
            .embeds
            .try_update_value(|q| q.worker_lost())
            .unwrap_or_default();
        for id in verdict.rejected {
            self.reject_image(
                id,
                "this file stopped the compute worker twice, so it was left out".into(),
            );
        }
        self.fail_pending_classifications("the compute worker stopped; pick the picture again");
        // Fine-tuning runs backward kernels on the GPU that nothing else does: a worker that
        // dies in one continues on the CPU (which runs the same blocks) rather than die again.
        let gpu_fine_tuning = self.training.with_untracked(|t| t.running)
            && self.train_blocks.get_untracked() > 0
            && self
                .worker_backend
                .with_untracked(|b| matches!(b, Some(Ok(line)) if !line.starts_with("CPU")));
        self.worker_backend.set(None);
        self.has_model.set(false);
        self.training_failed(
            "training was interrupted when the compute worker stopped; press Train to run it again"
                .into(),
        );
        self.predictions.update(|list| {
            for p in list.iter_mut().filter(|p| p.result.is_none()) {
                p.result = Some(Err(
                    "interrupted when the compute worker stopped; pick the image again".into(),
                ));
            }
        });
        let (restarts, was_cpu) = self.restarts.get_value();
        if restarts >= MAX_WORKER_RESTARTS {
            self.tell(
                NoticeKind::Error,
                format!("The compute worker stopped again ({reason}). Your images and model are saved in this browser: reload the page to go on."),
            );
            return;
        }
        let device_lost = is_device_loss(&reason);
        self.restarts
            .set_value((restarts + 1, was_cpu || device_lost || gpu_fine_tuning));
        self.tell(
            NoticeKind::Error,
            if gpu_fine_tuning && !device_lost {
                format!("Fine-tuning on the GPU stopped the compute worker ({reason}). MedTransfer switched to the CPU, which runs the same blocks; your images, embeddings and model are kept: press Train to fine-tune there.")
            } else if device_lost {
                format!("The GPU stopped working ({reason}). MedTransfer switched to the CPU; your images, embeddings and model are kept.")
            } else {
                format!("The compute worker stopped ({reason}) and was restarted; your images, embeddings and model are kept.")
            },
        );
        self.restart_worker();
    }

    /// Replaces the worker by a new one (fed from storage once its network is loaded).
    pub(crate) fn restart_worker(self) {
        self.worker.update_value(|w| {
            if let Some(w) = w.take() {
                w.terminate();
            }
        });
        self.worker_backend.set(None);
        self.has_model.set(false);
        if let Err(error) = self.attach() {
            self.worker_backend.set(Some(Err(error)));
            return;
        }
        if let Some(weights) = self.weights.get_value() {
            self.load_model(weights);
        }
    }

    /// A sign that the current worker works: later deaths count from zero again.
    fn made_progress(self) {
        self.restarts.update_value(|(n, _)| *n = 0);
    }

    fn on_worker_message(self, envelope: Envelope<FromWorker>) {
        let Envelope { message, bytes } = envelope;
        match message {
            FromWorker::Started => {}
            FromWorker::Crashed { message } => self.on_worker_lost(message),
            FromWorker::ModelReady { backend, .. } => {
                self.worker_backend.set(Some(Ok(backend)));
                if self.restored.get_untracked() {
                    spawn_local(self.feed_worker());
                }
            }
            FromWorker::ModelFailed { error } => self.worker_backend.set(Some(Err(error))),
            FromWorker::ClassifierLoaded { error } => match error {
                None => {
                    self.validation_heatmaps.set(HashMap::new());
                    self.has_model.set(true)
                }
                Some(error) => self.tell(
                    NoticeKind::Error,
                    format!("The saved model could not be loaded ({error}); train again."),
                ),
            },
            FromWorker::Classified { id, result } => {
                self.classify_pending.update_value(|(p, _)| {
                    p.remove(&id);
                });
                self.classified.update(|c| c.push((id, result)));
            }
            FromWorker::Embedded {
                id,
                error,
                views,
                activations,
            } => {
                self.made_progress();
                self.embeds.update_value(|q| q.answered(id));
                self.on_embedded(id, error, (views, activations), bytes.unwrap_or_default());
                self.send_embeds();
            }
            // A fine-tuning run starts twice (the head's fit, then the fine-tuning): the epochs
            // shown are the last phase's, whose kept epoch the model has.
            FromWorker::TrainStarted { epochs, .. } => self.training.update(|t| {
                t.planned_epochs = epochs;
                t.epochs.clear();
                t.searching = None;
            }),
            FromWorker::Searching { done, total } => {
                self.training.update(|t| t.searching = Some((done, total)))
            }
            FromWorker::Epoch(summary) => self.training.update(|t| t.epochs.push(summary)),
            FromWorker::Trained {
                kept_epoch,
                stop_reason,
                validation,
                validation_ids,
                search,
                threshold,
                millis,
                fine_tuned,
            } => {
                self.made_progress();
                match bytes {
                    Some(model) => {
                        let stored = js_sys::Uint8Array::from(model.as_slice());
                        self.model_file.set_value(Some(model));
                        self.has_model.set(true);
                        self.store("the trained model", move |s| async move {
                            s.put_meta(MODEL_KEY, &stored).await
                        });
                    }
                    None => {
                        self.training_failed("the worker sent no model file".into());
                        return;
                    }
                }
                // The old model's heat maps do not explain the new one.
                self.validation_heatmaps.set(HashMap::new());
                // The new model's threshold, or argmax's 0.5 when it has none.
                self.threshold.set(threshold.map_or(0.5, |t| t.value));
                // Predictions of the model this one replaces no longer hold: each says so.
                self.predictions.update(|list| {
                    for p in list.iter_mut().filter(|p| matches!(p.result, Some(Ok(_)))) {
                        p.result = Some(Err(STALE_PREDICTION.into()));
                    }
                });
                self.training.update(|t| {
                    t.running = false;
                    t.searching = None;
                    t.result = Some(TrainedResult {
                        classes: self.training_classes.get_value(),
                        kept_epoch,
                        origin: ModelOrigin::from(stop_reason),
                        validation: validation.map(|v| *v),
                        validation_ids,
                        search: search.map(|s| *s),
                        threshold,
                        millis,
                        fine_tuned,
                    });
                })
            }
            FromWorker::TrainFailed { error } => self.training_failed(error),
            FromWorker::Mapped { result } => self.embedding_map.set(Some(result)),
            FromWorker::Explained { id, heatmap } => match heatmap {
                Ok(heatmap) => self.validation_heatmaps.update(|m| {
                    m.insert(id, heatmap);
                }),
                Err(error) => {
                    web_sys::console::warn_1(&format!("no heat map for image {id}: {error}").into())
                }
            },
            FromWorker::Prediction { id, result } => {
                self.made_progress();
                self.predictions.update(|list| {
                    if let Some(p) = list.iter_mut().find(|p| p.id == id) {
                        p.result = Some(result);
                        // The worker's thumbnail replaces the file itself, which the page
                        // cannot show when it is a DICOM or a 16-bit TIFF.
                        if let Some(thumb) = bytes.as_deref().and_then(jpeg_url) {
                            revoke_url(&p.url);
                            p.url = thumb;
                        }
                    }
                })
            }
        }
    }

    /// An image's embedding (bytes: embedding, its `views` augmented views' embeddings, JPEG
    /// thumbnail) or its per-file error.
    fn on_embedded(
        self,
        id: ImageId,
        error: Option<String>,
        (views, activations): (u32, bool),
        bytes: Vec<u8>,
    ) {
        // Removed while it was embedding: nothing to show or store.
        let Some((class, entry)) = self.find_image(id) else {
            return;
        };
        match (error, split_embedded(&bytes, views, activations)) {
            (None, Some(parts)) => {
                let thumb = jpeg_url(parts.thumbnail);
                class.images.update(|images| {
                    if let Some(image) = images.iter_mut().find(|i| i.id == id) {
                        image.status = ImageStatus::Ready;
                        image.thumb = thumb;
                        image.views = views;
                        image.activations = activations;
                    }
                });
                let record = ImageRecord {
                    id,
                    class_key: class.key,
                    name: entry.name.clone(),
                    original: None,
                    thumbnail: (!parts.thumbnail.is_empty()).then(|| parts.thumbnail.to_vec()),
                    embedding: Some(parts.embedding.to_vec()),
                    views: (views > 0).then(|| parts.views.to_vec()),
                    activations: parts.activations.map(<[u8]>::to_vec),
                };
                // A record that cannot be written stays on the page to write again.
                let name = entry.name;
                spawn_local(async move { self.store_images(&name, vec![record]).await });
            }
            (Some(reason), _) => self.reject_image(id, reason),
            (None, None) => {
                self.reject_image(id, "the compute worker returned no embedding".to_string())
            }
        }
        self.embedded_count.update(|n| *n += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::is_device_loss;

    #[test]
    fn only_a_lost_device_sends_the_next_worker_to_the_cpu() {
        assert!(is_device_loss(
            "simulated loss of the GPU: the device was lost (test hook)"
        ));
        assert!(is_device_loss("wgpu error: Device lost"));
        assert!(is_device_loss("DeviceLost { reason: Unknown }"));
        assert!(!is_device_loss("RuntimeError: unreachable"));
        assert!(!is_device_loss(
            "panicked at src/decoder.rs: index out of bounds"
        ));
    }
}
