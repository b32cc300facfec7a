//! The classes: names, images (pick or drop), counts, thumbnails, rejected files.

use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::dom::{
    IMAGE_ACCEPT, dropped_entries, dropped_files, entry_files, files_of_input,
    folder_files_of_input,
};
use crate::state::images::AUGMENTED_VIEW_CHOICES;
use crate::state::{ClassEntry, ImageStatus, NoticeKind, use_project};

/// Thumbnails shown per class: drawing thousands would hold the page's thread for seconds.
const MAX_THUMBNAILS: usize = 48;

/// The classes section; a folder dropped anywhere on it becomes classes by its sub-folders.
#[component]
pub fn ClassesSection() -> impl IntoView {
    let project = use_project();
    let embed_rate = move || {
        let done = project.embedded_count.get();
        let started = project.embed_started.get()?;
        let seconds = (js_sys::Date::now() - started) / 1000.0;
        (done > 0).then(|| format!("{:.1} images/s", done as f64 / seconds.max(1e-3)))
    };
    let ready_total = move || project.ready_counts().iter().sum::<usize>();
    let progress_value = move || ready_total() as f64;
    let progress_max = move || (ready_total() + project.pending()).max(1) as f64;
    // `webkitdirectory` (pick a whole folder) is not in Leptos' attribute list: set it directly.
    let folder_input = NodeRef::<leptos::html::Input>::new();
    Effect::new(move || {
        if let Some(input) = folder_input.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    let on_folder_pick =
        move |event: leptos::ev::Event| project.add_folder_files(folder_files_of_input(&event));
    let on_folder_drop = move |event: web_sys::DragEvent| {
        event.prevent_default();
        let entries = dropped_entries(&event);
        spawn_local(async move {
            let (files, unreadable) = entry_files(entries).await;
            project.add_folder_files(files);
            if !unreadable.is_empty() {
                const SHOWN: usize = 10;
                let mut names: Vec<&str> = unreadable
                    .iter()
                    .take(SHOWN)
                    .map(|p| {
                        if p.is_empty() {
                            "(unnamed)"
                        } else {
                            p.as_str()
                        }
                    })
                    .collect();
                let more = format!("and {} more", unreadable.len().saturating_sub(SHOWN));
                if unreadable.len() > SHOWN {
                    names.push(&more);
                }
                project.tell(
                    NoticeKind::Error,
                    format!(
                        "The browser could not read {} dropped item(s), left out: {}",
                        unreadable.len(),
                        names.join(", ")
                    ),
                );
            }
        });
    };
    view! {
        <section
            aria-labelledby="classes-heading"
            on:dragover=|e: web_sys::DragEvent| e.prevent_default()
            on:drop=on_folder_drop
        >
            <h2 id="classes-heading">"1. Classes and images"</h2>
            <p>"Name each class and add its images: pick files or drop them on the class. Drop a data set's folder anywhere here and each of its sub-folders becomes a class."</p>
            <div class="classes">
                <For each=move || project.classes.get() key=|c| c.uid let:class>
                    <ClassCard class=class />
                </For>
            </div>
            <button data-testid="add-class" on:click=move |_| project.add_class()>"Add a class"</button>
            <label class="picker">
                "Add a folder (each sub-folder becomes a class) "
                <input
                    type="file"
                    multiple
                    node_ref=folder_input
                    data-testid="folder-files"
                    on:change=on_folder_pick
                />
            </label>
            <p role="status" data-testid="embed-status" data-pending=move || project.pending()>
                {move || {
                    let pending = project.pending();
                    let ready: usize = project.ready_counts().iter().sum();
                    if pending > 0 {
                        let rate = embed_rate().map(|r| format!(" ({r})")).unwrap_or_default();
                        format!("Computing embeddings: {ready} ready, {pending} to go{rate}")
                    } else if ready > 0 {
                        format!("All {ready} images are ready to train on.")
                    } else {
                        String::new()
                    }
                }}
            </p>
            <progress aria-label="Embeddings" value=progress_value max=progress_max></progress>
            <AugmentedViewsChoice />
        </section>
    }
}

/// The select's value as a view count.
fn chosen_views(event: &leptos::ev::Event) -> Option<u32> {
    event_target_value(event).parse().ok()
}

/// How many augmented views each image added gets, and how many images have some.
#[component]
fn AugmentedViewsChoice() -> impl IntoView {
    let project = use_project();
    let views = project.augmented_views;
    // (images with views, embedded images).
    let with_views = move || {
        let (mut with, mut all) = (0, 0);
        for class in project.classes.get() {
            class.images.with(|images| {
                for image in images.iter().filter(|i| i.status == ImageStatus::Ready) {
                    all += 1;
                    with += usize::from(image.views > 0);
                }
            });
        }
        (with, all)
    };
    view! {
        <label>
            "Augmented views per image "
            <select data-testid="augmented-views" on:change=move |e| {
                if let Some(n) = chosen_views(&e) {
                    views.set(n);
                }
            }>
                {AUGMENTED_VIEW_CHOICES.into_iter().map(|n| view! {
                    <option value=n.to_string() selected=move || views.get() == n>
                        {if n == 0 { "None".to_string() } else { n.to_string() }}
                    </option>
                }).collect_view()}
            </select>
            <small>"Each image embedded from now on (added, or still waiting) also gets this many randomly flipped, rotated, zoomed, shifted, brightened and contrasted copies, drawn with the seed of the training settings and embedded with it (one more forward pass each; the originals are not kept, so images already embedded keep what they have). The automatic recipe trains on them only when cross-validation says they help; the manual recipe trains on the training images' views."</small>
        </label>
        <p class="hint" data-testid="views-status">
            {move || match with_views() {
                (_, 0) => String::new(),
                (0, _) => "No image has augmented views.".to_string(),
                (w, all) => format!("{w} of {all} images have augmented views."),
            }}
        </p>
    }
}

/// Asks the user before a class with images goes (`window.confirm`); `true` to go ahead. An
/// empty class goes without asking: nothing is lost with it.
fn confirm_removal(class: ClassEntry) -> bool {
    let images = class.images.with_untracked(Vec::len);
    if images == 0 {
        return true;
    }
    let name = class.name.get_untracked();
    let question = format!(
        "Remove the class \u{201c}{name}\u{201d} and its {images} images? This cannot be undone; export the project first to keep a copy."
    );
    web_sys::window()
        .and_then(|w| w.confirm_with_message(&question).ok())
        .unwrap_or(false)
}

/// One class: its name, pickers, thumbnails and rejected files.
#[component]
fn ClassCard(class: ClassEntry) -> impl IntoView {
    let project = use_project();
    let input_id = format!("class-files-{}", class.key);
    let on_pick = move |event: leptos::ev::Event| {
        project.add_files(class, files_of_input(&event));
    };
    let on_drop = move |event: web_sys::DragEvent| {
        event.prevent_default();
        event.stop_propagation();
        project.add_files(class, dropped_files(&event));
    };
    let remove_class = move |_| {
        if confirm_removal(class) {
            project.remove_class(class);
        }
    };
    view! {
        <div
            class="class-card"
            data-testid="class-card"
            on:dragover=|e: web_sys::DragEvent| e.prevent_default()
            on:drop=on_drop
        >
            <label>
                "Class name "
                <input
                    type="text"
                    data-testid="class-name"
                    prop:value=move || class.name.get()
                    on:input=move |e| class.name.set(event_target_value(&e))
                />
            </label>
            <p>
                <span data-testid="class-count">{move || class.images.with(Vec::len)}</span>
                " images"
            </p>
            <label for=input_id.clone() class="picker">"Add images"</label>
            <input
                id=input_id
                type="file"
                multiple
                accept=IMAGE_ACCEPT
                data-testid="class-files"
                on:change=on_pick
            />
            <button
                data-testid="remove-class"
                on:click=remove_class
                disabled=move || project.classes.with(Vec::len) <= 2
                aria-label=move || format!("Remove class {}", class.name.get())
            >
                "Remove class"
            </button>
            <ul class="thumbs">
                <For each=move || class.images.with(|images| images.iter().take(MAX_THUMBNAILS).cloned().collect::<Vec<_>>()) key=|i| (i.id, i.status == ImageStatus::Ready) let:image>
                    <li class:pending=image.status == ImageStatus::Embedding>
                        {match image.thumb.clone() {
                            Some(url) => view! { <img src=url alt=image.name.clone() width="56" height="56" /> }.into_any(),
                            None => view! { <span class="placeholder" title=image.name.clone()>{image.name.clone()}</span> }.into_any(),
                        }}
                        <button
                            aria-label=format!("Remove {}", image.name)
                            on:click=move |_| project.remove_image(class, image.id)
                        >
                            "×"
                        </button>
                    </li>
                </For>
            </ul>
            <p class="more">
                {move || {
                    let n = class.images.with(Vec::len);
                    (n > MAX_THUMBNAILS).then(|| format!("and {} more", n - MAX_THUMBNAILS))
                }}
            </p>
            <ul class="rejected" data-testid="class-rejected">
                {move || {
                    class
                        .rejected
                        .get()
                        .into_iter()
                        .map(|(name, reason)| view! { <li class="error">{name} ": " {reason}</li> })
                        .collect_view()
                }}
            </ul>
        </div>
    }
}
