//! Medical and everyday image files → an 8-bit greyscale or RGB image, ready for
//! [`crate::preprocess`]. One entry point, [`decode_8bit`], shared by the app, the CLI and the
//! tests; the format is sniffed from the content, never from a file name.
//!
//! - **PNG, JPEG, TIFF** (`image` crate): 8-bit greyscale and RGB as stored; alpha dropped (not
//!   composited); 16-bit greyscale through the automatic percentile window ([`window`]);
//!   16-bit colour scaled linearly; CMYK JPEG converted to RGB; animated PNG and multi-page
//!   TIFF: the first frame or page.
//! - **DICOM** (`dicom-object`, pure-Rust codecs only; see [`dicom`] for the transfer
//!   syntaxes): rescale, the header's window (else the automatic one), MONOCHROME1 inverted,
//!   the middle frame of a multi-frame file, YBR and palette colour converted to RGB.
//! - A **pixel budget** ([`MAX_PIXELS`]): anything whose header declares more pixels is refused
//!   before decoding, in bounded time and memory.
//!
//! Every failure is a [`DecodeError`] whose message says what the file is and what is
//! supported; nothing a file contains can make this module panic.

pub mod dicom;
mod raster;
pub mod window;

use image::{DynamicImage, ImageFormat};

/// Most pixels (width × height, of one frame) an image may declare: 100 megapixels, e.g.
/// 10 000 × 10 000. Larger headers are refused before decoding (a 50 000 × 50 000 PNG "bomb"
/// of a few hundred bytes would otherwise ask for gigabytes).
pub const MAX_PIXELS: u64 = 100_000_000;

/// Memory a file's decoding may allocate, in bytes, for an image (one frame) of `pixels`
/// pixels: 16 bytes per pixel (room for 16-bit RGBA and one working copy) plus 32 MiB for
/// metadata and the decoders' own buffers, and never more than 512 MiB. Metadata that would
/// inflate beyond it (a PNG colour profile, a deflated DICOM data set, TIFF tag values) is
/// refused with [`DecodeError::MemoryLimit`], so a small file cannot make the decoder allocate
/// hundreds of megabytes for a small picture.
pub fn memory_budget(pixels: u64) -> u64 {
    pixels
        .saturating_mul(16)
        .saturating_add(METADATA_BUDGET)
        .min(MAX_DECODE_BYTES)
}

/// The constant part of [`memory_budget`]: 32 MiB.
pub const METADATA_BUDGET: u64 = 32 << 20;

/// The most [`memory_budget`] gives any file: 512 MiB.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

/// Identifies the decoding rules of this module (which files decode, and to which 8-bit
/// pixels). Part of the embedding cache keys ([`crate::embeddings::cache_key`]), so that a
/// change here (16-bit PNGs, windowed since v1, were plainly scaled before; since v2 the EXIF
/// or TIFF orientation is applied, and tiled LZW TIFFs decode) recomputes
/// the embeddings of the affected images instead of reusing stale ones. Unlike
/// [`crate::embeddings::PREPROCESSING_ID`] it is not written into model files: 8-bit images,
/// what models were trained on so far, decode exactly as before.
pub const DECODER_ID: &str = "formats-v2";

/// The formats [`decode_8bit`] reads, as messages name them.
pub const SUPPORTED_FORMATS: &str = "PNG, JPEG, TIFF and DICOM";

/// Why a file could not be decoded. Messages are meant for the person who picked the file.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty file (0 bytes)")]
    Empty,
    /// Recognisably something other than an image (a PDF, a text file, an archive...).
    #[error("cannot decode the file: it is {0}, not an image ({SUPPORTED_FORMATS} are supported)")]
    NotAnImage(&'static str),
    /// Not a format this build knows at all.
    #[error(
        "cannot decode the file: it is not in a recognised image format ({SUPPORTED_FORMATS} are supported)"
    )]
    Unrecognised,
    /// An image format, but not one this build decodes (GIF, WebP, ...).
    #[error("cannot decode {0} images ({SUPPORTED_FORMATS} are supported)")]
    UnsupportedFormat(&'static str),
    /// A supported format whose content is broken or cut short.
    #[error("cannot decode the {format} image: it is damaged or truncated ({detail})")]
    Damaged {
        /// "PNG", "JPEG", "TIFF" or "DICOM".
        format: &'static str,
        /// What the decoder found.
        detail: String,
    },
    /// A supported format using a feature this build does not decode (a colour model, a bit
    /// depth, a compression).
    #[error("cannot decode the {format} image: {detail}")]
    Unsupported {
        /// "PNG", "JPEG", "TIFF" or "DICOM".
        format: &'static str,
        /// What is not supported, and what is.
        detail: String,
    },
    /// A DICOM file whose transfer syntax (compression) needs a codec this build lacks.
    #[error(
        "cannot decode the DICOM file: its transfer syntax {name} ({uid}) is not supported; supported are {}",
        dicom::SUPPORTED_TRANSFER_SYNTAXES
    )]
    UnsupportedTransferSyntax {
        /// The transfer syntax UID.
        uid: String,
        /// Its name, or "unknown".
        name: String,
    },
    /// The header declares more pixels than [`MAX_PIXELS`].
    #[error(
        "the image is too large: {width}×{height} is {:.1} megapixels, over the budget of {} megapixels",
        megapixels(*.width, *.height),
        MAX_PIXELS / 1_000_000
    )]
    TooLarge {
        /// Declared width.
        width: u64,
        /// Declared height.
        height: u64,
    },
    /// Decoding would need more memory than the file's budget ([`memory_budget`]): the picture
    /// itself is too large for it, or metadata (a colour profile, text, tags) would inflate far
    /// beyond what its pixels need.
    #[error(
        "cannot decode the {format} image: decoding it would need more than its memory budget \
         of {} MiB (16 bytes per pixel plus 32 MiB, at most 512 MiB); metadata such as a \
         colour profile or text that inflates beyond that is refused",
        budget >> 20
    )]
    MemoryLimit {
        /// The format.
        format: &'static str,
        /// The budget that would have been exceeded, in bytes.
        budget: u64,
    },
    /// The image declares no pixels.
    #[error("the image has no pixels ({width}×{height})")]
    NoPixels {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
}

/// The file formats [`decode_8bit`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// PNG.
    Png,
    /// JPEG (JFIF, EXIF or plain).
    Jpeg,
    /// TIFF.
    Tiff,
    /// DICOM Part 10 file (`DICM` at byte 128, or at byte 0 when the preamble is missing).
    Dicom,
}

/// Which supported format `bytes` are in, from their content alone (`None`: not one of them).
/// Lets a caller accept extensionless DICOM files.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if dicom::magic_offset(bytes).is_some() {
        return Some(Format::Dicom);
    }
    match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => Some(Format::Png),
        Ok(ImageFormat::Jpeg) => Some(Format::Jpeg),
        Ok(ImageFormat::Tiff) => Some(Format::Tiff),
        _ => None,
    }
}

/// Decodes a PNG, JPEG, TIFF or DICOM file into an 8-bit image: [`DynamicImage::ImageLuma8`]
/// for greyscale, [`DynamicImage::ImageRgb8`] for colour. See the module documentation for the
/// rules; any failure is a [`DecodeError`] saying why.
pub fn decode_8bit(bytes: &[u8]) -> Result<DynamicImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if let Some(offset) = dicom::magic_offset(bytes) {
        return dicom::decode(&bytes[offset..]);
    }
    match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Tiff)) => {
            raster::decode(bytes, format)
        }
        Ok(other) => Err(DecodeError::UnsupportedFormat(raster::format_name(other))),
        Err(_) => Err(not_an_image(bytes)),
    }
}

fn megapixels(width: u64, height: u64) -> f64 {
    width as f64 * height as f64 / 1e6
}

/// Refuses `width × height` above [`MAX_PIXELS`].
pub(crate) fn check_budget(width: u64, height: u64) -> Result<(), DecodeError> {
    if width.saturating_mul(height) > MAX_PIXELS {
        Err(DecodeError::TooLarge { width, height })
    } else {
        Ok(())
    }
}

/// Names a few common non-image files, so the message can say what was picked by mistake.
fn not_an_image(bytes: &[u8]) -> DecodeError {
    let kind = if bytes.starts_with(b"%PDF-") {
        "a PDF document"
    } else if bytes.starts_with(b"PK\x03\x04") {
        "a ZIP archive"
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        "gzip-compressed data (a .gz file)"
    } else if bytes
        .get(344..348)
        .is_some_and(|m| m == b"n+1\0" || m == b"ni1\0")
        || bytes.get(4..8).is_some_and(|m| m == b"n+2\0")
    {
        "a NIfTI volume (NIfTI is not supported; export slices as DICOM or PNG)"
    } else if looks_like_bare_dicom(bytes) {
        "a DICOM data set without the DICOM file header (\"DICM\"); only DICOM files \
         (Part 10) are supported"
    } else if looks_like_text(bytes) {
        "a text file"
    } else {
        return DecodeError::Unrecognised;
    };
    DecodeError::NotAnImage(kind)
}

/// A DICOM data set written without preamble and file meta group (old ACR-NEMA style): it
/// starts with a group 0008 element, in explicit VR (two capital letters) or implicit VR.
fn looks_like_bare_dicom(bytes: &[u8]) -> bool {
    match bytes.get(..8) {
        Some([0x08, 0x00, _, 0x00, a, b, ..]) => {
            (a.is_ascii_uppercase() && b.is_ascii_uppercase()) || bytes.get(6..8) == Some(&[0, 0])
        }
        _ => false,
    }
}

/// UTF-8 text without control characters (other than whitespace) in its first kilobyte.
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        // A multi-byte character cut at the end of the sample is fine.
        Err(e) if e.error_len().is_none() => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(text) => text,
            Err(_) => return false,
        },
        Err(_) => return false,
    };
    !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

#[cfg(test)]
mod tests;
