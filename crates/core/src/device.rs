//! Choosing where tensors run: the user's GPU through wgpu (WebGPU in the browser), else Burn's
//! pure-Rust `flex` CPU backend. Selection is asynchronous because WebGPU adapters and devices
//! can only be requested asynchronously in a browser.

use burn::tensor::Device;
use burn::tensor::wgpu::wgpu;

/// Which kind of compute a [`ComputeDevice`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// A GPU adapter through wgpu: WebGPU in a browser, Vulkan/Metal/DX12 natively.
    Gpu,
    /// Burn's `flex` backend on the CPU; works everywhere, including wasm.
    Cpu,
}

/// Whether [`select_device`] should try the GPU first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuPreference {
    /// Try the GPU, fall back to the CPU on any failure. `adapter_label` names the adapter when
    /// the platform knows it better than wgpu does (browsers hide wgpu's adapter name).
    PreferGpu {
        /// A description of the adapter from the platform, if any.
        adapter_label: Option<String>,
    },
    /// Use the CPU; the string says why (shown to the user).
    CpuOnly(String),
}

/// A ready Burn device together with what a person needs to know about it.
#[derive(Clone, Debug)]
pub struct ComputeDevice {
    /// The Burn device tensors are created on.
    pub device: Device,
    /// GPU or CPU.
    pub kind: BackendKind,
    /// The graphics API in use, e.g. `WebGPU` or `Vulkan`; `None` on the CPU.
    pub api: Option<String>,
    /// The adapter's name as the driver reports it, or a description of the CPU backend.
    pub adapter_name: String,
    /// Why the GPU is not used, when `kind` is [`BackendKind::Cpu`].
    pub fallback_reason: Option<String>,
    /// The GPU adapter is a software renderer on the CPU (llvmpipe, lavapipe, SwiftShader as
    /// wgpu reports it natively); there `flex` is usually faster.
    pub software_adapter: bool,
}

impl ComputeDevice {
    /// The CPU (`flex`) device, with the reason the GPU is not in use.
    pub fn cpu(reason: impl Into<String>) -> Self {
        Self {
            device: Device::flex(),
            kind: BackendKind::Cpu,
            api: None,
            adapter_name: "flex (pure-Rust CPU backend)".to_string(),
            fallback_reason: Some(reason.into()),
            software_adapter: false,
        }
    }

    /// One line for the user: `WebGPU · <adapter>` or `CPU · flex … (reason)`.
    pub fn describe(&self) -> String {
        match (self.kind, &self.api, &self.fallback_reason) {
            (BackendKind::Gpu, api, _) => format!(
                "{} · {}",
                api.as_deref().unwrap_or("GPU"),
                self.adapter_name
            ),
            (BackendKind::Cpu, _, Some(reason)) => {
                format!("CPU · {} — {}", self.adapter_name, reason)
            }
            (BackendKind::Cpu, _, None) => format!("CPU · {}", self.adapter_name),
        }
    }
}

/// Human name of a wgpu graphics API; the browser's is called WebGPU.
fn api_name(backend: wgpu::Backend) -> String {
    match backend {
        wgpu::Backend::BrowserWebGpu => "WebGPU".to_string(),
        wgpu::Backend::Vulkan => "Vulkan".to_string(),
        wgpu::Backend::Metal => "Metal".to_string(),
        wgpu::Backend::Dx12 => "DirectX 12".to_string(),
        wgpu::Backend::Gl => "OpenGL".to_string(),
        other => format!("{other:?}"),
    }
}

/// The best name for an adapter: wgpu's, else the platform's label, else its driver and type.
fn adapter_name(info: &wgpu::AdapterInfo, platform_label: Option<String>) -> String {
    let label = platform_label.filter(|l| !l.trim().is_empty());
    if !info.name.trim().is_empty() {
        info.name.clone()
    } else if let Some(label) = label {
        label
    } else if !info.driver.trim().is_empty() {
        format!("{} ({:?})", info.driver, info.device_type)
    } else {
        format!("unnamed adapter ({:?})", info.device_type)
    }
}

/// Initialises the GPU when asked and possible, else the CPU, and never fails: every GPU error
/// becomes the CPU device's `fallback_reason`.
///
/// Call once per process (per page): Burn's wgpu runtime can be initialised only once.
pub async fn select_device(preference: GpuPreference) -> ComputeDevice {
    match preference {
        GpuPreference::CpuOnly(reason) => ComputeDevice::cpu(reason),
        GpuPreference::PreferGpu { adapter_label } => {
            match Device::wgpu_options().init_with_setup_async().await {
                Ok((device, setup)) => {
                    let info = setup.adapter.get_info();
                    ComputeDevice {
                        device,
                        kind: BackendKind::Gpu,
                        api: Some(api_name(setup.backend)),
                        adapter_name: adapter_name(&info, adapter_label),
                        fallback_reason: None,
                        software_adapter: info.device_type == wgpu::DeviceType::Cpu,
                    }
                }
                Err(error) => ComputeDevice::cpu(format!("GPU initialisation failed: {error}")),
            }
        }
    }
}
