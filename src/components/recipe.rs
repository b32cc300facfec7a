//! The automatic recipe on the page: the choice between it and the manual settings, and the
//! table of every candidate's cross-validated score with the winner marked.

use leptos::prelude::*;
use medtransfer_core::recipe::Search;
use medtransfer_core::run::Recipe;
use medtransfer_core::threshold::ThresholdRule;
use medtransfer_core::train::limits;

use crate::state::use_project;

/// The recipe select: automatic (cross-validated) or the manual settings below it.
#[component]
pub fn RecipeChoice() -> impl IntoView {
    let settings = use_project().settings;
    let automatic = move || settings.get().recipe == Recipe::Automatic;
    view! {
        <label>
            "Recipe "
            <select on:change=move |e| settings.update(|s| s.recipe = if event_target_value(&e) == "manual" { Recipe::Manual } else { Recipe::Automatic })>
                <option value="automatic" selected=automatic>"Automatic (cross-validated)"</option>
                <option value="manual" selected=move || !automatic()>"Manual"</option>
            </select>
            <small>"Automatic: cross-validation on your images chooses the head (linear or MLP), its regularisation and the class weighting, then refits the winner on every image; its figures are out-of-fold. Manual: the settings below, with a validation share held out."</small>
        </label>
    }
}

/// The automatic recipe's most folds (fewer when a class has fewer images or patients).
#[component]
pub fn FoldsInput() -> impl IntoView {
    let settings = use_project().settings;
    view! {
        <label>
            "Folds "
            <input type="number" min=*limits::FOLDS.start() max=*limits::FOLDS.end()
                disabled=move || settings.get().recipe != Recipe::Automatic
                prop:value=move || settings.get().folds
                on:change=move |e| if let Some(v) = number(&e) {
                    settings.update(|s| { s.folds = v.max(0.0) as usize; *s = s.clone().clamped() })
                } />
            <small>"Automatic recipe: the cross-validation's folds, at most the images (or patients) of the smallest class; a class under 10 repeats the folds 3 times."</small>
        </label>
    }
}

/// An input's value as a number, if it is one.
fn number(event: &leptos::ev::Event) -> Option<f64> {
    event_target_value(event).parse().ok()
}

/// The sensitivity target offered first when the rule is switched to a target sensitivity.
const SCREENING_SENSITIVITY: f64 = 0.95;

/// How the two-class decision threshold is chosen: the best balanced accuracy, or the fewest
/// false positives that keep a target sensitivity (screening).
#[component]
pub fn ThresholdRuleChoice() -> impl IntoView {
    let project = use_project();
    let settings = project.settings;
    // The class a threshold calls: the second class card (label 1), as trained.
    let positive = move || {
        project.classes.with(|c| {
            c.get(1)
                .map(|e| e.name.get())
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| "the second class".into())
        })
    };
    let target = move || match settings.get().threshold {
        ThresholdRule::Sensitivity { target } => Some(target),
        ThresholdRule::BalancedAccuracy => None,
    };
    view! {
        <label>
            "Decision threshold "
            <select data-testid="threshold-rule" on:change=move |e| settings.update(|s| s.threshold = if event_target_value(&e) == "sensitivity" {
                ThresholdRule::Sensitivity { target: SCREENING_SENSITIVITY }
            } else {
                ThresholdRule::BalancedAccuracy
            })>
                <option value="balanced" selected=move || target().is_none()>"Best balanced accuracy"</option>
                <option value="sensitivity" selected=move || target().is_some()>"Target sensitivity"</option>
            </select>
            <small>{move || format!("Two classes: the probability from which an image is called {}, chosen on the out-of-fold or validation predictions. A target sensitivity (screening) misses at most 1 − target of the {} images (5% at 0.95), at the cost of more false alarms.", positive(), positive())}</small>
        </label>
        {move || target().map(|t| view! {
            <label>
                {move || format!("Sensitivity target for {} ", positive())}
                <input type="number" step="0.01" min="0.01" max="1" data-testid="sensitivity-target" prop:value=t
                    on:change=move |e| match number(&e).filter(|v| *v > 0.0 && *v <= 1.0) {
                        Some(v) => settings.update(|s| s.threshold = ThresholdRule::Sensitivity { target: v }),
                        // Refused: the box shows the target in use again.
                        None => settings.update(|_| {}),
                    } />
            </label>
        })}
    }
}

/// How the figures of a search were obtained, in words.
pub fn search_summary(search: &Search) -> String {
    format!(
        "{}-fold cross-validation{}{} over all {} images",
        search.folds,
        if search.repeats > 1 {
            format!(", repeated {} times", search.repeats)
        } else {
            String::new()
        },
        if search.grouped { ", grouped" } else { "" },
        search.evaluation.n
    )
}

/// Every candidate's out-of-fold score, the chosen one marked.
#[component]
pub fn SearchTable(search: Search) -> impl IntoView {
    let chosen = search.chosen;
    let skipped = search.skipped.clone();
    view! {
        <table class="search" data-testid="search-table" tabindex="0"
            aria-label="Automatic recipe: every candidate's cross-validated score">
            <caption>{format!("Candidates scored by {}: the lowest class-balanced log loss wins.", search_summary(&search))}</caption>
            <thead><tr><th>"Candidate"</th><th>"Log loss"</th><th>"Accuracy"</th><th>"Bal. acc."</th><th>"AUC"</th></tr></thead>
            <tbody>
                {search.scores.iter().enumerate().map(|(i, s)| view! {
                    <tr data-testid="search-row" class:chosen=i == chosen aria-current=(i == chosen).then_some("true")>
                        <td>{s.candidate.describe()}{(i == chosen).then_some(" (chosen)")}</td>
                        <td>{format!("{:.4}", s.log_loss)}</td>
                        <td>{format!("{:.3}", s.accuracy)}</td>
                        <td>{format!("{:.3}", s.balanced_accuracy)}</td>
                        <td>{s.auc.map(|a| format!("{a:.3}"))}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        {skipped.into_iter().map(|s| view! {
            <p class="hint">{format!("Not tried: {} ({}).", s.candidate.describe(), s.reason)}</p>
        }).collect_view()}
    }
}
