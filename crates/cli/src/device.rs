//! `medtransfer device`, and the backend selection every command shares.

use std::process::ExitCode;

use medtransfer_core::smoke::run_smoke;
use medtransfer_core::{BackendKind, ComputeDevice, GpuPreference, select_device};

use crate::Backend;

/// Initialises the compute device the user asked for.
pub fn open(backend: Backend) -> ComputeDevice {
    let preference = match backend {
        Backend::Cpu => GpuPreference::CpuOnly("--backend cpu was given".to_string()),
        Backend::Auto | Backend::Gpu => GpuPreference::PreferGpu {
            adapter_label: None,
        },
    };
    let device = pollster::block_on(select_device(preference));
    match backend {
        Backend::Auto if device.kind == BackendKind::Gpu && device.software_adapter => {
            ComputeDevice::cpu(format!(
                "the only GPU adapter, {}, is a software renderer; flex is faster on the CPU \
                 (--backend gpu uses it anyway)",
                device.adapter_name
            ))
        }
        _ => device,
    }
}

/// `medtransfer device`: selects a backend, runs the smoke computation, reports both.
pub fn run(backend: Backend, json: bool) -> ExitCode {
    let device = open(backend);
    let smoke = pollster::block_on(run_smoke(&device.device));
    if json {
        let value = serde_json::json!({
            "backend": format!("{:?}", device.kind),
            "api": device.api,
            "adapter": device.adapter_name,
            "fallback_reason": device.fallback_reason,
            "smoke_product": smoke.as_ref().ok().map(|r| r.product.clone()),
            "error": smoke.as_ref().err().map(|e| e.to_string()),
        });
        println!("{value}");
    } else {
        println!("backend: {}", device.describe());
        match &smoke {
            Ok(result) => println!("self-check passed: {:?}", result.product),
            Err(error) => println!("self-check failed: {error}"),
        }
    }
    if smoke.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
