//! Real DICOM files (pydicom's and pydicom-data's test files: CT, MR, US, CR; uncompressed,
//! big endian, implicit VR, deflated, RLE, JPEG; greyscale, RGB, YBR, palette) through
//! `formats::decode_8bit`, checked
//! against golden renderings from an independent numpy + pydicom implementation
//! (`tests/fixtures/dicom/`, made by `tools/fixtures/regenerate-dicom.sh`), against each other
//! (the same image in several encodings), and for clear refusals.
//!
//! `scripts/test.sh` fetches the files (`ensure_dicom_samples` in `scripts/setup.sh`) and
//! points `MEDTRANSFER_DICOM_SAMPLES` at them; without them every test here says so and skips.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GenericImageView};
use medtransfer_core::formats::{DecodeError, decode_8bit};
use medtransfer_core::preprocess::{INPUT_LEN, preprocess_image};

/// The samples folder, or `None` (with a message) when it has not been fetched.
fn samples() -> Option<PathBuf> {
    let dir = std::env::var_os("MEDTRANSFER_DICOM_SAMPLES")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/medtransfer/dicom-samples"))
        })?;
    if dir.join("CT_small.dcm").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: no DICOM samples in {} (scripts/test.sh fetches them; or set \
             MEDTRANSFER_DICOM_SAMPLES)",
            dir.display()
        );
        None
    }
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn decode(dir: &Path, name: &str) -> DynamicImage {
    decode_8bit(&read(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Largest absolute difference between two images of the same size and colour type.
fn max_diff(a: &DynamicImage, b: &DynamicImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    assert_eq!(a.color(), b.color());
    a.as_bytes()
        .iter()
        .zip(b.as_bytes())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn mean_diff(a: &DynamicImage, b: &DynamicImage) -> f64 {
    let total: u64 = a
        .as_bytes()
        .iter()
        .zip(b.as_bytes())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_bytes().len() as f64
}

/// Every `stride`-th pixel in both directions, from (0, 0).
fn subsample(image: &DynamicImage, stride: u32) -> DynamicImage {
    let (w, h) = image.dimensions();
    let (sw, sh) = (w.div_ceil(stride), h.div_ceil(stride));
    match image {
        DynamicImage::ImageLuma8(g) => {
            DynamicImage::ImageLuma8(image::GrayImage::from_fn(sw, sh, |x, y| {
                *g.get_pixel(x * stride, y * stride)
            }))
        }
        DynamicImage::ImageRgb8(c) => {
            DynamicImage::ImageRgb8(image::RgbImage::from_fn(sw, sh, |x, y| {
                *c.get_pixel(x * stride, y * stride)
            }))
        }
        other => panic!("unexpected colour type {:?}", other.color()),
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/dicom")
}

/// The golden rendering of `sample` (and its stride) from the manifest.
fn golden(sample: &str) -> (DynamicImage, u32) {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    let entry = manifest["fixtures"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["sample"] == sample))
        .unwrap_or_else(|| panic!("{sample} is not in the manifest"));
    let png = entry["png"].as_str().expect("png name");
    let stride = entry["stride"].as_u64().expect("stride") as u32;
    let image = image::open(fixtures_dir().join(png)).expect("golden PNG");
    (image, stride)
}

/// The renderings agree with the independent implementation to within 1 grey level, for
/// every rule: automatic window on rescaled CT values, header windows, MONOCHROME1, the
/// middle frame, YBR_FULL_422, RGB and PALETTE COLOR.
#[test]
fn renderings_match_the_independent_implementation() {
    let Some(dir) = samples() else { return };
    for sample in [
        "CT_small.dcm",
        "MR_small.dcm",
        "emri_small.dcm",
        "MR2_UNCR.dcm",
        "RG3_UNCR.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "US1_UNCR.dcm",
        "examples_palette.dcm",
    ] {
        let (expected, stride) = golden(sample);
        let ours = subsample(&decode(&dir, sample), stride);
        let diff = max_diff(&ours, &expected);
        assert!(diff <= 1, "{sample}: max difference {diff}");
        // Not a trivial picture: many levels are used (colour bars excepted).
        if sample.starts_with("SC_") {
            continue;
        }
        let mut levels = [false; 256];
        for &b in ours.as_bytes() {
            levels[usize::from(b)] = true;
        }
        let used = levels.iter().filter(|&&u| u).count();
        assert!(used > 50, "{sample}: only {used} levels");
    }
}

/// The same image stored in other transfer syntaxes decodes to the same pixels.
#[test]
fn encodings_of_the_same_image_agree() {
    let Some(dir) = samples() else { return };
    for (reference, variants) in [
        (
            "MR_small.dcm",
            &[
                "MR_small_RLE.dcm",
                "MR_small_bigendian.dcm",
                "MR_small_implicit.dcm",
            ][..],
        ),
        (
            "emri_small.dcm",
            &["emri_small_RLE.dcm", "emri_small_big_endian.dcm"][..],
        ),
        (
            "SC_rgb.dcm",
            &["SC_rgb_rle.dcm", "SC_rgb_expb.dcm", "SC_rgb_jpeg_gdcm.dcm"][..],
        ),
        ("SC_rgb_16bit.dcm", &["SC_rgb_rle_16bit.dcm"][..]),
    ] {
        let expected = decode(&dir, reference);
        for variant in variants {
            let diff = max_diff(&decode(&dir, variant), &expected);
            assert_eq!(diff, 0, "{variant} differs from {reference}");
        }
    }
    // Lossy JPEG (YBR_FULL, YBR_FULL_422 and RGB components) stays close to the original.
    let original = decode(&dir, "SC_rgb.dcm");
    for lossy in [
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_dcmtk_+eb+cr.dcm",
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_ybr_full_uncompressed.dcm",
    ] {
        let ours = decode(&dir, lossy);
        let mean = mean_diff(&ours, &original);
        assert!(mean < 3.0, "{lossy}: mean difference {mean:.2}");
    }
    // SC_rgb's colour bars: red on row 5, green on row 25, blue on row 45.
    let DynamicImage::ImageRgb8(bars) = original else {
        panic!("SC_rgb is colour");
    };
    assert_eq!(bars.get_pixel(50, 5).0, [255, 0, 0]);
    assert_eq!(bars.get_pixel(50, 25).0, [0, 255, 0]);
    assert_eq!(bars.get_pixel(50, 45).0, [0, 0, 255]);
}

/// MONOCHROME1: the file with its Photometric Interpretation relabelled MONOCHROME2 (same
/// length, patched in place) renders as the exact negative.
#[test]
fn monochrome1_is_the_negative_of_monochrome2() {
    let Some(dir) = samples() else { return };
    let bytes = read(&dir, "RG3_UNCR.dcm");
    let at = bytes
        .windows(11)
        .position(|w| w == b"MONOCHROME1")
        .expect("RG3 is MONOCHROME1");
    let mut relabelled = bytes.clone();
    relabelled[at + 10] = b'2';
    let inverted = decode_8bit(&bytes).expect("decodes").to_luma8();
    let plain = decode_8bit(&relabelled).expect("decodes").to_luma8();
    assert!(
        inverted
            .pixels()
            .zip(plain.pixels())
            .all(|(a, b)| u16::from(a.0[0]) + u16::from(b.0[0]) == 255)
    );
    // Row 880: direct exposure (stored ≈ 956, high in MONOCHROME1) is dark once inverted,
    // bone (stored ≈ 101) bright, and the shutter border (stored 0, MONOCHROME1's white) white.
    let at = |x| inverted.get_pixel(x, 880).0[0];
    assert!(at(500) < 50, "direct exposure: {}", at(500));
    assert!(at(400) > 200, "bone: {}", at(400));
    assert_eq!(at(0), 255);
}

/// Multi-frame files show their middle frame (index frames / 2).
#[test]
fn multi_frame_files_show_the_middle_frame() {
    let Some(dir) = samples() else { return };
    // SC_rgb_2frame: frame 0 is SC_rgb, frame 1 (the middle of two) its negative.
    let first = decode(&dir, "SC_rgb.dcm");
    let two = decode(&dir, "SC_rgb_2frame.dcm");
    assert!(
        two.as_bytes()
            .iter()
            .zip(first.as_bytes())
            .all(|(a, b)| u16::from(*a) + u16::from(*b) == 255)
    );
    let rle_two = decode(&dir, "SC_rgb_rle_2frame.dcm");
    assert_eq!(max_diff(&rle_two, &two), 0);
    // emri_small (10 frames) renders frame 5; relabelled as a single frame (Number of Frames
    // "10" patched to "1 "), its first frame comes out instead, and differs.
    let bytes = read(&dir, "emri_small.dcm");
    let at = bytes
        .windows(10)
        .position(|w| w == b"\x28\x00\x08\x00IS\x02\x0010")
        .expect("Number of Frames");
    let mut single = bytes.clone();
    single[at + 9] = b' ';
    let (golden, _) = golden("emri_small.dcm");
    let middle = decode_8bit(&bytes).expect("decodes");
    let frame0 = decode_8bit(&single).expect("decodes");
    assert!(max_diff(&middle, &golden) <= 1);
    assert!(
        mean_diff(&frame0, &golden) > 5.0,
        "{}",
        mean_diff(&frame0, &golden)
    );
    // A 30-frame JPEG (YBR_FULL_422) ultrasound loop.
    let loop_frame = decode(&dir, "examples_ybr_color.dcm");
    assert_eq!(loop_frame.dimensions(), (320, 240));
    assert!(matches!(loop_frame, DynamicImage::ImageRgb8(_)));
}

/// Every supported sample decodes to its declared size, and feeds the network.
#[test]
fn supported_samples_decode_to_their_size() {
    let Some(dir) = samples() else { return };
    for (name, width, height, colour) in [
        ("CT_small.dcm", 128, 128, false),
        ("MR_small.dcm", 64, 64, false),
        ("MR2_UNCR.dcm", 1024, 1024, false),
        ("RG3_UNCR.dcm", 1760, 1760, false),
        ("emri_small.dcm", 64, 64, false),
        ("US1_UNCR.dcm", 640, 480, true),
        ("ExplVR_BigEnd.dcm", 80, 60, true),
        ("SC_rgb_small_odd.dcm", 3, 3, true),
        ("SC_rgb_small_odd_jpeg.dcm", 3, 3, true),
        ("SC_rgb_jpeg_dcmtk.dcm", 100, 100, true),
        ("JPEG-LL.dcm", 256, 1024, false),
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", 1024, 768, false),
        ("image_dfl.dcm", 512, 512, false),
        ("liver_1frame.dcm", 512, 512, false),
        ("examples_ybr_color.dcm", 320, 240, true),
        ("examples_palette.dcm", 800, 350, true),
    ] {
        let image = decode(&dir, name);
        assert_eq!(image.dimensions(), (width, height), "{name}");
        assert_eq!(
            matches!(image, DynamicImage::ImageRgb8(_)),
            colour,
            "{name}: {:?}",
            image.color()
        );
        let input = preprocess_image(&read(&dir, name)).expect("preprocesses");
        assert_eq!(input.len(), INPUT_LEN, "{name}");
    }
    // A 1-bit segmentation is black and white.
    let mask = decode(&dir, "liver_1frame.dcm");
    assert!(mask.as_bytes().iter().all(|&b| b == 0 || b == 255));
    assert!(mask.as_bytes().contains(&255));
}

/// Unsupported files are refused with a message naming what is not supported.
#[test]
fn unsupported_samples_are_refused_by_name() {
    let Some(dir) = samples() else { return };
    for (name, expected) in [
        ("JPEG2000.dcm", "JPEG 2000"),
        ("MR_small_jp2klossless.dcm", "JPEG 2000"),
        ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS"),
        ("JPGExtended.dcm", "12-bit lossy JPEG"),
        ("rtdose.dcm", "32 bits allocated"),
        ("waveform_ecg.dcm", "no Pixel Data"),
    ] {
        let error = decode_8bit(&read(&dir, name)).expect_err(name);
        let message = error.to_string();
        assert!(message.contains(expected), "{name}: {message}");
        if expected.starts_with("JPEG 2000") || expected == "JPEG-LS" {
            assert!(
                matches!(error, DecodeError::UnsupportedTransferSyntax { .. }),
                "{name}: {error:?}"
            );
        }
    }
    let truncated = decode_8bit(&read(&dir, "MR_truncated.dcm")).expect_err("truncated");
    assert!(
        matches!(
            truncated,
            DecodeError::Damaged {
                format: "DICOM",
                ..
            }
        ),
        "{truncated:?}"
    );
}
