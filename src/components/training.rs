//! Settings, Train / Stop, and the epochs as they finish (table and curves).

use leptos::prelude::*;
use leptos_chartistry::{
    AspectRatio, AxisMarker, Chart, Interpolation, IntoInner, Legend, Line, Padding, Series,
    TickLabels, XGridLine, YGridLine,
};
use medtransfer_core::head::HeadKind;
use medtransfer_core::train::{ClassWeighting, limits};

use medtransfer_core::run::Recipe;

use super::fine_tune::FineTuneChoice;
use super::recipe::{FoldsInput, RecipeChoice, SearchTable, ThresholdRuleChoice, search_summary};
use crate::state::{ModelOrigin, mlp_head, use_project};

/// Settings, Train / Stop, and the epochs as they finish.
#[component]
pub fn TrainSection() -> impl IntoView {
    let project = use_project();
    let settings = project.settings;
    let can_train = move || {
        let counts = project.ready_counts();
        project.worker_backend.get().is_some_and(|b| b.is_ok())
            && counts.len() >= 2
            && counts.iter().all(|&n| n >= 1)
            && project.pending() == 0
            && !project.training.get().running
    };
    let is_mlp = move || matches!(settings.get().train.head, HeadKind::Mlp { .. });
    let automatic = move || settings.get().recipe == Recipe::Automatic;
    let number = |e: &leptos::ev::Event| event_target_value(e).parse::<f64>().ok();
    view! {
        <section aria-labelledby="train-heading">
            <h2 id="train-heading">"2. Train"</h2>
            <div class="settings">
                <RecipeChoice />
                <FoldsInput />
                <ThresholdRuleChoice />
                <FineTuneChoice />
                <fieldset disabled=automatic>
                <legend>"Manual recipe"</legend>
                <label>
                    "Head "
                    <select on:change=move |e| settings.update(|s| s.train.head = if event_target_value(&e) == "mlp" { mlp_head() } else { HeadKind::Linear })>
                        <option value="mlp" selected=is_mlp>"MLP (1024 hidden units)"</option>
                        <option value="linear" selected=move || !is_mlp()>"Linear"</option>
                    </select>
                    <small>"The MLP is the source recipe's head and did best on validation data; linear trains fastest."</small>
                </label>
                <label>
                    "Epochs "
                    <input type="number" min=*limits::EPOCHS.start() max=*limits::EPOCHS.end() prop:value=move || settings.get().train.epochs
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| { s.train.epochs = v.max(0.0) as usize; *s = s.clone().clamped() }) } />
                    <small>"Passes over the images; training stops early when validation stops improving."</small>
                </label>
                <label>
                    "Batch size "
                    <input type="number" min=*limits::BATCH_SIZE.start() max=*limits::BATCH_SIZE.end() prop:value=move || settings.get().train.batch_size
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| { s.train.batch_size = v.max(0.0) as usize; *s = s.clone().clamped() }) } />
                    <small>"Images per step."</small>
                </label>
                <label>
                    "Learning rate "
                    <input type="number" step="any" min="0.000001" max=limits::LEARNING_RATE.1 prop:value=move || settings.get().train.learning_rate
                        on:change=move |e| if let Some(v) = number(&e).filter(|v| limits::learning_rate_ok(*v)) { settings.update(|s| s.train.learning_rate = v) } />
                    <small>"Step size; 0.0001 suits the MLP, 0.001 the linear head."</small>
                </label>
                <label>
                    "Class weights "
                    <select on:change=move |e| settings.update(|s| s.train.class_weights = match event_target_value(&e).as_str() {
                        "on" => ClassWeighting::On, "off" => ClassWeighting::Off, _ => ClassWeighting::Auto })>
                        <option value="auto" selected=move || settings.get().train.class_weights == ClassWeighting::Auto>"Automatic"</option>
                        <option value="on" selected=move || settings.get().train.class_weights == ClassWeighting::On>"Always"</option>
                        <option value="off" selected=move || settings.get().train.class_weights == ClassWeighting::Off>"Never"</option>
                    </select>
                    <small>"Rare classes count more, so an imbalanced set does not favour its largest class."</small>
                </label>
                <label>
                    "Validation share "
                    <input type="number" step="0.05" min=*limits::VALIDATION_SHARE.start() max=*limits::VALIDATION_SHARE.end() prop:value=move || settings.get().validation_share
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| { s.validation_share = v; *s = s.clone().clamped() }) } />
                    <small>"Images held out of training to measure the model (at least one per class)."</small>
                </label>
                </fieldset>
                <label>
                    "Seed "
                    <input type="number" min="0" prop:value=move || settings.get().train.seed
                        on:change=move |e| if let Some(v) = number(&e) { settings.update(|s| s.train.seed = v.max(0.0) as u64) } />
                    <small>"The same seed and images give the same model."</small>
                </label>
            </div>
            <button data-testid="train" disabled=move || !can_train() on:click=move |_| project.start_training()>
                "Train"
            </button>
            <button data-testid="stop" disabled=move || !project.training.get().running
                on:click=move |_| project.stop_training()>
                "Stop"
            </button>
            <p role="status" data-testid="train-status" data-running=move || project.training.get().running.to_string()>
                {move || {
                    let t = project.training.get();
                    if let Some(error) = t.error {
                        format!("Training failed: {error}")
                    } else if let (true, Some((done, total)), true) = (t.running, t.searching, t.epochs.is_empty()) {
                        format!("Cross-validating the automatic recipe: {done} of {total} fold fits")
                    } else if t.running && t.searching.is_some() {
                        format!("Refitting the chosen head on every image: iteration {}", t.epochs.len())
                    } else if t.running {
                        format!("Training: epoch {} of {}", t.epochs.len(), t.planned_epochs)
                    } else if let Some(r) = t.result.as_ref().filter(|r| r.origin == ModelOrigin::Imported) {
                        format!("Model imported with the project (kept epoch {}).", r.kept_epoch)
                    } else if let Some((r, search)) = t.result.as_ref().and_then(|r| Some((r, r.search.as_ref()?))) {
                        format!("Trained in {:.1} s; the automatic recipe chose {} by {}.", r.millis / 1000.0, search.chosen().candidate.describe(), search_summary(search))
                    } else if let Some(r) = &t.result {
                        format!("Trained in {:.1} s; kept epoch {} ({}).", r.millis / 1000.0, r.kept_epoch, r.origin.describe())
                    } else {
                        String::new()
                    }
                }}
            </p>
            {move || project.training.get().result.and_then(|r| r.search).map(|search| view! { <SearchTable search=search /> })}
            <TrainingCurves />
            <table class="epochs" tabindex="0" aria-label="Epochs: loss and accuracy">
                <thead><tr><th>"Epoch"</th><th>"Train loss"</th><th>"Train acc."</th><th>"Val. loss"</th><th>"Val. acc."</th></tr></thead>
                <tbody>
                    {move || project.training.get().epochs.into_iter().map(|e| view! {
                        <tr data-testid="epoch-row">
                            <td>{e.epoch}</td>
                            <td>{format!("{:.4}", e.train_loss)}</td>
                            <td>{format!("{:.3}", e.train_accuracy)}</td>
                            <td>{e.validation_loss.map(|v| format!("{v:.4}"))}</td>
                            <td>{e.validation_accuracy.map(|v| format!("{v:.3}"))}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

/// One epoch on the curves: (epoch, training loss, validation loss, training accuracy,
/// validation accuracy); a missing validation value is NaN (no point drawn).
type CurveRow = (f64, f64, f64, f64, f64);

/// The training and validation lines of one measure.
fn curve_pair(
    measure: &str,
    train: fn(&CurveRow) -> f64,
    validation: fn(&CurveRow) -> f64,
) -> Series<CurveRow, f64, f64> {
    Series::new(|r: &CurveRow| r.0)
        .line(
            Line::new(train)
                .with_name(format!("training {measure}"))
                .with_interpolation(Interpolation::Linear),
        )
        .line(
            Line::new(validation)
                .with_name(format!("validation {measure}"))
                .with_interpolation(Interpolation::Linear),
        )
}

/// One chart of the curves, with its caption.
fn curve_chart(
    series: Series<CurveRow, f64, f64>,
    rows: Signal<Vec<CurveRow>>,
    caption: &'static str,
) -> impl IntoView {
    view! {
        <figure>
            <Chart
                aspect_ratio=AspectRatio::from_outer_ratio(520.0, 260.0)
                padding=Padding::sides(8.0, 24.0, 8.0, 8.0)
                series=series
                data=rows
                left=TickLabels::aligned_floats()
                bottom=TickLabels::aligned_floats()
                top=Legend::middle()
                inner=[AxisMarker::left_edge().into_inner(), AxisMarker::bottom_edge().into_inner(),
                    XGridLine::default().into_inner(), YGridLine::default().into_inner()]
            />
            <figcaption>{caption}</figcaption>
        </figure>
    }
}

/// Training and validation loss and accuracy per epoch, as the epochs finish.
#[component]
fn TrainingCurves() -> impl IntoView {
    let project = use_project();
    let rows = Signal::derive(move || {
        project
            .training
            .get()
            .epochs
            .iter()
            .map(|e| {
                (
                    e.epoch as f64,
                    e.train_loss,
                    e.validation_loss.unwrap_or(f64::NAN),
                    e.train_accuracy,
                    e.validation_accuracy.unwrap_or(f64::NAN),
                )
            })
            .collect::<Vec<_>>()
    });
    let losses = curve_pair("loss", |r| r.1, |r| r.2);
    let accuracies = curve_pair("accuracy", |r| r.3, |r| r.4).with_y_range(0.0, 1.0);
    view! {
        <div class="charts" data-testid="training-curves" tabindex="0" role="group" aria-label="Training curves">
            {curve_chart(losses, rows, "Loss per epoch")}
            {curve_chart(accuracies, rows, "Accuracy per epoch")}
        </div>
    }
}
