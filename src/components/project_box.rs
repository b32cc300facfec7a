//! The project as a whole: restore and save notices, storage use, export and import, the model
//! file.

use leptos::prelude::*;
use leptos::task::spawn_local;
use medtransfer_core::model_file::MODEL_FILE_EXTENSION;
use medtransfer_core::project_file::PROJECT_FILE_EXTENSION;

use crate::dom::{download, files_of_input, read_file};
use crate::state::{NoticeKind, Ownership, use_project};

fn megabytes(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

/// The project section.
#[component]
pub fn ProjectSection() -> impl IntoView {
    let project = use_project();
    let busy = RwSignal::new(false);
    let export_project = move |_| {
        busy.set(true);
        spawn_local(async move {
            let outcome = project.export().await.and_then(|(bytes, left_out)| {
                download(
                    &bytes,
                    &format!("medtransfer-project.{PROJECT_FILE_EXTENSION}"),
                )?;
                Ok(left_out)
            });
            match outcome {
                Ok(0) => project.tell(NoticeKind::Info, "Project exported."),
                Ok(n) => project.tell(
                    NoticeKind::Info,
                    format!("Project exported; {n} images still computing their embeddings were left out."),
                ),
                Err(error) => project.tell(
                    NoticeKind::Error,
                    format!("The project could not be exported: {error}"),
                ),
            }
            busy.set(false);
        });
    };
    let export_model = move |_| {
        let outcome = match project.model_file.get_value() {
            Some(bytes) => download(&bytes, &format!("medtransfer-model.{MODEL_FILE_EXTENSION}")),
            None => Err("train a model first".to_string()),
        };
        if let Err(error) = outcome {
            project.tell(
                NoticeKind::Error,
                format!("The model could not be saved: {error}"),
            );
        }
    };
    let on_import = move |event: leptos::ev::Event| {
        let Some(file) = files_of_input(&event).into_iter().next() else {
            return;
        };
        busy.set(true);
        spawn_local(async move {
            let name = file.name();
            let bytes = read_file(&file).await;
            let outcome = if bytes.is_empty() {
                Err("the file is empty or could not be read".to_string())
            } else {
                project.import(bytes).await
            };
            match outcome {
                Ok(n) => project.tell(NoticeKind::Info, format!("Imported {name}: {n} images.")),
                Err(error) => project.tell(
                    NoticeKind::Error,
                    format!("{name} was not imported: {error}. Your current project is unchanged."),
                ),
            }
            busy.set(false);
        });
    };
    let retry = move |_| {
        busy.set(true);
        spawn_local(async move {
            project.retry_saving().await;
            busy.set(false);
        });
    };
    let storage_line = move || {
        project.storage_use.get().map(|((used, quota), persistent)| {
            let kept = match persistent {
                Some(true) => "the browser keeps it even when space runs low",
                Some(false) => "the browser may clear it when space runs low: export the project to be safe",
                None => "export the project to be safe",
            };
            format!(
                "Storage in use: {} of {} allowed for this site; {kept}.",
                megabytes(used),
                megabytes(quota)
            )
        })
    };
    view! {
        <section aria-labelledby="project-heading" data-testid="project" data-restored=move || project.restored.get().to_string()>
            <h2 id="project-heading">"Project"</h2>
            <p>"Your classes, images (as thumbnails and embeddings), settings and model are saved in this browser as you work, and come back when you reopen the page."</p>
            <p role="status" data-testid="project-notice"
                data-kind=move || project.notice.get().map(|(k, _)| if k == NoticeKind::Error { "error" } else { "info" })
                class:error=move || project.notice.get().is_some_and(|(k, _)| k == NoticeKind::Error)>
                {move || project.notice.get().map(|(_, m)| m)}
            </p>
            <p data-testid="storage-use" data-persistent=move || project.storage_use.get().and_then(|(_, p)| p).map(|p| p.to_string())>
                {storage_line}
            </p>
            <div class="project-actions">
                <Show when=move || project.ownership.get() == Ownership::Elsewhere>
                    <button data-testid="take-over" on:click=move |_| spawn_local(project.take_over())>
                        "Use it here"
                    </button>
                </Show>
                <Show when=move || !project.unsaved.with(Vec::is_empty)>
                    <button data-testid="retry-saving" disabled=move || busy.get() on:click=retry>
                        "Save again"
                    </button>
                </Show>
                <button data-testid="export-project" disabled=move || busy.get() || !project.restored.get() on:click=export_project>
                    "Export project (.mtproject)"
                </button>
                <label class="picker">
                    "Import a project "
                    <input type="file" accept=format!(".{PROJECT_FILE_EXTENSION}") data-testid="import-project"
                        disabled=move || busy.get() || !project.restored.get() on:change=on_import />
                </label>
                <button data-testid="export-model" disabled=move || !project.has_model.get() on:click=export_model>
                    "Download the model (.mtmodel, for the medtransfer CLI)"
                </button>
            </div>
        </section>
    }
}
