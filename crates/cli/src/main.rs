//! `medtransfer`: the MedTransfer core on the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medtransfer_core::smoke::run_smoke;
use medtransfer_core::{GpuPreference, select_device};

#[derive(Parser)]
#[command(
    name = "medtransfer",
    version,
    about = "Transfer learning for medical images, locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show which compute backend would be used and check that it computes correctly.
    Device {
        /// Use the CPU (`flex`) backend even when a GPU is available.
        #[arg(long)]
        cpu: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Device { cpu, json } => device(cpu, json),
    }
}

/// `medtransfer device`: selects a backend, runs the smoke computation, reports both.
fn device(cpu: bool, json: bool) -> ExitCode {
    let preference = if cpu {
        GpuPreference::CpuOnly("--cpu was given".to_string())
    } else {
        GpuPreference::PreferGpu {
            adapter_label: None,
        }
    };
    let device = pollster::block_on(select_device(preference));
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
