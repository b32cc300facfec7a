//! Writes a MedMNIST `.npz` out as PNG folders (`OUT/{train,val,test}/{class}/NNNN.png`) so
//! `medtransfer train/eval` can use it, e.g. for BreastMNIST:
//!
//! ```sh
//! cargo run -p medtransfer-cli --example medmnist_folders -- \
//!     ../shared/data/medmnist/breastmnist_28.npz /tmp/breastmnist malignant normal-benign
//! ```
//!
//! The trailing arguments name labels 0, 1, ... in order.

#[path = "../tests/common/npz.rs"]
mod npz;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: medmnist_folders NPZ OUT LABEL0_NAME LABEL1_NAME [...]");
        return std::process::ExitCode::FAILURE;
    }
    let names: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    match npz::npz_to_folders(args[0].as_ref(), args[1].as_ref(), &names) {
        Ok(written) => {
            for (split, n) in written {
                println!("{split}: {n} images");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
