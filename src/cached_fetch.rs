//! Downloads a file from the page's own origin with progress, keeping a copy in the browser's
//! Cache API so that a second visit does not download it again.

use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStreamDefaultReader, Response};

/// Where the bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchSource {
    /// Downloaded from the page's origin (and stored in the cache when possible).
    Network,
    /// Read from the browser's Cache API: nothing was downloaded.
    Cache,
}

/// Download progress: bytes so far and the total when the server said it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes received so far.
    pub loaded: u64,
    /// `Content-Length`, when known.
    pub total: Option<u64>,
}

fn js_error(context: &str, error: JsValue) -> String {
    let detail = error
        .as_string()
        .or_else(|| {
            Reflect::get(&error, &JsValue::from_str("message"))
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{error:?}"));
    format!("{context}: {detail}")
}

/// Opens the named cache, or `None` where the Cache API is unavailable (then we just download).
async fn open_cache(cache_name: &str) -> Option<Cache> {
    let caches = web_sys::window()?.caches().ok()?;
    JsFuture::from(caches.open(cache_name))
        .await
        .ok()?
        .dyn_into::<Cache>()
        .ok()
}

/// The bytes of `url`, from `cache_name` when there, else downloaded and cached. `on_progress`
/// is called as bytes arrive.
pub async fn fetch_cached(
    url: &str,
    cache_name: &str,
    on_progress: impl Fn(Progress),
) -> Result<(Vec<u8>, FetchSource), String> {
    let cache = open_cache(cache_name).await;
    if let Some(cache) = &cache
        && let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await
        && let Ok(response) = hit.dyn_into::<Response>()
    {
        return Ok((
            read_body(&response, &on_progress).await?,
            FetchSource::Cache,
        ));
    }
    let window = web_sys::window().ok_or("no browser window")?;
    let response: Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| js_error(&format!("downloading {url} failed"), e))?
        .dyn_into()
        .map_err(|_| format!("downloading {url} gave no response"))?;
    if !response.ok() {
        return Err(format!(
            "downloading {url} failed: HTTP {}",
            response.status()
        ));
    }
    // Store a copy while reading the original; a failed store only costs a later download.
    let stored = cache.as_ref().and_then(|cache| {
        let copy = response.clone().ok()?;
        Some(JsFuture::from(cache.put_with_str(url, &copy)))
    });
    let bytes = read_body(&response, &on_progress).await?;
    if let Some(stored) = stored
        && let Err(error) = stored.await
    {
        web_sys::console::warn_1(&JsValue::from_str(&js_error(
            &format!("could not cache {url}"),
            error,
        )));
    }
    Ok((bytes, FetchSource::Network))
}

/// Forgets a cached copy (e.g. one that turned out damaged), so the next fetch downloads it.
pub async fn evict(url: &str, cache_name: &str) {
    if let Some(cache) = open_cache(cache_name).await {
        let _ = JsFuture::from(cache.delete_with_str(url)).await;
    }
}

/// Reads a response body chunk by chunk, reporting progress.
async fn read_body(
    response: &Response,
    on_progress: &impl Fn(Progress),
) -> Result<Vec<u8>, String> {
    let total = response
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|length| length.parse::<u64>().ok());
    let body = response.body().ok_or("the response has no body")?;
    let reader: ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| "the response body cannot be read")?;
    let mut bytes = Vec::with_capacity(total.and_then(|t| usize::try_from(t).ok()).unwrap_or(0));
    on_progress(Progress { loaded: 0, total });
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| js_error("reading the download failed", e))?;
        let done = Reflect::get(&chunk, &JsValue::from_str("done"))
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        let value = Reflect::get(&chunk, &JsValue::from_str("value"))
            .map_err(|e| js_error("reading the download failed", e))?;
        let array: Uint8Array = value
            .dyn_into()
            .map_err(|_| "the download gave something other than bytes")?;
        bytes.extend_from_slice(&array.to_vec());
        on_progress(Progress {
            loaded: bytes.len() as u64,
            total,
        });
    }
    Ok(bytes)
}
