//! The model's metrics on the validation images: accuracy, balanced accuracy, AUC, the
//! two-class decision threshold, per-class figures, the confusion matrix and ROC curves.

use leptos::prelude::*;
use leptos_chartistry::{
    AspectRatio, AxisMarker, Chart, Interpolation, IntoInner, Legend, Line, Series, TickLabels,
};
use medtransfer_core::metrics::Evaluation;

use super::heatmap::{HeatmapToggle, heatmap_overlay};
use super::recipe::search_summary;
use crate::state::{Project, TrainingState, use_project};

/// The ROC curve(s) of the validation images: one for two classes, one per class above.
#[component]
fn RocChart(evaluation: Evaluation) -> impl IntoView {
    let binary = evaluation.classes.len() == 2;
    let curves: Vec<(String, Vec<(f64, f64)>)> = evaluation
        .roc
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.is_empty())
        .map(|(i, curve)| {
            let name = if binary {
                evaluation.classes.get(1).cloned().unwrap_or_default()
            } else {
                evaluation.classes.get(i).cloned().unwrap_or_default()
            };
            let mut points: Vec<(f64, f64)> = curve
                .iter()
                .map(|p| (p.false_positive_rate, p.true_positive_rate))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            (name, points)
        })
        .collect();
    curves
        .into_iter()
        .map(|(name, points)| {
            let data = Signal::derive(move || points.clone());
            let series = Series::new(|p: &(f64, f64)| p.0)
                .line(Line::new(|p: &(f64, f64)| p.1).with_name(format!("ROC, {name} vs rest")).with_interpolation(Interpolation::Linear))
                .line(Line::new(|p: &(f64, f64)| p.0).with_name("chance").with_interpolation(Interpolation::Linear))
                .with_x_range(0.0, 1.0)
                .with_y_range(0.0, 1.0);
            view! {
                <figure data-testid="roc-curve" tabindex="0" aria-label=format!("ROC curve, {name} against the rest")>
                    <Chart
                        aspect_ratio=AspectRatio::from_outer_ratio(420.0, 340.0)
                        series=series
                        data=data
                        left=TickLabels::aligned_floats()
                        bottom=TickLabels::aligned_floats()
                        top=Legend::middle()
                        inner=[AxisMarker::left_edge().into_inner(), AxisMarker::bottom_edge().into_inner()]
                    />
                    <figcaption>"True positive rate (up) against false positive rate (right)"</figcaption>
                </figure>
            }
        })
        .collect_view()
}

fn set_threshold(project: Project, event: &leptos::ev::Event) {
    if let Ok(t) = event_target_value(event).parse::<f64>() {
        project.threshold.set(t.clamp(0.0, 1.0));
    }
}

fn fmt_ci(ci: Option<[f64; 2]>) -> String {
    ci.map_or(String::new(), |[lo, hi]| {
        format!(" (95% CI {lo:.3}–{hi:.3})")
    })
}

/// Validation metrics of the trained model.
#[component]
pub fn ResultsSection() -> impl IntoView {
    let project = use_project();
    let show_heatmaps = RwSignal::new(false);
    // While the toggle is on, each misclassified image of the model in use is explained for
    // the class it was wrongly given: again whenever the model or its results change.
    Effect::new(move |_| {
        project.has_model.track();
        if show_heatmaps.get() {
            project.explain(project.training.with(TrainingState::misclassified));
        }
    });
    view! {
        <section aria-labelledby="results-heading">
            <h2 id="results-heading">"3. Results"</h2>
            {move || {
                let result = project.training.get().result?;
                let Some(v) = result.validation.clone() else {
                    return Some(view! { <p>"No validation images were held out, so there are no metrics (raise the validation share)."</p> }.into_any());
                };
                let classes = result.classes.clone();
                let ids = result.validation_ids.clone();
                let source = match (&result.fine_tuned, &result.search) {
                    (Some(tuned), _) => format!(
                        "On {} validation images held out of training: the last {} blocks of the network were fine-tuned with the head{}.",
                        v.n,
                        tuned.blocks,
                        tuned.head_only_accuracy.map_or(String::new(), |a| format!(
                            " (the head alone, on the frozen network, scored accuracy {a:.3}{} on them)",
                            tuned.head_only_auc.map_or(String::new(), |auc| format!(", AUC {auc:.3}"))
                        ))
                    ),
                    (None, Some(search)) => format!("Out-of-fold figures from {}: each image was predicted by heads that never saw it. The recipe was chosen on these predictions too, so they lean slightly optimistic.", search_summary(search)),
                    (None, None) => format!("On {} validation images held out of training.", v.n),
                };
                let on = if result.search.is_some() && result.fine_tuned.is_none() { "the out-of-fold predictions" } else { "the validation images" };
                let chosen = result.threshold.map(|t| format!("The model's threshold {:.2} was chosen for the {} on {on}.", t.value, t.rule.describe()));
                let matrix = v.confusion_matrix.clone();
                let misclassified = v.misclassified.clone();
                let warning = v.small_sample_note();
                Some(view! {
                    <p data-testid="figures-source">{source}</p>
                    {warning.map(|w| view! { <p class="hint" data-testid="small-sample">{w}</p> })}
                    <dl class="metrics">
                        <dt>"Accuracy"</dt>
                        <dd><span data-testid="metric-accuracy">{format!("{:.3}", v.accuracy)}</span>{fmt_ci(v.accuracy_ci)}</dd>
                        <dt>"Balanced accuracy"</dt>
                        <dd data-testid="metric-balanced-accuracy">{format!("{:.3}", v.balanced_accuracy)}</dd>
                        <dt>"AUC"</dt>
                        <dd data-testid="metric-auc">{v.auc.map_or("not computable".to_string(), |a| format!("{a:.3}{}", fmt_ci(v.auc_ci)))}</dd>
                    </dl>
                    {(classes.len() == 2 && !v.roc.first().is_none_or(Vec::is_empty)).then(|| {
                        let curve = v.roc.first().cloned().unwrap_or_default();
                        let at = move |t: f64| {
                            // The lowest ROC threshold at or above t: the counts of scores ≥ t.
                            curve.iter().rev().find(|p| p.threshold >= t)
                                .map_or((0.0, 1.0), |p| (p.true_positive_rate, 1.0 - p.false_positive_rate))
                        };
                        let positive = classes[1].clone();
                        view! {
                            <div class="threshold">
                                <label>
                                    {format!("Decision threshold for {positive}: ")}
                                    <input type="range" min="0.01" max="0.99" step="0.01" data-testid="threshold"
                                        prop:value=move || project.threshold.get()
                                        on:input=move |e| set_threshold(project, &e) />
                                    {move || format!(" {:.2}", project.threshold.get())}
                                </label>
                                <p data-testid="threshold-effect">
                                    {move || {
                                        let (sensitivity, specificity) = at(project.threshold.get());
                                        format!("On {on}: sensitivity {sensitivity:.3}, specificity {specificity:.3}. Predictions below use this threshold.")
                                    }}
                                </p>
                                {chosen.map(|c| view! { <p data-testid="threshold-chosen">{c}</p> })}
                            </div>
                        }
                    })}
                    <table class="per-class" tabindex="0" aria-label="Per-class figures">
                        <thead><tr><th>"Class"</th><th>"Sensitivity"</th><th>"Specificity"</th><th>"Precision"</th><th>"F1"</th><th>"Images"</th></tr></thead>
                        <tbody>
                            {v.per_class.iter().map(|c| view! {
                                <tr><td>{c.class.clone()}</td><td>{format!("{:.3}", c.sensitivity)}</td><td>{format!("{:.3}", c.specificity)}</td>
                                <td>{format!("{:.3}", c.precision)}</td><td>{format!("{:.3}", c.f1)}</td><td>{c.support}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    {(!misclassified.is_empty()).then(|| view! {
                        <HeatmapToggle show=show_heatmaps testid="validation-gradcam-toggle"
                            label="Show where the model looked on the misclassified images (Grad-CAM of the class it wrongly gave, by the model in use)" />
                    })}
                    <table class="confusion" class:with-heatmaps=move || show_heatmaps.get() data-testid="confusion-matrix" tabindex="0">
                        <caption>"Confusion matrix: rows are the true class, columns the predicted one; wrong cells show their images."</caption>
                        <thead><tr><th></th>{classes.iter().map(|c| view! { <th scope="col">{c.clone()}</th> }).collect_view()}</tr></thead>
                        <tbody>
                            {matrix.iter().enumerate().map(|(t, row)| {
                                let cells = row.iter().enumerate().map(|(p, n)| {
                                    let thumbs = misclassified.iter()
                                        .filter(|m| m.true_class == t && m.predicted_class == p)
                                        .filter_map(|m| ids.get(m.index).and_then(|&id| project.image_url(id).map(|u| (id, m.predicted_class, u))))
                                        .map(|(id, class, (url, name))| view! {
                                            <span class="thumb" data-testid="misclassified-thumb">
                                                <img src=url alt=name.clone() title=name width="32" height="32" />
                                                {move || show_heatmaps.get()
                                                    .then(|| project.validation_heatmaps.with(|m| m.get(&id).cloned()))
                                                    .flatten()
                                                    .filter(|h| h.class == class)
                                                    .and_then(|h| heatmap_overlay(&h, 32))}
                                            </span>
                                        })
                                        .collect_view();
                                    view! { <td>{*n}<div class="cell-thumbs">{thumbs}</div></td> }
                                }).collect_view();
                                view! { <tr><th scope="row">{classes.get(t).cloned()}</th>{cells}</tr> }
                            }).collect_view()}
                        </tbody>
                    </table>
                    <RocChart evaluation=v.clone() />
                }.into_any())
            }}
        </section>
    }
}
