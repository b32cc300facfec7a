//! Hand-made inputs for [`decode_8bit`]: bad files, bombs, and the less common PNG/JPEG/TIFF
//! flavours.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::{
    DynamicImage, GenericImageView, GrayAlphaImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb,
    RgbImage, Rgba, RgbaImage,
};

use super::*;

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).expect("encodes");
    bytes.into_inner()
}

/// A noisy picture (so compressed files are not trivially short).
fn noise(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 7;
        Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    })
}

fn message(result: Result<DynamicImage, DecodeError>) -> String {
    result.expect_err("should be refused").to_string()
}

/// A PNG chunk with its CRC.
fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// A PNG signature and IHDR declaring `width × height` (8-bit RGB unless said), nothing else.
fn png_header(width: u32, height: u32, bit_depth: u8, colour_type: u8) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[bit_depth, colour_type, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(chunk(b"IHDR", &ihdr));
    out
}

#[test]
fn empty_text_pdf_and_random_bytes_are_named() {
    assert!(matches!(decode_8bit(&[]), Err(DecodeError::Empty)));
    assert_eq!(message(decode_8bit(&[])), "empty file (0 bytes)");
    let text = message(decode_8bit(b"Patient: Doe\nStudy: chest X-ray\n"));
    assert!(
        text.contains("a text file") && text.contains("PNG, JPEG, TIFF and DICOM"),
        "{text}"
    );
    let utf8 = message(decode_8bit("Röntgen — thorax\n".as_bytes()));
    assert!(utf8.contains("a text file"), "{utf8}");
    let pdf = message(decode_8bit(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"));
    assert!(pdf.contains("a PDF document"), "{pdf}");
    let zip = message(decode_8bit(b"PK\x03\x04\x14\x00\x00\x00"));
    assert!(zip.contains("ZIP"), "{zip}");
    // A DICOM data set without its file header: (0008,0005) CS "ISO_IR 100".
    let bare = message(decode_8bit(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"));
    assert!(bare.contains("without the DICOM file header"), "{bare}");
    let mut nifti = vec![0u8; 352];
    nifti[344..348].copy_from_slice(b"n+1\0");
    assert!(message(decode_8bit(&nifti)).contains("NIfTI"));
    // Pseudo-random bytes (what a damaged or mislabelled `.dcm` might hold).
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(matches!(
        decode_8bit(&random),
        Err(DecodeError::Unrecognised)
    ));
    assert!(message(decode_8bit(&random)).contains("not in a recognised image format"));
    // Other image formats are named.
    let gif = message(decode_8bit(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"));
    assert!(gif.contains("GIF images"), "{gif}");
    let bmp = message(decode_8bit(b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0"));
    assert!(bmp.contains("BMP images"), "{bmp}");
}

#[test]
fn truncated_png_and_jpeg_are_damaged() {
    let picture = DynamicImage::ImageRgb8(noise(64, 48));
    for format in [ImageFormat::Png, ImageFormat::Jpeg] {
        let bytes = encode(picture.clone(), format);
        assert!(decode_8bit(&bytes).is_ok());
        for cut in [bytes.len() / 2, bytes.len() - 10, 40] {
            let result = decode_8bit(&bytes[..cut]);
            let name = if format == ImageFormat::Png {
                "PNG"
            } else {
                "JPEG"
            };
            match result {
                Err(DecodeError::Damaged { format, .. }) => assert_eq!(format, name),
                other => panic!(
                    "{name} cut at {cut}/{}: {:?}",
                    bytes.len(),
                    other.map(|i| i.dimensions())
                ),
            }
        }
        // Just the signature.
        assert!(decode_8bit(&bytes[..8]).is_err());
    }
}

#[test]
fn sixteen_bit_greyscale_gets_the_percentile_window() {
    // 12-bit data in a 16-bit PNG and TIFF: 400..=3600 with one dead and one hot pixel.
    let image = ImageBuffer::<Luma<u16>, Vec<u16>>::from_fn(40, 25, |x, y| {
        Luma([400 + (x * 25 + y) as u16 * 3])
    });
    let mut image = image;
    image.put_pixel(0, 0, Luma([0]));
    image.put_pixel(39, 24, Luma([65535]));
    for format in [ImageFormat::Png, ImageFormat::Tiff] {
        let bytes = encode(DynamicImage::ImageLuma16(image.clone()), format);
        let DynamicImage::ImageLuma8(out) = decode_8bit(&bytes).expect("decodes") else {
            panic!("expected 8-bit greyscale");
        };
        // The outliers do not set the range: the 0.5th and 99.5th percentiles do.
        let values: Vec<i32> = image.pixels().map(|p| i32::from(p.0[0])).collect();
        let histogram = window::Histogram::from_values(|| values.iter().copied()).expect("counts");
        let w = histogram
            .auto_window(window::Rescale::IDENTITY)
            .expect("not flat");
        let expected: Vec<u8> = values.iter().map(|&v| w.apply(f64::from(v))).collect();
        assert_eq!(out.as_raw(), &expected, "{format:?}");
        // Uses the whole 8-bit range, where the `image` crate's plain conversion (v / 257)
        // would give 1..=14 for this data.
        let naive = DynamicImage::ImageLuma16(image.clone()).to_luma8();
        assert!(naive.get_pixel(20, 12).0[0] < 15);
        assert!(
            out.get_pixel(20, 12).0[0] > 100,
            "{:?}",
            out.get_pixel(20, 12)
        );
        assert_eq!(
            (out.get_pixel(0, 0).0[0], out.get_pixel(39, 24).0[0]),
            (0, 255)
        );
        // The 0.5 % darkest and brightest values are clipped (5 pixels of 1000 each, plus
        // neighbours that round to the ends).
        let ends = |v: u8| out.pixels().filter(|p| p.0[0] == v).count();
        assert!((5..=8).contains(&ends(0)) && (5..=8).contains(&ends(255)));
    }
}

#[test]
fn alpha_is_dropped_not_composited() {
    let mut rgba = RgbaImage::from_pixel(3, 2, Rgba([10, 200, 30, 255]));
    rgba.put_pixel(1, 1, Rgba([250, 5, 60, 0]));
    let out =
        decode_8bit(&encode(DynamicImage::ImageRgba8(rgba), ImageFormat::Png)).expect("decodes");
    let DynamicImage::ImageRgb8(out) = out else {
        panic!("expected RGB");
    };
    // A fully transparent pixel keeps its stored colour.
    assert_eq!(out.get_pixel(1, 1), &Rgb([250, 5, 60]));
    assert_eq!(out.get_pixel(0, 0), &Rgb([10, 200, 30]));
    let la = GrayAlphaImage::from_pixel(2, 2, LumaA([77, 0]));
    let out =
        decode_8bit(&encode(DynamicImage::ImageLumaA8(la), ImageFormat::Png)).expect("decodes");
    assert!(matches!(&out, DynamicImage::ImageLuma8(g) if g.as_raw() == &vec![77; 4]));
}

#[test]
fn rgb16_is_scaled_linearly() {
    let image = ImageBuffer::<Rgb<u16>, Vec<u16>>::from_pixel(2, 2, Rgb([65535, 32896, 0]));
    let out =
        decode_8bit(&encode(DynamicImage::ImageRgb16(image), ImageFormat::Png)).expect("decodes");
    assert!(matches!(&out, DynamicImage::ImageRgb8(i) if i.get_pixel(0, 0) == &Rgb([255, 128, 0])));
}

#[test]
fn cmyk_jpeg_becomes_rgb() {
    // Two halves: no ink (white) and full cyan.
    let (width, height) = (16u16, 8u16);
    let mut cmyk = Vec::new();
    for _y in 0..height {
        for x in 0..width {
            cmyk.extend_from_slice(if x < 8 {
                &[0, 0, 0, 0]
            } else {
                &[255, 0, 0, 0]
            });
        }
    }
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 95)
        .encode(&cmyk, width, height, jpeg_encoder::ColorType::Cmyk)
        .expect("encodes");
    let out = decode_8bit(&bytes).expect("a CMYK JPEG decodes");
    let DynamicImage::ImageRgb8(out) = out else {
        panic!("expected RGB, got {:?}", out.color());
    };
    assert_eq!(out.dimensions(), (16, 8));
    let white = out.get_pixel(2, 4).0;
    let cyan = out.get_pixel(13, 4).0;
    assert!(white.iter().all(|&c| c > 230), "no ink → white: {white:?}");
    assert!(
        cyan[0] < 60 && cyan[1] > 180 && cyan[2] > 180,
        "cyan: {cyan:?}"
    );
}

#[test]
fn animated_png_gives_its_first_frame() {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 4, 4);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_animated(2, 0).expect("animated");
        let mut writer = encoder.write_header().expect("header");
        writer
            .write_image_data(&[255, 0, 0].repeat(16))
            .expect("frame 1");
        writer
            .write_image_data(&[0, 0, 255].repeat(16))
            .expect("frame 2");
        writer.finish().expect("finishes");
    }
    let out = decode_8bit(&bytes).expect("decodes");
    assert!(
        matches!(&out, DynamicImage::ImageRgb8(i) if i.pixels().all(|p| p == &Rgb([255, 0, 0]))),
        "{:?}",
        out.as_bytes().get(..3)
    );
}

/// A 50 000 × 50 000 PNG header (a 45-byte "bomb" that would need 7.5 GB) is refused from its
/// header, at once; so are a JPEG and a TIFF declaring 65 000 × 65 000.
#[test]
fn pixel_bombs_are_refused_from_the_header() {
    let start = Instant::now();
    let mut png = png_header(50_000, 50_000, 8, 2);
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    let error = decode_8bit(&png).expect_err("refused");
    assert!(
        matches!(
            error,
            DecodeError::TooLarge {
                width: 50_000,
                height: 50_000
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("2500.0 megapixels"), "{error}");
    // The same as RGBA (10 GB decoded): the same refusal, not the decoder's memory limit.
    let mut rgba = png_header(50_000, 50_000, 8, 6);
    rgba.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    rgba.extend(chunk(b"IEND", &[]));
    assert!(
        matches!(
            decode_8bit(&rgba),
            Err(DecodeError::TooLarge {
                width: 50_000,
                height: 50_000
            })
        ),
        "{:?}",
        decode_8bit(&rgba)
    );

    // JPEG: a real 8×8 JPEG whose frame header is patched to 65 000 × 65 000.
    let mut jpeg = encode(DynamicImage::ImageRgb8(noise(8, 8)), ImageFormat::Jpeg);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .expect("a baseline frame header");
    jpeg[sof + 5..sof + 7].copy_from_slice(&65_000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&65_000u16.to_be_bytes());
    let result = decode_8bit(&jpeg);
    assert!(
        matches!(result, Err(DecodeError::TooLarge { .. })),
        "{:?}",
        result.map(|i| i.dimensions())
    );

    // TIFF: a little-endian header and one IFD with width and height.
    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    let entries: [(u16, u16, u32, u32); 6] = [
        (256, 4, 1, 65_000), // ImageWidth
        (257, 4, 1, 65_000), // ImageLength
        (258, 3, 1, 8),      // BitsPerSample
        (262, 3, 1, 1),      // PhotometricInterpretation: BlackIsZero
        (273, 4, 1, 0),      // StripOffsets
        (279, 4, 1, 1),      // StripByteCounts
    ];
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&count.to_le_bytes());
        tiff.extend_from_slice(&value.to_le_bytes());
    }
    tiff.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        decode_8bit(&tiff),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );

    // Within the pixel budget but over the memory limit: 10 000² 16-bit RGBA is 800 MB.
    let mut big = png_header(10_000, 10_000, 16, 6);
    big.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    big.extend(chunk(b"IEND", &[]));
    let result = decode_8bit(&big);
    assert!(
        matches!(result, Err(DecodeError::MemoryLimit { format: "PNG", .. })),
        "{:?}",
        result.map(|i| i.dimensions())
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn the_budget_is_inclusive() {
    assert!(check_budget(10_000, 10_000).is_ok());
    assert!(check_budget(10_000, 10_001).is_err());
    assert!(check_budget(u64::MAX, 2).is_err());
}

#[test]
fn sniffing_reads_content_not_names() {
    let png = encode(DynamicImage::ImageRgb8(noise(4, 4)), ImageFormat::Png);
    let jpeg = encode(DynamicImage::ImageRgb8(noise(4, 4)), ImageFormat::Jpeg);
    let tiff = encode(DynamicImage::ImageRgb8(noise(4, 4)), ImageFormat::Tiff);
    assert_eq!(sniff(&png), Some(Format::Png));
    assert_eq!(sniff(&jpeg), Some(Format::Jpeg));
    assert_eq!(sniff(&tiff), Some(Format::Tiff));
    let mut dicom = vec![0u8; 128];
    dicom.extend_from_slice(b"DICM");
    assert_eq!(sniff(&dicom), Some(Format::Dicom));
    assert_eq!(sniff(b"DICM\x02\x00\x00\x00"), Some(Format::Dicom));
    assert_eq!(sniff(b"hello"), None);
    assert_eq!(sniff(b"GIF89a"), None);
    // A TIFF decodes like the others.
    let out = decode_8bit(&tiff).expect("decodes");
    assert_eq!(out.to_rgb8(), noise(4, 4));
}
