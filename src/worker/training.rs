//! Training in the worker: the run's items and their augmented views gathered from what the
//! worker holds, core's [`run`] (or, fine-tuning the last blocks, [`fine_tune_run`] on the
//! items' stored activations) driven with a [`Progress`] that posts to the page, and the
//! trained model kept for predictions.

use std::rc::Rc;

use medtransfer_core::ComputeDevice;
use medtransfer_core::efficientnet::{EfficientNetLite0, TailWeights};
use medtransfer_core::finetune::{
    CutFeatures, FineTuneConfig, STORED_BLOCKS, advance, fine_tune_run,
};
use medtransfer_core::model_file::ModelFile;
use medtransfer_core::ood::OodReference;
use medtransfer_core::recipe::SearchEvent;
use medtransfer_core::run::{Progress, Recipe, RunConfig, Validation, run};
use medtransfer_core::train::{CancelToken, LabelledEmbeddings, TrainError, TrainEvent};

use super::predictor::ModelInUse;
use super::{STATE, post, post_with, yield_now};
use crate::protocol::{FineTunedSummary, FromWorker, ImageId};

/// Trains on `items` (`(image, label)`, their embeddings held by the worker) and posts
/// [`FromWorker::Trained`] or [`FromWorker::TrainFailed`].
pub(super) async fn train(
    classes: Vec<String>,
    items: Vec<(ImageId, usize)>,
    config: RunConfig,
    fine_tune: Option<FineTuneConfig>,
) {
    let started = STATE.with_borrow_mut(|s| {
        if s.training {
            return Err("training is already running".to_string());
        }
        let device = s
            .device
            .clone()
            .ok_or("the network is not loaded yet".to_string())?;
        let mut rows = LabelledEmbeddings::default();
        let mut views = Vec::new();
        for (i, (id, label)) in items.iter().enumerate() {
            let embedding = s
                .embeddings
                .get(id)
                .ok_or(format!("image {id} has no embedding yet"))?;
            rows.embeddings.push(embedding.clone());
            rows.labels.push(*label);
            for view in s.views.get(id).into_iter().flatten() {
                views.push((i, view.clone()));
            }
        }
        // Fine-tuning starts from each image's stored activations.
        let tuning = match &fine_tune {
            Some(tune) => {
                let missing = items
                    .iter()
                    .filter(|(id, _)| !s.activations.contains_key(id))
                    .count();
                if missing > 0 {
                    return Err(format!(
                        "{missing} of the {} images have no stored activations to fine-tune \
                         from (embedded by an older page, or imported from a project file it \
                         wrote): train the head alone, or add those images again from their \
                         files",
                        items.len()
                    ));
                }
                let model = s
                    .model
                    .clone()
                    .ok_or("the network is not loaded yet".to_string())?;
                let activations: Vec<CutFeatures> = items
                    .iter()
                    .filter_map(|(id, _)| s.activations.get(id).cloned())
                    .collect();
                Some((tune.clone(), model, activations))
            }
            None => None,
        };
        s.training = true;
        s.cancel = CancelToken::new();
        let progress = WorkerProgress {
            views,
            labels: rows.labels.clone(),
        };
        Ok((device, rows, progress, s.cancel.clone(), tuning))
    });
    let ids: Vec<ImageId> = items.iter().map(|(id, _)| *id).collect();
    let result = match started {
        Ok((device, rows, progress, cancel, Some((tune, model, activations)))) => {
            let job = Tuning {
                tune,
                model,
                activations,
            };
            run_fine_tuning(classes, &ids, rows, config, job, device, cancel, progress).await
        }
        Ok((device, rows, progress, cancel, None)) => {
            run_training(classes, &ids, rows, config, device, cancel, progress).await
        }
        Err(error) => {
            post(&FromWorker::TrainFailed { error });
            return;
        }
    };
    STATE.with_borrow_mut(|s| s.training = false);
    if let Err(error) = result {
        post(&FromWorker::TrainFailed { error });
    }
}

/// The automatic recipe's MLP budget in the page (floating-point operations; the CLI's is
/// 150 times larger): about ten seconds on the browser's CPU path.
const PAGE_MLP_BUDGET: f64 = 2e9;

/// The worker's side of a run: posts the start and each epoch, yields to the event loop
/// between epochs so that [`ToWorker::Stop`] can arrive, and gives the items' augmented views
/// (made when each image was embedded) to the automatic recipe's search, or to a manual run's
/// training side.
struct WorkerProgress {
    /// `(item, embedding)` of every augmented view of the run's items.
    views: Vec<(usize, Vec<f32>)>,
    /// The items' labels.
    labels: Vec<usize>,
}

impl Progress for WorkerProgress {
    /// Every item's views, moved to the search: [`run`] asks once per run, before it (a second
    /// call gets none).
    fn augmented_views(&mut self, _items: &[usize]) -> Vec<(usize, Vec<f32>)> {
        std::mem::take(&mut self.views)
    }

    /// Copies of the `train` items' views (asked once per split, e.g. per fold).
    fn extra_training(&mut self, train: &[usize], _validation: &[usize]) -> LabelledEmbeddings {
        // Only the training side's views: a validation image's would leak into training.
        let mut training = vec![false; self.labels.len()];
        for &i in train {
            if let Some(flag) = training.get_mut(i) {
                *flag = true;
            }
        }
        let mut extra = LabelledEmbeddings::default();
        for (item, view) in &self.views {
            if let (Some(true), Some(&label)) = (training.get(*item), self.labels.get(*item)) {
                extra.embeddings.push(view.clone());
                extra.labels.push(label);
            }
        }
        extra
    }

    fn event(&mut self, event: &TrainEvent) {
        match event {
            TrainEvent::Started {
                epochs,
                train_items,
                validation_items,
                ..
            } => post(&FromWorker::TrainStarted {
                epochs: *epochs,
                train_items: *train_items,
                validation_items: *validation_items,
            }),
            TrainEvent::Epoch(summary) => post(&FromWorker::Epoch(summary.clone())),
            TrainEvent::Batch { .. } | TrainEvent::Finished { .. } => {}
        }
    }

    fn search(&mut self, event: &SearchEvent) {
        if let SearchEvent::Fitted { done, total } = event {
            post(&FromWorker::Searching {
                done: *done,
                total: *total,
            });
        }
    }

    async fn between_epochs(&mut self) {
        yield_now().await;
    }
}

/// Runs core's [`run`] on `items` (image `ids[i]` is item `i`), keeps the classifier and posts
/// [`FromWorker::Trained`] with the model file; the error is the message the page shows.
async fn run_training(
    classes: Vec<String>,
    ids: &[ImageId],
    items: LabelledEmbeddings,
    config: RunConfig,
    device: ComputeDevice,
    cancel: CancelToken,
    mut progress: WorkerProgress,
) -> Result<(), String> {
    let started = js_sys::Date::now();
    // The page's compute (one thread in wasm, or a GPU that may be a software one): the
    // automatic recipe tries the MLP only on the smallest sets.
    let config = RunConfig {
        mlp_budget: PAGE_MLP_BUDGET,
        ..config
    };
    let finished = run(
        &classes,
        &items,
        Validation::Split { groups: None },
        &config,
        &device.device,
        &cancel,
        &mut progress,
    )
    .await
    .map_err(|e| match e {
        TrainError::Split { .. } if config.recipe == Recipe::Automatic => {
            format!("{e}. The automatic recipe cross-validates: add images to that class")
        }
        TrainError::Split { .. } => {
            format!("{e}. Add images, or set the validation share to 0 to train on all of them")
        }
        e => e.to_string(),
    })?;
    let trained = finished.trained;
    let mut model_file = ModelFile::from_trained(&trained, "MedTransfer web app");
    if let Some(search) = &finished.search {
        model_file = model_file.with_search(search);
    }
    // The automatic recipe's figures are out of fold over every image.
    let (validation, validation_items) = match &finished.search {
        Some(search) => (
            Some(search.evaluation.clone()),
            (0..ids.len()).collect::<Vec<_>>(),
        ),
        None => (
            trained.validation.clone(),
            finished.validation_items.clone(),
        ),
    };
    keep_and_post(
        model_file,
        &items,
        config.train.seed,
        FromWorker::Trained {
            kept_epoch: trained.kept_epoch,
            stop_reason: trained.stop_reason,
            validation: validation.map(Box::new),
            validation_ids: validation_items
                .iter()
                .filter_map(|&i| ids.get(i).copied())
                .collect(),
            search: finished
                .search
                .as_ref()
                .map(|search| Box::new(search.without_probabilities())),
            threshold: trained.threshold,
            millis: js_sys::Date::now() - started,
            fine_tuned: None,
        },
        &device,
    )
}

/// Keeps `model_file`'s model for predictions (as a `LoadClassifier` message would), with
/// an OOD reference fitted on `items`, and posts `trained` with the file's bytes.
fn keep_and_post(
    model_file: ModelFile,
    items: &LabelledEmbeddings,
    seed: u64,
    trained: FromWorker,
    device: &ComputeDevice,
) -> Result<(), String> {
    // Too few images give no reference (the page says predictions are not checked).
    let model_file = match OodReference::fit(&items.embeddings, &items.labels, None, seed) {
        Ok(reference) => model_file.with_ood(reference),
        Err(_) => model_file,
    };
    let bytes = model_file.to_bytes();
    let in_use = ModelInUse::from_file(model_file, device)?;
    STATE.with_borrow_mut(|s| s.classifier = Some(Rc::new(in_use)));
    post_with(&trained, Some(bytes));
    Ok(())
}

/// What a fine-tuning run needs besides a head's run.
struct Tuning {
    tune: FineTuneConfig,
    model: Rc<EfficientNetLite0>,
    /// The items' stored activations ([`STORED_BLOCKS`]), in item order.
    activations: Vec<CutFeatures>,
}

/// Fine-tunes the last blocks with the head on `items` (image `ids[i]` is item `i`): the
/// stored activations moved to the run's cut once, core's [`fine_tune_run`], the tuned model
/// kept and posted as [`FromWorker::Trained`] with its held-out figures.
#[allow(clippy::too_many_arguments)]
async fn run_fine_tuning(
    classes: Vec<String>,
    ids: &[ImageId],
    items: LabelledEmbeddings,
    config: RunConfig,
    job: Tuning,
    device: ComputeDevice,
    cancel: CancelToken,
    mut progress: WorkerProgress,
) -> Result<(), String> {
    let started = js_sys::Date::now();
    let config = RunConfig {
        mlp_budget: PAGE_MLP_BUDGET,
        ..config
    };
    let blocks = job.tune.blocks;
    let cut = advance(
        &job.model,
        &job.activations,
        STORED_BLOCKS,
        blocks,
        &device.device,
    )
    .await
    .map_err(|e| e.to_string())?;
    drop(job.activations);
    let pretrained = TailWeights::pretrained(&job.model, blocks)
        .await
        .map_err(|e| e.to_string())?;
    let finished = fine_tune_run(
        &classes,
        &items,
        cut,
        None,
        &pretrained,
        &config,
        &job.tune,
        &device.device,
        &cancel,
        &mut progress,
    )
    .await
    .map_err(|e| match e {
        TrainError::Split { .. } => format!(
            "{e}. Fine-tuning holds out at least one image of each class for validation and \
             cross-validates the head on the rest: add images to that class"
        ),
        e => e.to_string(),
    })?;
    let tuned = &finished.tuned;
    let mut model_file = ModelFile::from_fine_tuned(tuned, "MedTransfer web app");
    if let Some(search) = &finished.head_run.search {
        model_file = model_file.with_search(search);
    }
    let head_only = finished.head_run.trained.validation.as_ref();
    keep_and_post(
        model_file,
        &items,
        config.train.seed,
        FromWorker::Trained {
            kept_epoch: tuned.head.kept_epoch,
            stop_reason: tuned.head.stop_reason,
            validation: tuned.head.validation.clone().map(Box::new),
            validation_ids: finished
                .head_run
                .validation_items
                .iter()
                .filter_map(|&i| ids.get(i).copied())
                .collect(),
            search: finished
                .head_run
                .search
                .as_ref()
                .map(|search| Box::new(search.without_probabilities())),
            threshold: tuned.head.threshold,
            millis: js_sys::Date::now() - started,
            fine_tuned: Some(FineTunedSummary {
                blocks,
                head_only_accuracy: head_only.map(|v| v.accuracy),
                head_only_auc: head_only.and_then(|v| v.auc),
            }),
        },
        &device,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress() -> WorkerProgress {
        WorkerProgress {
            views: vec![
                (0, vec![1.0]),
                (1, vec![2.0]),
                (1, vec![3.0]),
                (2, vec![4.0]),
            ],
            labels: vec![0, 1, 0],
        }
    }

    #[test]
    fn a_manual_run_trains_on_its_training_sides_views_only() {
        // Item 0 validates: its view must not train.
        let mut progress = progress();
        let extra = progress.extra_training(&[2, 1], &[0]);
        assert_eq!(extra.embeddings, [vec![2.0], vec![3.0], vec![4.0]]);
        assert_eq!(extra.labels, [1, 1, 0]);
        // Another split (a fold) gets its own side's views.
        let extra = progress.extra_training(&[0], &[1, 2]);
        assert_eq!((extra.embeddings, extra.labels), (vec![vec![1.0]], vec![0]));
    }

    #[test]
    fn the_search_gets_every_items_views() {
        let views = progress().augmented_views(&[0, 1, 2]);
        assert_eq!(views.len(), 4);
        assert_eq!(views[3], (2, vec![4.0]));
    }
}
