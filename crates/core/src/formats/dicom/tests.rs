//! DICOM files written in the tests (explicit VR little endian unless said otherwise), so each
//! rule is checked on pixels whose expected rendering is known exactly.

use super::*;
use crate::formats::decode_8bit;
use crate::formats::window::Window;

/// An explicit VR little-endian element.
fn element(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    let long = matches!(
        vr,
        b"OB"
            | b"OW"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"SQ"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
            | b"SV"
    );
    if long {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

/// A text value padded to even length.
fn text(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(b' ');
    }
    v
}

fn us(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// Preamble, `DICM`, a file meta group naming `transfer_syntax`, then `body`.
fn file(transfer_syntax: &str, body: &[u8]) -> Vec<u8> {
    let mut ts = transfer_syntax.as_bytes().to_vec();
    if ts.len() % 2 == 1 {
        ts.push(0);
    }
    let mut meta = element(0x0002, 0x0001, b"OB", &[0, 1]);
    meta.extend(element(
        0x0002,
        0x0002,
        b"UI",
        &text("1.2.840.10008.5.1.4.1.1.7"),
    ));
    meta.extend(element(0x0002, 0x0003, b"UI", &text("1.2.3.4")));
    meta.extend(element(0x0002, 0x0010, b"UI", &ts));
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend(element(
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    out.extend(meta);
    out.extend_from_slice(body);
    out
}

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// Image attributes of a greyscale image; `extra` elements are inserted in tag order by the
/// caller (they go between Pixel Representation and Pixel Data here, fine for (0028,1xxx)).
struct Grey<'a> {
    rows: u16,
    columns: u16,
    frames: Option<&'a str>,
    bits: u16,
    signed: bool,
    photometric: &'a str,
    extra: Vec<u8>,
}

impl Grey<'_> {
    fn new(rows: u16, columns: u16) -> Self {
        Grey {
            rows,
            columns,
            frames: None,
            bits: 16,
            signed: false,
            photometric: "MONOCHROME2",
            extra: Vec::new(),
        }
    }

    fn header(&self) -> Vec<u8> {
        let mut out = element(0x0028, 0x0002, b"US", &us(1));
        out.extend(element(0x0028, 0x0004, b"CS", &text(self.photometric)));
        if let Some(frames) = self.frames {
            out.extend(element(0x0028, 0x0008, b"IS", &text(frames)));
        }
        out.extend(element(0x0028, 0x0010, b"US", &us(self.rows)));
        out.extend(element(0x0028, 0x0011, b"US", &us(self.columns)));
        out.extend(element(0x0028, 0x0100, b"US", &us(16)));
        out.extend(element(0x0028, 0x0101, b"US", &us(self.bits)));
        out.extend(element(0x0028, 0x0102, b"US", &us(self.bits - 1)));
        out.extend(element(0x0028, 0x0103, b"US", &us(u16::from(self.signed))));
        out.extend_from_slice(&self.extra);
        out
    }

    /// Uncompressed file with these 16-bit samples.
    fn native(&self, samples: &[u16]) -> Vec<u8> {
        let mut body = self.header();
        let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        body.extend(element(0x7FE0, 0x0010, b"OW", &bytes));
        file(EXPLICIT_LE, &body)
    }
}

/// Encapsulated pixel data: an empty offset table, then the fragments.
fn encapsulated(fragments: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0x7FE0u16.to_le_bytes());
    out.extend_from_slice(&0x0010u16.to_le_bytes());
    out.extend_from_slice(b"OB\0\0");
    out.extend_from_slice(&u32::MAX.to_le_bytes());
    let item = |out: &mut Vec<u8>, data: &[u8]| {
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    };
    item(&mut out, &[]);
    for f in fragments {
        item(&mut out, f);
    }
    out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    out
}

fn grey(image: &DynamicImage) -> Vec<u8> {
    match image {
        DynamicImage::ImageLuma8(g) => g.as_raw().clone(),
        other => panic!("expected greyscale, got {:?}", other.color()),
    }
}

fn window_element(center: &str, width: &str) -> Vec<u8> {
    let mut out = element(0x0028, 0x1050, b"DS", &text(center));
    out.extend(element(0x0028, 0x1051, b"DS", &text(width)));
    out
}

#[test]
fn header_window_is_applied_to_rescaled_values() {
    // Stored 0..=3000 in steps; modality = stored − 1024; window 40/400.
    let samples: Vec<u16> = (0..16).map(|i| i * 200).collect();
    let mut g = Grey::new(4, 4);
    g.extra = element(0x0028, 0x1050, b"DS", &text("40\\-600"));
    g.extra
        .extend(element(0x0028, 0x1051, b"DS", &text("400\\1500")));
    g.extra
        .extend(element(0x0028, 0x1052, b"DS", &text("-1024")));
    g.extra.extend(element(0x0028, 0x1053, b"DS", &text("1")));
    let out = grey(&decode_8bit(&g.native(&samples)).expect("decodes"));
    // The first of the two windows (40/400) is used.
    let w = Window::center_width(40.0, 400.0).expect("valid");
    let expected: Vec<u8> = samples
        .iter()
        .map(|&s| w.apply(f64::from(s) - 1024.0))
        .collect();
    assert_eq!(out, expected);
    // Not trivially flat: air is black, bone white, soft tissue in between.
    assert_eq!((out[0], out[15]), (0, 255));
    assert!(out.iter().any(|&v| v > 0 && v < 255), "{out:?}");
}

#[test]
fn without_a_window_the_percentile_window_is_used() {
    // 12-bit data in 16-bit words: 100..=4000 plus one hot pixel.
    let mut samples: Vec<u16> = (0..400).map(|i| 100 + i * 9).collect();
    samples[0] = 4095;
    let g = Grey::new(20, 20);
    let out = grey(&decode_8bit(&g.native(&samples)).expect("decodes"));
    let h =
        crate::formats::window::Histogram::from_values(|| samples.iter().map(|&v| i32::from(v)))
            .expect("counts");
    let w = h.auto_window(Rescale::IDENTITY).expect("not flat");
    let expected: Vec<u8> = samples.iter().map(|&s| w.apply(f64::from(s))).collect();
    assert_eq!(out, expected);
    // The full 8-bit range is used (a plain 16→8-bit scaling would stay below 16).
    assert_eq!(out.iter().max(), Some(&255));
    assert_eq!(out.iter().min(), Some(&0));
}

#[test]
fn monochrome1_is_inverted() {
    let samples: Vec<u16> = (0..64).map(|i| i * 50).collect();
    let mut g = Grey::new(8, 8);
    g.extra = window_element("1600", "3200");
    let normal = grey(&decode_8bit(&g.native(&samples)).expect("decodes"));
    g.photometric = "MONOCHROME1";
    let inverted = grey(&decode_8bit(&g.native(&samples)).expect("decodes"));
    for (a, b) in normal.iter().zip(&inverted) {
        assert_eq!(u16::from(*a) + u16::from(*b), 255);
    }
    // Low values (little attenuation in MONOCHROME1) come out bright.
    assert!(inverted[0] > inverted[63]);
}

#[test]
fn signed_values_and_bits_stored_are_respected() {
    // 12 bits stored, signed: 0x0FFF is −1, 0x0800 is −2048; garbage in the top 4 bits
    // (e.g. an overlay) is masked away.
    let samples = [0xF000 | 0x0FFF, 0x0800, 0x07FF, 0x0000];
    let mut g = Grey::new(2, 2);
    g.bits = 12;
    g.signed = true;
    g.extra = window_element("0", "4096");
    let out = grey(&decode_8bit(&g.native(&samples)).expect("decodes"));
    let w = Window::center_width(0.0, 4096.0).expect("valid");
    let expected: Vec<u8> = [-1.0, -2048.0, 2047.0, 0.0]
        .iter()
        .map(|&v| w.apply(v))
        .collect();
    assert_eq!(out, expected);
}

#[test]
fn the_middle_frame_is_used() {
    // Three frames of 2×2, each uniform at 100, 200, 300; a window centred on 200.
    let mut g = Grey::new(2, 2);
    g.frames = Some("3");
    g.extra = window_element("200", "201");
    let samples: Vec<u16> = [100u16, 200, 300].iter().flat_map(|&v| [v; 4]).collect();
    let out = grey(&decode_8bit(&g.native(&samples)).expect("decodes"));
    let w = Window::center_width(200.0, 201.0).expect("valid");
    assert_eq!(out, vec![w.apply(200.0); 4]);
    assert!(out[0] > 0 && out[0] < 255);
    // Four frames: index 2 (the third) is the middle one.
    g.frames = Some("4");
    let samples: Vec<u16> = [0u16, 100, 200, 300].iter().flat_map(|&v| [v; 4]).collect();
    let out = grey(&decode_8bit(&g.native(&samples)).expect("decodes"));
    assert_eq!(out, vec![w.apply(200.0); 4]);
    // More frames declared than present: an error, not a panic.
    g.frames = Some("9");
    assert!(matches!(
        decode_8bit(&g.native(&samples)),
        Err(DecodeError::Damaged { .. })
    ));
}

#[test]
fn rle_matches_uncompressed() {
    let samples: Vec<u16> = (0..30).map(|i| (i * 37 % 11) * 300).collect();
    let g = Grey::new(5, 6);
    let native = decode_8bit(&g.native(&samples)).expect("decodes");
    // PackBits planes: literal runs of at most 128 bytes.
    let plane = |shift: u32| -> Vec<u8> {
        let bytes: Vec<u8> = samples.iter().map(|&v| (v >> shift) as u8).collect();
        let mut seg = vec![(bytes.len() - 1) as u8];
        seg.extend(bytes);
        seg
    };
    let mut header = vec![0u8; 64];
    let (msb, lsb) = (plane(8), plane(0));
    header[..4].copy_from_slice(&2u32.to_le_bytes());
    header[4..8].copy_from_slice(&64u32.to_le_bytes());
    header[8..12].copy_from_slice(&(64 + msb.len() as u32).to_le_bytes());
    let fragment = [header, msb, lsb].concat();
    let mut body = g.header();
    body.extend(encapsulated(std::slice::from_ref(&fragment)));
    let rle = decode_8bit(&file("1.2.840.10008.1.2.5", &body)).expect("decodes");
    assert_eq!(grey(&rle), grey(&native));
    // A cut fragment is a clear error.
    let mut body = g.header();
    body.extend(encapsulated(&[fragment[..70].to_vec()]));
    let error = decode_8bit(&file("1.2.840.10008.1.2.5", &body)).expect_err("damaged");
    assert!(error.to_string().contains("RLE"), "{error}");
}

#[test]
fn colour_models() {
    let rgb_header = |photometric: &str, planar: u16, rows: u16, cols: u16| {
        let mut out = element(0x0028, 0x0002, b"US", &us(3));
        out.extend(element(0x0028, 0x0004, b"CS", &text(photometric)));
        out.extend(element(0x0028, 0x0006, b"US", &us(planar)));
        out.extend(element(0x0028, 0x0010, b"US", &us(rows)));
        out.extend(element(0x0028, 0x0011, b"US", &us(cols)));
        out.extend(element(0x0028, 0x0100, b"US", &us(8)));
        out.extend(element(0x0028, 0x0101, b"US", &us(8)));
        out.extend(element(0x0028, 0x0102, b"US", &us(7)));
        out.extend(element(0x0028, 0x0103, b"US", &us(0)));
        out
    };
    let decode_rgb = |body: Vec<u8>| match decode_8bit(&file(EXPLICIT_LE, &body)) {
        Ok(DynamicImage::ImageRgb8(image)) => image.into_raw(),
        other => panic!("expected RGB, got {other:?}"),
    };
    // Interleaved and planar RGB give the same pixels.
    let pixels = [255u8, 0, 0, 0, 255, 0];
    let mut body = rgb_header("RGB", 0, 1, 2);
    body.extend(element(0x7FE0, 0x0010, b"OB", &pixels));
    assert_eq!(decode_rgb(body), pixels.to_vec());
    let mut body = rgb_header("RGB", 1, 1, 2);
    body.extend(element(0x7FE0, 0x0010, b"OB", &[255, 0, 0, 255, 0, 0]));
    assert_eq!(decode_rgb(body), pixels.to_vec());
    // YBR_FULL: pure red is Y 76, Cb 85, Cr 255 (BT.601 full range).
    let mut body = rgb_header("YBR_FULL", 0, 1, 2);
    body.extend(element(
        0x7FE0,
        0x0010,
        b"OB",
        &[76, 85, 255, 128, 128, 128],
    ));
    let out = decode_rgb(body);
    assert!(out[0] >= 253 && out[1] <= 2 && out[2] <= 2, "{out:?}");
    assert_eq!(&out[3..], &[128, 128, 128]);
    // YBR_FULL_422: two pixels share Cb and Cr.
    let mut body = rgb_header("YBR_FULL_422", 0, 1, 2);
    body.extend(element(0x7FE0, 0x0010, b"OB", &[0, 255, 128, 128]));
    assert_eq!(decode_rgb(body), vec![0, 0, 0, 255, 255, 255]);
    // PALETTE COLOR: 4-entry 16-bit tables starting at stored value 10; values below and
    // above the table take its first and last entries.
    let mut body = element(0x0028, 0x0002, b"US", &us(1));
    body.extend(element(0x0028, 0x0004, b"CS", &text("PALETTE COLOR")));
    body.extend(element(0x0028, 0x0010, b"US", &us(1)));
    body.extend(element(0x0028, 0x0011, b"US", &us(4)));
    body.extend(element(0x0028, 0x0100, b"US", &us(8)));
    body.extend(element(0x0028, 0x0101, b"US", &us(8)));
    body.extend(element(0x0028, 0x0102, b"US", &us(7)));
    body.extend(element(0x0028, 0x0103, b"US", &us(0)));
    let descriptor: Vec<u8> = [4u16, 10, 16]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let table = |v: [u16; 4]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut palette = body.clone();
    for i in 0..3u16 {
        palette.extend(element(0x0028, 0x1101 + i, b"US", &descriptor));
    }
    for (i, values) in [
        [0u16, 65535, 32768, 0],
        [0, 0, 65535, 257],
        [65535, 0, 0, 65535],
    ]
    .into_iter()
    .enumerate()
    {
        palette.extend(element(0x0028, 0x1201 + i as u16, b"OW", &table(values)));
    }
    palette.extend(element(0x7FE0, 0x0010, b"OB", &[9, 10, 11, 200]));
    assert_eq!(
        decode_rgb(palette),
        vec![0, 0, 255, 0, 0, 255, 255, 0, 0, 0, 1, 255]
    );
    // Segmented palettes are refused by name.
    let mut segmented = body.clone();
    for i in 0..3u16 {
        segmented.extend(element(0x0028, 0x1101 + i, b"US", &descriptor));
    }
    segmented.extend(element(0x0028, 0x1221, b"OW", &[0, 0, 1, 0]));
    segmented.extend(element(0x7FE0, 0x0010, b"OB", &[0, 1, 2, 3]));
    let error = decode_8bit(&file(EXPLICIT_LE, &segmented)).expect_err("refused");
    assert!(error.to_string().contains("segmented palettes"), "{error}");
    // Other colour models are refused by name.
    let mut body = rgb_header("HSV", 0, 1, 2);
    body.extend(element(0x7FE0, 0x0010, b"OB", &[0; 6]));
    let error = decode_8bit(&file(EXPLICIT_LE, &body)).expect_err("refused");
    assert!(error.to_string().contains("HSV"), "{error}");
}

#[test]
fn one_bit_masks_become_black_and_white() {
    let mut body = element(0x0028, 0x0002, b"US", &us(1));
    body.extend(element(0x0028, 0x0004, b"CS", &text("MONOCHROME2")));
    body.extend(element(0x0028, 0x0010, b"US", &us(2)));
    body.extend(element(0x0028, 0x0011, b"US", &us(4)));
    body.extend(element(0x0028, 0x0100, b"US", &us(1)));
    body.extend(element(0x0028, 0x0101, b"US", &us(1)));
    body.extend(element(0x0028, 0x0102, b"US", &us(0)));
    body.extend(element(0x0028, 0x0103, b"US", &us(0)));
    // Bits least significant first: 0b1000_0101 → pixels 1,0,1,0,0,0,0,1.
    body.extend(element(0x7FE0, 0x0010, b"OB", &[0b1000_0101, 0]));
    let out = grey(&decode_8bit(&file(EXPLICIT_LE, &body)).expect("decodes"));
    assert_eq!(out, vec![255, 0, 255, 0, 0, 0, 0, 255]);
}

#[test]
fn unsupported_transfer_syntaxes_are_named() {
    let g = Grey::new(2, 2);
    let mut body = g.header();
    body.extend(encapsulated(&[vec![0xFF, 0x4F, 0xFF, 0x51]]));
    for (uid, name) in [
        ("1.2.840.10008.1.2.4.90", "JPEG 2000"),
        ("1.2.840.10008.1.2.4.80", "JPEG-LS"),
        ("1.2.840.10008.1.2.4.100", "MPEG2"),
        ("1.2.3.4.5.6", "unknown"),
    ] {
        let error = decode_8bit(&file(uid, &body)).expect_err("refused");
        assert!(
            matches!(&error, DecodeError::UnsupportedTransferSyntax { uid: u, .. } if u == uid),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(name) && message.contains(uid), "{message}");
        assert!(
            message.contains("RLE Lossless"),
            "lists what is supported: {message}"
        );
    }
}

#[test]
fn bombs_and_damage_are_refused_quickly() {
    let start = std::time::Instant::now();
    // 65535 × 65535 declared, no pixels: over the budget, from the header.
    let g = Grey::new(65535, 65535);
    assert!(matches!(
        decode_8bit(&g.native(&[0; 4])),
        Err(DecodeError::TooLarge {
            width: 65535,
            height: 65535
        })
    ));
    // A 4 GB element in a tiny file.
    let mut body = Grey::new(2, 2).header();
    body.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    body.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    body.extend_from_slice(&[0; 8]);
    let error = decode_8bit(&file(EXPLICIT_LE, &body)).expect_err("refused");
    assert!(
        error.to_string().contains("longer than the file"),
        "{error}"
    );
    // Sequences nested 10 000 deep.
    let mut body = Vec::new();
    for _ in 0..10_000 {
        body.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        body.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        body.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let error = decode_8bit(&file(EXPLICIT_LE, &body)).expect_err("refused");
    assert!(error.to_string().contains("nested"), "{error}");
    // Garbage after the magic, and a cut meta group.
    let mut junk = vec![0u8; 128];
    junk.extend_from_slice(b"DICM");
    junk.extend((0..500u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    assert!(matches!(
        decode_8bit(&junk),
        Err(DecodeError::Damaged {
            format: "DICOM",
            ..
        })
    ));
    let whole = Grey::new(2, 2).native(&[1, 2, 3, 4]);
    for cut in [130, 140, 160, 200, whole.len() - 3] {
        assert!(decode_8bit(&whole[..cut]).is_err(), "cut at {cut}");
    }
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
}

#[test]
fn files_without_an_image_are_explained() {
    let mut body = element(0x0008, 0x0060, b"CS", &text("SR"));
    body.extend(element(0x0010, 0x0010, b"PN", &text("Doe^Jane")));
    let error = decode_8bit(&file(EXPLICIT_LE, &body)).expect_err("no image");
    assert!(error.to_string().contains("no Pixel Data"), "{error}");
}

/// An `AT` value whose length is not a multiple of 4 makes `dicom-parser` consume fewer bytes
/// than declared: here it reads 4 of 6 bytes, then takes the last 2 as the start of a header
/// declaring a 4 GB `OB` value. A check that skipped the declared 6 bytes would see no such
/// header; the guard follows the parser's bytes and refuses it.
#[test]
fn guard_follows_the_parsers_byte_accounting() {
    let mut body = element(0x0020, 0x5000, b"AT", &[0x10, 0x00, 0x10, 0x00, 0x09, 0x00]);
    body.extend_from_slice(&[0x10, 0x00, b'O', b'B', 0, 0]);
    body.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    body.extend_from_slice(&[0; 16]);
    let error = decode_8bit(&file(EXPLICIT_LE, &body)).expect_err("refused");
    assert!(
        error.to_string().contains("longer than the file"),
        "{error}"
    );
    // The same with a whole AT value parses on (and has no image).
    let mut body = element(0x0020, 0x5000, b"AT", &[0x10, 0x00, 0x10, 0x00]);
    body.extend(element(0x0020, 0x5001, b"LO", &text("x")));
    let error = decode_8bit(&file(EXPLICIT_LE, &body)).expect_err("no image");
    assert!(error.to_string().contains("no Pixel Data"), "{error}");
}

#[test]
fn deflated_data_sets() {
    use std::io::Write;
    let g = Grey::new(2, 2);
    let mut body = g.header();
    body.extend(element(0x7FE0, 0x0010, b"OW", &[1, 0, 2, 0, 3, 0, 4, 0]));
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&body).expect("deflates");
    let deflated = encoder.finish().expect("deflates");
    let out = decode_8bit(&file("1.2.840.10008.1.2.1.99", &deflated)).expect("decodes");
    assert_eq!(grey(&out), vec![0, 85, 170, 255]);
    // A deflate bomb: 300 MiB of zeros in a few hundred kilobytes.
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..300 {
        encoder.write_all(&zeros).expect("deflates");
    }
    let bomb = encoder.finish().expect("deflates");
    let error = decode_8bit(&file("1.2.840.10008.1.2.1.99", &bomb)).expect_err("refused");
    assert!(error.to_string().contains("MiB"), "{error}");
}
