//! Asks the browser, before Burn does, whether WebGPU can give an adapter, so that the CPU
//! fallback can say exactly why the GPU is not used.

use js_sys::{Function, Promise, Reflect};
use medtransfer_core::GpuPreference;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// `PreferGpu` when `navigator.gpu.requestAdapter()` yields an adapter, else `CpuOnly(reason)`.
pub async fn probe_webgpu() -> GpuPreference {
    match request_adapter().await {
        Ok(adapter) => GpuPreference::PreferGpu {
            adapter_label: adapter_label(&adapter),
        },
        Err(reason) => GpuPreference::CpuOnly(reason),
    }
}

/// "vendor architecture description" from `GPUAdapter.info`, the only name a browser gives.
fn adapter_label(adapter: &JsValue) -> Option<String> {
    let info = Reflect::get(adapter, &JsValue::from_str("info")).ok()?;
    let parts: Vec<String> = ["vendor", "architecture", "device", "description"]
        .iter()
        .filter_map(|key| {
            Reflect::get(&info, &JsValue::from_str(key))
                .ok()?
                .as_string()
        })
        .filter(|part| !part.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

async fn request_adapter() -> Result<JsValue, String> {
    // The global scope's navigator: works in the page and in a Web Worker alike.
    let navigator = Reflect::get(&js_sys::global(), &JsValue::from_str("navigator"))
        .map_err(|_| "navigator could not be read")?;
    let gpu = Reflect::get(&navigator, &JsValue::from_str("gpu"))
        .map_err(|_| "navigator.gpu could not be read")?;
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser does not offer WebGPU".to_string());
    }
    let request = Reflect::get(&gpu, &JsValue::from_str("requestAdapter"))
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
        .ok_or("navigator.gpu.requestAdapter is missing")?;
    let promise = request
        .call0(&gpu)
        .ok()
        .and_then(|p| p.dyn_into::<Promise>().ok())
        .ok_or("navigator.gpu.requestAdapter() failed")?;
    let adapter = JsFuture::from(promise)
        .await
        .map_err(|e| format!("requesting a WebGPU adapter failed: {e:?}"))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("WebGPU is present but offers no adapter".to_string());
    }
    Ok(adapter)
}
