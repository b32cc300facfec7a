//! The page's few direct uses of the DOM and browser APIs: reading picked and dropped files,
//! object URLs of thumbnails, downloads. Nothing here knows the project.

use js_sys::{Array, Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// File types the image pickers offer (the core sniffs the content whatever the name).
pub const IMAGE_ACCEPT: &str =
    "image/png,image/jpeg,image/tiff,application/dicom,.dcm,.dicom,.png,.jpg,.jpeg,.tif,.tiff";

/// Whether this global scope is a page (not a worker).
pub fn is_page() -> bool {
    web_sys::window().is_some_and(|w| w.document().is_some())
}

/// Logs how long a step of restoring or importing took (the console is the place to look when
/// a large project is slow). `started` is `Date.now()` in milliseconds.
pub fn log_step(step: &str, started: f64) {
    web_sys::console::info_1(&format!("{step}: {:.0} ms", js_sys::Date::now() - started).into());
}

/// A picked file's bytes; empty when the browser cannot read it (the worker then reports the
/// file as unreadable).
pub async fn read_file(file: &web_sys::File) -> Vec<u8> {
    match JsFuture::from(file.array_buffer()).await {
        Ok(buffer) => Uint8Array::new(&buffer).to_vec(),
        Err(_) => Vec::new(),
    }
}

/// An object URL of `bytes` as a blob of type `mime`.
fn blob_url(bytes: &[u8], mime: &str) -> Result<String, JsValue> {
    let parts = Array::of1(&Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)?;
    web_sys::Url::create_object_url_with_blob(&blob)
}

/// A `data:` URL of PNG bytes (small images made in the page, e.g. a heat map).
pub fn png_data_url(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// An object URL of JPEG bytes (a thumbnail), `None` for no bytes.
pub fn jpeg_url(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty())
        .then(|| blob_url(bytes, "image/jpeg").ok())
        .flatten()
}

/// An object URL of a picked file (shown until the worker's thumbnail replaces it).
pub fn file_url(file: &web_sys::File) -> String {
    web_sys::Url::create_object_url_with_blob(file).unwrap_or_default()
}

/// Frees an object URL made by [`jpeg_url`] or [`file_url`].
pub fn revoke_url(url: &str) {
    let _ = web_sys::Url::revoke_object_url(url);
}

/// Offers bytes to the user as a downloaded file named `file_name`.
///
/// # Errors
/// The browser refused to make the blob, its URL or the link.
pub fn download(bytes: &[u8], file_name: &str) -> Result<(), String> {
    let fail = |e: JsValue| format!("the download could not start: {e:?}");
    let url = blob_url(bytes, "application/octet-stream").map_err(fail)?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let anchor: web_sys::HtmlAnchorElement =
        document.create_element("a").map_err(fail)?.unchecked_into();
    anchor.set_href(&url);
    anchor.set_download(file_name);
    anchor.click();
    // The browser has taken the URL once the click is handled; free it a little later.
    let revoke = Closure::once_into_js(move || revoke_url(&url));
    if let Some(window) = web_sys::window() {
        let _ = window
            .set_timeout_with_callback_and_timeout_and_arguments_0(revoke.unchecked_ref(), 60_000);
    }
    Ok(())
}

/// The files of an `<input type=file>` change event; the input is cleared so that picking the
/// same files again fires `change` again.
pub fn files_of_input(event: &web_sys::Event) -> Vec<web_sys::File> {
    event
        .target()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
        .and_then(|input| {
            let files = input.files()?;
            let list = (0..files.length()).filter_map(|i| files.get(i)).collect();
            input.set_value("");
            Some(list)
        })
        .unwrap_or_default()
}

/// The files of a picked folder (`webkitdirectory`), each with its path from the folder's own
/// name (`dataset/normal/a.png`).
pub fn folder_files_of_input(event: &web_sys::Event) -> Vec<(String, web_sys::File)> {
    files_of_input(event)
        .into_iter()
        .map(|f| {
            let path = Reflect::get(&f, &"webkitRelativePath".into())
                .ok()
                .and_then(|p| p.as_string())
                .unwrap_or_default();
            (path, f)
        })
        .collect()
}

/// The files dropped on an element (not folders).
pub fn dropped_files(event: &web_sys::DragEvent) -> Vec<web_sys::File> {
    event
        .data_transfer()
        .and_then(|t| t.files())
        .map(|f| (0..f.length()).filter_map(|i| f.get(i)).collect())
        .unwrap_or_default()
}

/// The `FileSystemEntry` of each dropped item. Must be called synchronously, inside the drop
/// event (the browser empties the list afterwards).
pub fn dropped_entries(event: &web_sys::DragEvent) -> Vec<JsValue> {
    let Some(items) = event.data_transfer().map(|t| t.items()) else {
        return Vec::new();
    };
    (0..items.length())
        .filter_map(|i| items.get(i))
        .filter_map(|item| {
            Reflect::get(&item, &"webkitGetAsEntry".into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .and_then(|f| f.call0(&item).ok())
                .filter(|e| !e.is_null() && !e.is_undefined())
        })
        .collect()
}

/// Calls `object.method(resolve, reject)` and awaits the callback's value.
async fn callback_promise(object: &JsValue, method: &str) -> Result<JsValue, JsValue> {
    let function = Reflect::get(object, &method.into())?.dyn_into::<js_sys::Function>()?;
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let _ = function.call2(object, &resolve, &reject);
    });
    JsFuture::from(promise).await
}

/// Every file under dropped `FileSystemEntry`s (from [`dropped_entries`]), with its path
/// (`root/sub/file`), and the paths of the entries the browser could not read (a folder it may
/// not list, a file it may not open), so that none is left out unsaid.
pub async fn entry_files(entries: Vec<JsValue>) -> (Vec<(String, web_sys::File)>, Vec<String>) {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let mut stack = entries;
    while let Some(entry) = stack.pop() {
        let path = Reflect::get(&entry, &"fullPath".into())
            .ok()
            .and_then(|p| p.as_string())
            .unwrap_or_default();
        let is_dir = Reflect::get(&entry, &"isDirectory".into())
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        if is_dir {
            let Ok(reader) = Reflect::get(&entry, &"createReader".into())
                .and_then(|f| f.dyn_into::<js_sys::Function>())
                .and_then(|f| f.call0(&entry))
            else {
                unreadable.push(path);
                continue;
            };
            // readEntries returns a batch at a time until it returns an empty one.
            loop {
                match callback_promise(&reader, "readEntries").await {
                    Ok(batch) => {
                        let batch = Array::from(&batch);
                        if batch.length() == 0 {
                            break;
                        }
                        stack.extend(batch.iter());
                    }
                    Err(_) => {
                        unreadable.push(path);
                        break;
                    }
                }
            }
        } else {
            match callback_promise(&entry, "file")
                .await
                .and_then(|file| file.dyn_into::<web_sys::File>())
            {
                Ok(file) => out.push((path, file)),
                Err(_) => unreadable.push(path),
            }
        }
    }
    (out, unreadable)
}
