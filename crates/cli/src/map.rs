//! `medtransfer map`: the embedding map of a labelled folder as CSV (core's
//! [`medtransfer_core::embedding_map`], PCA to two axes), each image with its class and the
//! data check's findings that name it, for plotting in any tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use medtransfer_core::embedding_map::pca_map;

use crate::backbone::BackboneArgs;
use crate::check::{CheckedFolder, check_folder};
use crate::evaluate::{EXIT_SOME_FILES_FAILED, fail, write_atomically};

/// `medtransfer map`'s arguments.
#[derive(Args)]
pub struct MapArgs {
    /// The labelled folder (one sub-folder per class).
    #[arg(long)]
    data: PathBuf,
    /// The CSV file to write (`-` for standard output).
    #[arg(long)]
    out: PathBuf,
    /// A regular expression whose first match in a file name is its patient id (as `check`'s).
    #[arg(long)]
    group_pattern: Option<String>,
    /// Seed of the data check's shortcut scores.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// The CSV: a header `path,class,pc1,pc2,flags`, then one row per usable image (`flags`:
/// the data check's findings naming it, `;`-separated, e.g. `near_duplicate;label_suspect`).
fn csv_bytes(checked: &CheckedFolder, points: &[[f32; 2]]) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["path", "class", "pc1", "pc2", "flags"])?;
    let flags = checked.report.flags();
    for (i, (path, point)) in checked.paths.iter().zip(points).enumerate() {
        let class = checked
            .set
            .labels
            .get(i)
            .and_then(|&l| checked.dataset.classes.get(l))
            .map_or("", String::as_str);
        writer.write_record([
            path.display().to_string().as_str(),
            class,
            &point[0].to_string(),
            &point[1].to_string(),
            &flags.get(i).map(|f| f.join(";")).unwrap_or_default(),
        ])?;
    }
    writer.into_inner().map_err(|e| e.into_error().into())
}

/// `medtransfer map`: writes the CSV and says on stderr how much variance the axes hold and
/// which files were left out. Exit status 1 when the folder, the weights or the output cannot
/// be used, 2 when some file could not be mapped (the others are).
pub fn map(args: &MapArgs) -> ExitCode {
    let checked = match check_folder(
        &args.data,
        args.group_pattern.as_deref(),
        args.seed,
        &args.backbone,
        false,
    ) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let map = match pca_map(&checked.set.embeddings) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let bytes = match csv_bytes(&checked, &map.points) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot write the CSV: {e}")),
    };
    let written = if args.out.as_os_str() == "-" {
        use std::io::Write;
        std::io::stdout().write_all(&bytes)
    } else {
        write_atomically(&args.out, &bytes)
    };
    if let Err(e) = written {
        return fail(format!("cannot write {}: {e}", args.out.display()));
    }
    let [first, second] = map.explained_variance_ratio;
    eprintln!(
        "{} images mapped: the first axis holds {:.1}% of the embeddings' variance, the second {:.1}%",
        map.points.len(),
        first * 100.0,
        second * 100.0
    );
    for skipped in &checked.skipped {
        eprintln!(
            "skipped {}: {}",
            skipped["path"].as_str().unwrap_or("?"),
            skipped["error"].as_str().unwrap_or("?")
        );
    }
    if checked.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FILES_FAILED)
    }
}
