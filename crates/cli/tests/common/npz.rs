//! Turning a MedMNIST `.npz` (a zip of `.npy` arrays: `train_images` `[N, H, W]` uint8,
//! `train_labels` `[N]` or `[N, 1]` uint8, same for `val_` and `test_`) into folders of PNG
//! files, one sub-folder per label, so the CLI can train on it like any image folder.
//! Shared by the real-data tests and the `medmnist_folders` example.

use std::io::Read;
use std::path::Path;

/// A uint8 array read from a `.npy` file.
pub struct NpyU8 {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, C order.
    pub data: Vec<u8>,
}

/// Parses a version 1/2 `.npy` holding `|u1` (uint8) data in C order.
pub fn parse_npy_u8(bytes: &[u8]) -> Result<NpyU8, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .map(String::from_utf8_lossy)
        .ok_or("truncated .npy header")?;
    if !header.contains("'descr': '|u1'") || header.contains("'fortran_order': True") {
        return Err(format!("only C-order uint8 arrays are supported: {header}"));
    }
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("no shape in the .npy header")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| format!("bad shape {shape_text}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let data = bytes[start + header_len..].to_vec();
    if data.len() != shape.iter().product::<usize>() {
        return Err("the .npy data does not match its shape".into());
    }
    Ok(NpyU8 { shape, data })
}

fn read_member(archive: &mut zip::ZipArchive<std::fs::File>, name: &str) -> Result<NpyU8, String> {
    let mut file = archive.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("{name}: {e}"))?;
    parse_npy_u8(&bytes).map_err(|e| format!("{name}: {e}"))
}

/// Writes `OUT/{train,val,test}/{label_names[label]}/{index}.png` from a MedMNIST `.npz`
/// (greyscale images). Returns the number of images written per split.
pub fn npz_to_folders(
    npz: &Path,
    out: &Path,
    label_names: &[&str],
) -> Result<Vec<(String, usize)>, String> {
    let file = std::fs::File::open(npz).map_err(|e| format!("{}: {e}", npz.display()))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| format!("{}: {e}", npz.display()))?;
    let mut written = Vec::new();
    for split in ["train", "val", "test"] {
        let images = read_member(&mut archive, &format!("{split}_images.npy"))?;
        let labels = read_member(&mut archive, &format!("{split}_labels.npy"))?;
        let [n, h, w] = images.shape[..] else {
            return Err(format!(
                "{split}_images is not [N, H, W]: {:?}",
                images.shape
            ));
        };
        if labels.data.len() != n {
            return Err(format!(
                "{split}: {n} images but {} labels",
                labels.data.len()
            ));
        }
        for (i, &label) in labels.data.iter().enumerate() {
            let name = label_names
                .get(usize::from(label))
                .ok_or(format!("{split}: label {label} has no name"))?;
            let dir = out.join(split).join(name);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let pixels = images.data[i * h * w..(i + 1) * h * w].to_vec();
            let image = image::GrayImage::from_raw(w as u32, h as u32, pixels)
                .ok_or("image size mismatch")?;
            image
                .save(dir.join(format!("{i:04}.png")))
                .map_err(|e| e.to_string())?;
        }
        written.push((split.to_string(), n));
    }
    Ok(written)
}
