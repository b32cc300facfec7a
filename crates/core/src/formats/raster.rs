//! PNG, JPEG and TIFF through the `image` crate: size checked from the header first, then
//! decoded under a memory budget proportional to the pixels, brought to 8 bits and turned
//! upright by the orientation the file records.

use std::io::Cursor;

use image::codecs::png::PngDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};

use super::window::{Rescale, render_grey};
use super::{DecodeError, check_budget, memory_budget};

/// The name used in messages.
pub(super) fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Ico => "ICO",
        ImageFormat::Avif => "AVIF",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Hdr => "Radiance HDR",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Qoi => "QOI",
        ImageFormat::Dds => "DDS",
        ImageFormat::Tga => "TGA",
        ImageFormat::Farbfeld => "farbfeld",
        _ => "this kind of",
    }
}

/// Decodes a PNG, JPEG or TIFF file (`format` sniffed by the caller) into an 8-bit greyscale
/// or RGB image, upright: the orientation the file records (EXIF Orientation in JPEG's APP1 and
/// PNG's eXIf chunk, the TIFF Orientation tag 274; all eight values, CIPA DC-008 / TIFF 6.0) is
/// applied, as viewers and browsers show the picture. The header's dimensions are checked
/// against the pixel budget before any pixel is decoded; decoding, metadata included, stays
/// under [`memory_budget`] for those dimensions.
pub(super) fn decode(bytes: &[u8], format: ImageFormat) -> Result<DynamicImage, DecodeError> {
    let name = format_name(format);
    let (width, height) = match png_dimensions(bytes) {
        // A PNG's size is read from its IHDR chunk here: the `image` crate reads every chunk
        // up to the pixel data for its dimensions, inflating a colour profile without limits,
        // and on 32-bit targets (wasm) it refuses an oversized image without saying its size.
        Some(size) if format == ImageFormat::Png => size,
        _ => {
            // Only the header is read here; without limits, so that an oversized image is
            // refused by the pixel budget with its size, not by the decoder's allocation limit.
            let mut header = ImageReader::with_format(Cursor::new(bytes), format);
            header.no_limits();
            header
                .into_dimensions()
                .map_err(|e| image_error(name, e, 0))?
        }
    };
    check_budget(u64::from(width), u64::from(height))?;
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        // The JPEG decoder fills a cut-off image with grey rather than failing.
        return Err(DecodeError::Damaged {
            format: name,
            detail: "the file ends early (truncated): no end-of-image marker after its data".into(),
        });
    }
    let budget = memory_budget(u64::from(width) * u64::from(height));
    let mut limits = Limits::default();
    limits.max_alloc = Some(budget);
    let mut decoder: Box<dyn ImageDecoder + '_> = if format == ImageFormat::Png {
        // Built directly: `ImageReader` creates the PNG decoder without limits and applies them
        // afterwards, too late for the colour profile, which the png crate inflates while it
        // reads the header (a 100 kB file inflating to 96 MiB was decoded that way). With the
        // limits given here the profile is inflated under the budget or refused.
        Box::new(
            PngDecoder::with_limits(Cursor::new(bytes), limits)
                .map_err(|e| image_error(name, e, budget))?,
        )
    } else {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(limits);
        Box::new(
            reader
                .into_decoder()
                .map_err(|e| image_error(name, e, budget))?,
        )
    };
    if decoder.total_bytes() > budget {
        return Err(DecodeError::MemoryLimit {
            format: name,
            budget,
        });
    }
    // A damaged EXIF block does not make the picture unusable: it is then shown as stored.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(|e| image_error(name, e, budget))?;
    let mut image = to_8bit(image)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Width and height from a PNG's leading IHDR chunk, when the file starts with one.
fn png_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let ihdr = bytes.get(8..24)?;
    if &ihdr[4..8] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(ihdr[8..12].try_into().ok()?);
    let height = u32::from_be_bytes(ihdr[12..16].try_into().ok()?);
    Some((width, height))
}

/// 8-bit greyscale and RGB pass through; alpha is dropped (not composited: the colour channels
/// are kept as stored, as Pillow's `convert('RGB')` does); 16-bit greyscale gets the automatic
/// percentile window; 16-bit and floating-point colour are scaled linearly to 8 bits.
pub(super) fn to_8bit(image: DynamicImage) -> Result<DynamicImage, DecodeError> {
    Ok(match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image,
        DynamicImage::ImageLumaA8(_) => DynamicImage::ImageLuma8(image.to_luma8()),
        DynamicImage::ImageLuma16(ref buffer) => {
            window_16bit(buffer.width(), buffer.height(), buffer.as_raw(), 1)?
        }
        DynamicImage::ImageLumaA16(ref buffer) => {
            window_16bit(buffer.width(), buffer.height(), buffer.as_raw(), 2)?
        }
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    })
}

/// The automatic window over 16-bit greyscale samples (every `stride`-th value: 2 skips alpha).
fn window_16bit(
    width: u32,
    height: u32,
    samples: &[u16],
    stride: usize,
) -> Result<DynamicImage, DecodeError> {
    let values = || samples.iter().step_by(stride).map(|&v| i32::from(v));
    let pixels = render_grey(values, Rescale::IDENTITY, None, false).unwrap_or_default();
    GrayImage::from_raw(width, height, pixels)
        .map(DynamicImage::ImageLuma8)
        .ok_or(DecodeError::NoPixels { width, height })
}

/// Whether a JPEG has an end-of-image marker after the start of its (first) scan. Marker
/// segments are skipped by their lengths up to the scan, so a thumbnail's markers inside an
/// EXIF segment are not mistaken for the image's; in entropy-coded data `FF D9` can only be
/// the real end marker. Anything unexpected before the scan is left to the decoder (`true`).
fn jpeg_has_end(bytes: &[u8]) -> bool {
    let mut pos = 2;
    loop {
        if bytes.get(pos) != Some(&0xFF) {
            return true;
        }
        while bytes.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = bytes.get(pos) else {
            return false;
        };
        pos += 1;
        match marker {
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 => return true,
            _ => {}
        }
        let Some(&[a, b]) = bytes.get(pos..pos + 2) else {
            return false;
        };
        let len = usize::from(u16::from_be_bytes([a, b])).max(2);
        if marker == 0xDA {
            return bytes
                .get(pos + len..)
                .is_some_and(|scan| scan.windows(2).any(|w| w == [0xFF, 0xD9]));
        }
        pos += len;
    }
}

/// A message that says what went wrong with a file of this format (`budget`: the memory budget
/// the decoder ran under).
fn image_error(format: &'static str, error: ImageError, budget: u64) -> DecodeError {
    match error {
        ImageError::Limits(_) => DecodeError::MemoryLimit { format, budget },
        ImageError::Unsupported(e) => DecodeError::Unsupported {
            format,
            detail: e.to_string(),
        },
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Damaged {
                format,
                detail: "the file ends early (truncated)".into(),
            }
        }
        other => DecodeError::Damaged {
            format,
            detail: other.to_string(),
        },
    }
}
