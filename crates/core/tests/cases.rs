//! Awkward real-world files (`tests/fixtures/cases/`, copies of `../shared/cases/`): every file
//! of each case must give the quadrant means of its `expected.json`, through the one shared
//! decoder and the network's own resize, as the case's `check_output.py` measures them.

use std::path::{Path, PathBuf};

use image::{GenericImageView, RgbImage};
use medtransfer_core::preprocess::{
    decode_image, normalize_channel, preprocess_image, resize_for_network,
};
use medtransfer_core::thumbnail::thumbnail_of;
use serde_json::Value;

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/cases")
        .join(case)
}

/// Mean of each channel over `[x0, y0, x1, y1)` of a 224×224 image.
fn region_mean(image: &RgbImage, region: &[u32; 4]) -> [f64; 3] {
    let [x0, y0, x1, y1] = *region;
    let mut sum = [0.0f64; 3];
    for y in y0..y1 {
        for x in x0..x1 {
            let p = image.get_pixel(x, y).0;
            for c in 0..3 {
                sum[c] += f64::from(p[c]);
            }
        }
    }
    let n = f64::from((x1 - x0) * (y1 - y0));
    sum.map(|s| s / n)
}

fn region(value: &Value) -> [u32; 4] {
    let v: Vec<u32> = value
        .as_array()
        .expect("region")
        .iter()
        .map(|x| x.as_u64().expect("coordinate") as u32)
        .collect();
    [v[0], v[1], v[2], v[3]]
}

/// Checks every file of `case` against its expected quadrant means; returns the files checked.
fn check_case(case: &str, extension: &str) -> Vec<String> {
    let dir = case_dir(case);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected.json"))
            .expect("JSON");
    let regions = &expected["regions_224"];
    let mut checked = Vec::new();
    let mut wrong = Vec::new();
    for (name, spec) in expected["files"].as_object().expect("files") {
        let bytes = std::fs::read(dir.join(format!("{name}.{extension}"))).expect("case file");
        let image = match decode_image(&bytes) {
            Ok(image) => image,
            Err(e) => {
                wrong.push(format!("{name}: not decoded: {e}"));
                continue;
            }
        };
        let input = resize_for_network(&image).expect("resize");
        // The network's own input is the same picture, normalised.
        let network = preprocess_image(&bytes).expect("preprocess");
        assert_eq!(network[0], normalize_channel(input.get_pixel(0, 0).0[0]));
        let tolerance = spec["tolerance"].as_f64().expect("tolerance");
        for quadrant in ["TL", "TR", "BL", "BR"] {
            let want: Vec<f64> = spec["quadrant_means"][quadrant]
                .as_array()
                .expect("means")
                .iter()
                .map(|v| v.as_f64().expect("mean"))
                .collect();
            let got = region_mean(&input, &region(&regions[quadrant]));
            let ok = want
                .iter()
                .zip(got)
                .all(|(w, g)| (w - g).abs() <= tolerance);
            if !ok {
                wrong.push(format!(
                    "{name} {quadrant}: got {:?}, want {want:?} ±{tolerance}",
                    &got[..want.len()]
                ));
            }
        }
        checked.push(name.clone());
    }
    assert!(wrong.is_empty(), "{case}:\n{}", wrong.join("\n"));
    checked
}

#[test]
fn exif_orientation_is_applied_before_the_resize() {
    let checked = check_case("12-exif-orientation-jpeg", "jpg");
    assert_eq!(checked.len(), 5);
    // Upright, every file is 256 wide and 192 high, whatever its stored layout (orientations
    // 5, 6 and 8 store it as 192 × 256), and its thumbnail is upright too.
    for name in checked {
        let bytes = std::fs::read(case_dir("12-exif-orientation-jpeg").join(format!("{name}.jpg")))
            .expect("case file");
        let image = decode_image(&bytes).expect("decodes");
        assert_eq!(image.dimensions(), (256, 192), "{name}");
        let thumbnail = image::load_from_memory(&thumbnail_of(&image).expect("thumbnail"))
            .expect("thumbnail decodes");
        assert!(thumbnail.width() > thumbnail.height(), "{name}");
        // Top-left of the thumbnail is the red quadrant.
        let p = thumbnail.to_rgb8().get_pixel(4, 4).0;
        assert!(p[0] > 180 && p[1] < 70 && p[2] < 70, "{name}: {p:?}");
    }
}

#[test]
fn tiff_layouts_decode_to_the_right_values() {
    // Including the tiled LZW file whose edge tiles hang over the image (tiff 0.11.3 refused
    // it as truncated: vendor/tiff/PATCHED.md).
    let checked = check_case("14-tiff-endianness-predictor-planar", "tif");
    assert_eq!(checked.len(), 5);
}

#[test]
fn every_image_of_the_dropped_folder_decodes_to_its_quadrants() {
    let dir = case_dir("16-folder-junk-layout");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).expect("expected.json"))
            .expect("JSON");
    let regions = [
        [16, 16, 96, 96],
        [128, 16, 208, 96],
        [16, 128, 96, 208],
        [128, 128, 208, 208],
    ];
    let mut checked = 0;
    for (class, files) in expected["must_decode"].as_object().expect("must_decode") {
        for file in files.as_array().expect("files") {
            let name = file.as_str().expect("name");
            let path = dir.join("dataset").join(class).join(name);
            let bytes = std::fs::read(&path).expect("case file");
            let image = decode_image(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(image.dimensions(), (64, 48), "{name}");
            let input = resize_for_network(&image).expect("resize");
            // 8-bit files as stored; the two DICOMs, without a window, get the percentile one.
            let dicom = name.ends_with(".DCM") || name == "IM000006";
            let want = if dicom {
                [255.0, 0.0, 131.0, 53.0]
            } else {
                [230.0, 20.0, 128.0, 64.0]
            };
            for (region, want) in regions.iter().zip(want) {
                let got = region_mean(&input, region)[0];
                assert!((got - want).abs() <= 6.0, "{class}/{name}: {got} vs {want}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
}
