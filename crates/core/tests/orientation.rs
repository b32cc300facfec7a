//! The orientation a file records is applied by the one shared decoder, for all eight EXIF
//! values (CIPA DC-008, tag 0x0112) in JPEG, for PNG's eXIf chunk and for TIFF's Orientation
//! tag (274): the picture comes out as a viewer shows it.

use std::io::Cursor;

use image::{DynamicImage, GenericImageView, ImageFormat, Rgb, RgbImage, imageops};
use medtransfer_core::formats::decode_8bit;

const RED: [u8; 3] = [230, 20, 20];
const GREEN: [u8; 3] = [20, 200, 40];
const BLUE: [u8; 3] = [30, 40, 220];
const GREY: [u8; 3] = [128, 128, 128];

/// The upright picture: 64 wide, 48 high, quadrants TL red, TR green, BL blue, BR grey.
fn upright() -> RgbImage {
    RgbImage::from_fn(64, 48, |x, y| {
        Rgb(match (x < 32, y < 24) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => GREY,
        })
    })
}

/// How a camera would store the upright picture so that orientation `o` shows it upright
/// (the inverse of the display transform; all but 6 and 8 are their own inverse).
fn stored(o: u16) -> RgbImage {
    let u = upright();
    match o {
        1 => u,
        2 => imageops::flip_horizontal(&u),
        3 => imageops::rotate180(&u),
        4 => imageops::flip_vertical(&u),
        5 => imageops::flip_horizontal(&imageops::rotate90(&u)), // transpose
        6 => imageops::rotate270(&u),
        7 => imageops::flip_horizontal(&imageops::rotate270(&u)), // transverse
        8 => imageops::rotate90(&u),
        _ => unreachable!(),
    }
}

/// A little-endian TIFF block with one IFD entry: Orientation = `o`.
fn exif_tiff(o: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&o.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

fn encode(image: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image.clone())
        .write_to(&mut out, format)
        .expect("encodes");
    out.into_inner()
}

/// A JPEG of `image` with an EXIF APP1 segment right after SOI.
fn jpeg_with_orientation(image: &RgbImage, o: u16) -> Vec<u8> {
    let jpeg = encode(image, ImageFormat::Jpeg);
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend(exif_tiff(o));
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A PNG of `image` with an eXIf chunk before IDAT.
fn png_with_orientation(image: &RgbImage, o: u16) -> Vec<u8> {
    let png = encode(image, ImageFormat::Png);
    // Signature (8) + IHDR chunk (25).
    let mut out = png[..33].to_vec();
    let data = exif_tiff(o);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(b"eXIf");
    out.extend_from_slice(&data);
    let mut crc = flate2::Crc::new();
    crc.update(b"eXIf");
    crc.update(&data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out.extend_from_slice(&png[33..]);
    out
}

/// An uncompressed 8-bit RGB TIFF of `image` with the Orientation tag.
fn tiff_with_orientation(image: &RgbImage, o: u16) -> Vec<u8> {
    let (w, h) = image.dimensions();
    let pixels = image.as_raw();
    let entries: [(u16, u16, u32, u32); 11] = [
        (256, 4, 1, w),                   // ImageWidth
        (257, 4, 1, h),                   // ImageLength
        (258, 3, 1, 8),                   // BitsPerSample
        (259, 3, 1, 1),                   // Compression: none
        (262, 3, 1, 2),                   // PhotometricInterpretation: RGB
        (273, 4, 1, 0),                   // StripOffsets (filled below)
        (274, 3, 1, u32::from(o)),        // Orientation
        (277, 3, 1, 3),                   // SamplesPerPixel
        (278, 4, 1, h),                   // RowsPerStrip
        (279, 4, 1, pixels.len() as u32), // StripByteCounts
        (284, 3, 1, 1),                   // PlanarConfiguration: chunky
    ];
    let ifd_len = 2 + entries.len() * 12 + 4;
    let data_offset = (8 + ifd_len) as u32;
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        let value = if tag == 273 { data_offset } else { value };
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&kind.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        if kind == 3 {
            t.extend_from_slice(&(value as u16).to_le_bytes());
            t.extend_from_slice(&[0, 0]);
        } else {
            t.extend_from_slice(&value.to_le_bytes());
        }
    }
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(pixels);
    t
}

/// The decoded picture is 64 × 48 with the upright quadrants (±12 for JPEG's losses).
fn assert_upright(image: &DynamicImage, what: &str) {
    assert_eq!(image.dimensions(), (64, 48), "{what}");
    let rgb = image.to_rgb8();
    for (x, y, want) in [
        (12, 10, RED),
        (52, 10, GREEN),
        (12, 38, BLUE),
        (52, 38, GREY),
    ] {
        let got = rgb.get_pixel(x, y).0;
        let close = got.iter().zip(want).all(|(&g, w)| g.abs_diff(w) <= 12);
        assert!(close, "{what}: pixel ({x}, {y}) is {got:?}, want {want:?}");
    }
}

#[test]
fn all_eight_exif_orientations_in_jpeg() {
    for o in 1..=8 {
        let file = jpeg_with_orientation(&stored(o), o);
        let image = decode_8bit(&file).expect("decodes");
        assert_upright(&image, &format!("JPEG, orientation {o}"));
    }
}

#[test]
fn png_exif_chunk_and_tiff_orientation_tag() {
    for o in [1, 2, 6, 7] {
        let image = decode_8bit(&png_with_orientation(&stored(o), o)).expect("PNG decodes");
        assert_upright(&image, &format!("PNG eXIf, orientation {o}"));
        let image = decode_8bit(&tiff_with_orientation(&stored(o), o)).expect("TIFF decodes");
        assert_upright(&image, &format!("TIFF, orientation {o}"));
    }
}

#[test]
fn a_broken_exif_block_leaves_the_picture_as_stored() {
    let mut file = jpeg_with_orientation(&upright(), 6);
    // Corrupt the TIFF byte-order mark inside the EXIF block.
    let at = file
        .windows(4)
        .position(|w| w == b"II*\0")
        .expect("EXIF block");
    file[at] = b'X';
    let image = decode_8bit(&file).expect("still decodes");
    assert_upright(&image, "JPEG with a broken EXIF block");
}
