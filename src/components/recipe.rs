//! The automatic recipe on the page: the choice between it and the manual settings, and the
//! table of every candidate's cross-validated score with the winner marked.

use leptos::prelude::*;
use medtransfer_core::recipe::Search;
use medtransfer_core::run::Recipe;

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
