//! DICOM files → 8-bit images.
//!
//! Parsing is `dicom-object`'s (after [`guard`]'s structural check); frames are extracted and
//! decoded here with bounds-checked code (uncompressed, [`rle`]) or `jpeg-decoder` ([`jpeg`]),
//! because `dicom-pixeldata`'s codec adapters index and unwrap unchecked on damaged fragments
//! (and `dicom-pixeldata` would bring its default codec set). Only pure-Rust decoders are used,
//! so this builds for `wasm32-unknown-unknown`.
//!
//! Rendering rules:
//!
//! - the **middle frame** (index `frames / 2`) of a multi-frame file;
//! - greyscale (MONOCHROME1/2): stored values masked to Bits Stored (sign-extended when Pixel
//!   Representation is 1), then Rescale Slope/Intercept, then the first Window Center/Width of
//!   the header (or of the frame's functional groups), else the automatic 0.5–99.5 percentile
//!   window — see [`super::window`]; MONOCHROME1 inverted so that bright means dense as in
//!   MONOCHROME2. Modality and VOI LUT *sequences* and the VOI LUT Function are not applied;
//! - colour: RGB as is; YBR_FULL and YBR_FULL_422 converted to RGB (ITU-R BT.601 full range,
//!   as `pydicom` does); 16-bit colour scaled linearly from Bits Stored to 8 bits; PALETTE
//!   COLOR through its red, green and blue lookup tables (16-bit entries scaled linearly to 8
//!   bits; stored values outside a table take its first or last entry);
//! - refused with a message: segmented palettes and other colour models, 32-bit or
//!   floating-point pixel data, files without Pixel Data, transfer syntaxes not listed in
//!   [`SUPPORTED_TRANSFER_SYNTAXES`]: JPEG-LS (CharLS is C++), JPEG 2000 and HTJ2K (OpenJPEG is
//!   C; `openjp2` is a machine translation of it, all `unsafe`), JPEG XL (pure-Rust
//!   `jxl-oxide` exists but is large for a syntax still rare), 12-bit lossy JPEG (not in
//!   `jpeg-decoder`), video.

pub mod guard;
pub mod jpeg;
mod render;
pub mod rle;

use render::{Frame, Palette, Voi, render};

use std::borrow::Cow;

use dicom_core::value::Value;
use dicom_core::{PrimitiveValue, Tag};
use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::mem::{InMemDicomObject, InMemElement};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use image::{DynamicImage, GrayImage, RgbImage};

use super::window::{Rescale, Window, render_grey};
use super::{DecodeError, check_budget};
use guard::DataSetEncoding;

/// The transfer syntaxes this build decodes, as messages list them.
pub const SUPPORTED_TRANSFER_SYNTAXES: &str = "Implicit VR Little Endian, Explicit VR Little \
     Endian, Explicit VR Big Endian, Deflated Explicit VR Little Endian, RLE Lossless, JPEG \
     Baseline (Process 1), JPEG Extended (Process 2 & 4, 8-bit only) and JPEG Lossless \
     (Process 14, and Selection Value 1)";

/// Largest decoded frame, in bytes (the same limit as the `image` crate's).
const MAX_FRAME_BYTES: u64 = 512 << 20;

/// How a transfer syntax stores pixel data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PixelEncoding {
    Native,
    Rle,
    Jpeg,
}

/// The supported transfer syntaxes: UID → data set encoding and pixel encoding.
fn transfer_syntax(uid: &str) -> Option<(DataSetEncoding, PixelEncoding)> {
    let le = |deflated| DataSetEncoding {
        explicit_vr: true,
        big_endian: false,
        deflated,
    };
    Some(match uid {
        "1.2.840.10008.1.2" => (
            DataSetEncoding {
                explicit_vr: false,
                big_endian: false,
                deflated: false,
            },
            PixelEncoding::Native,
        ),
        "1.2.840.10008.1.2.1" => (le(false), PixelEncoding::Native),
        "1.2.840.10008.1.2.1.99" => (le(true), PixelEncoding::Native),
        "1.2.840.10008.1.2.2" => (
            DataSetEncoding {
                explicit_vr: true,
                big_endian: true,
                deflated: false,
            },
            PixelEncoding::Native,
        ),
        "1.2.840.10008.1.2.5" => (le(false), PixelEncoding::Rle),
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => (le(false), PixelEncoding::Jpeg),
        _ => return None,
    })
}

/// Where the `DICM` magic is: byte 128 after the standard preamble, or byte 0 for files
/// written without it.
pub fn magic_offset(bytes: &[u8]) -> Option<usize> {
    if bytes.get(128..132) == Some(b"DICM".as_slice()) {
        Some(128)
    } else if bytes.starts_with(b"DICM") {
        Some(0)
    } else {
        None
    }
}

/// A damaged DICOM file.
pub(crate) fn damaged(detail: String) -> DecodeError {
    DecodeError::Damaged {
        format: "DICOM",
        detail,
    }
}

/// A DICOM file using something this build does not decode.
pub(crate) fn unsupported(detail: String) -> DecodeError {
    DecodeError::Unsupported {
        format: "DICOM",
        detail,
    }
}

/// Decodes a DICOM file; `data` starts at its `DICM` magic.
pub(crate) fn decode(data: &[u8]) -> Result<DynamicImage, DecodeError> {
    let meta = guard::read_meta(data).map_err(damaged)?;
    let Some((encoding, pixels)) = transfer_syntax(&meta.transfer_syntax) else {
        let name = TransferSyntaxRegistry
            .get(&meta.transfer_syntax)
            .map_or("(unknown)", |ts| ts.name());
        return Err(DecodeError::UnsupportedTransferSyntax {
            uid: meta.transfer_syntax,
            name: name.to_string(),
        });
    };
    guard::check_data_set(data, meta.data_set_offset, encoding)?;
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .from_reader(data)
        .map_err(|e| damaged(error_chain(&e)))?;
    let info = ImageInfo::read(&object)?;
    let palette = if info.photometric == "PALETTE COLOR" {
        Some(Palette::read(&object)?)
    } else {
        None
    };
    let frame_index = info.frames / 2;
    let pixel_data = object
        .get(tags::PIXEL_DATA)
        .ok_or_else(|| damaged("Pixel Data is missing".into()))?;
    let frame = match pixels {
        PixelEncoding::Native => native_frame(pixel_data, &info, frame_index, encoding)?,
        PixelEncoding::Rle => {
            let fragment = single_fragment(pixel_data, &info, frame_index)?;
            let data = rle::decode_frame(
                fragment,
                info.pixels(),
                usize::from(info.samples),
                info.bytes_per_sample(),
            )
            .map_err(damaged)?;
            Frame {
                data: Cow::Owned(data),
                bytes_per_sample: info.bytes_per_sample(),
                planar: false,
                photometric: info.photometric.clone(),
            }
        }
        PixelEncoding::Jpeg => {
            let stream = jpeg_stream(pixel_data, &info, frame_index)?;
            let decoded = jpeg::decode_frame(&stream, info.rows, info.columns, &info.photometric)?;
            if decoded.samples != usize::from(info.samples) {
                return Err(damaged(format!(
                    "a JPEG frame has {} components but Samples per Pixel is {}",
                    decoded.samples, info.samples
                )));
            }
            Frame {
                data: Cow::Owned(decoded.data),
                bytes_per_sample: decoded.bytes_per_sample,
                planar: false,
                // The decoder delivers RGB for three components.
                photometric: if decoded.samples == 3 {
                    "RGB".into()
                } else {
                    info.photometric.clone()
                },
            }
        }
    };
    let voi = Voi::read(&object, frame_index);
    render(&info, &frame, &voi, palette.as_ref())
}

/// The message of an error and its causes (`dicom-object`'s top-level messages are terse).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        message.push_str(": ");
        message.push_str(&e.to_string());
        source = e.source();
    }
    message
}

/// Image Pixel module attributes (PS3.3 C.7.6.3) this decoder needs.
#[derive(Clone, Debug)]
struct ImageInfo {
    rows: u32,
    columns: u32,
    frames: u32,
    samples: u16,
    bits_allocated: u16,
    bits_stored: u16,
    high_bit: u16,
    signed: bool,
    planar: bool,
    photometric: String,
}

impl ImageInfo {
    fn read(object: &InMemDicomObject) -> Result<ImageInfo, DecodeError> {
        if object.get(tags::PIXEL_DATA).is_none() {
            let detail = if object.get(tags::FLOAT_PIXEL_DATA).is_some()
                || object.get(tags::DOUBLE_FLOAT_PIXEL_DATA).is_some()
            {
                "floating-point pixel data is not supported"
            } else {
                "the file has no image (no Pixel Data): it may be a report, a structure set \
                 or a waveform"
            };
            return Err(unsupported(detail.into()));
        }
        let rows = required_u16(object, tags::ROWS, "Rows")?;
        let columns = required_u16(object, tags::COLUMNS, "Columns")?;
        if rows == 0 || columns == 0 {
            return Err(DecodeError::NoPixels {
                width: columns.into(),
                height: rows.into(),
            });
        }
        check_budget(columns.into(), rows.into())?;
        let frames = match object.get(tags::NUMBER_OF_FRAMES) {
            None => 1,
            Some(e) if is_empty(e) => 1,
            Some(e) => match e.to_int::<i64>() {
                Ok(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
                _ => return Err(damaged("Number of Frames is not a positive number".into())),
            },
        };
        let samples = optional_u16(object, tags::SAMPLES_PER_PIXEL)?.unwrap_or(1);
        let bits_allocated = required_u16(object, tags::BITS_ALLOCATED, "Bits Allocated")?;
        let bits_stored = optional_u16(object, tags::BITS_STORED)?.unwrap_or(bits_allocated);
        let high_bit =
            optional_u16(object, tags::HIGH_BIT)?.unwrap_or(bits_stored.saturating_sub(1));
        let signed = optional_u16(object, tags::PIXEL_REPRESENTATION)?.unwrap_or(0) == 1;
        let planar = optional_u16(object, tags::PLANAR_CONFIGURATION)?.unwrap_or(0) == 1;
        let photometric = match object.get(tags::PHOTOMETRIC_INTERPRETATION) {
            Some(e) => e
                .to_str()
                .map(|s| s.trim_end_matches([' ', '\0']).to_uppercase())
                .unwrap_or_default(),
            None => String::new(),
        };
        let photometric = match (photometric.as_str(), samples) {
            ("", 1) => "MONOCHROME2".to_string(),
            ("", 3) => "RGB".to_string(),
            _ => photometric,
        };
        let info = ImageInfo {
            rows: rows.into(),
            columns: columns.into(),
            frames,
            samples,
            bits_allocated,
            bits_stored,
            high_bit,
            signed,
            planar,
            photometric,
        };
        info.check()?;
        Ok(info)
    }

    /// Refuses what [`render`] cannot show, with a message naming it.
    fn check(&self) -> Result<(), DecodeError> {
        match (self.photometric.as_str(), self.samples) {
            ("MONOCHROME1" | "MONOCHROME2" | "PALETTE COLOR", 1) => {}
            ("RGB" | "YBR_FULL" | "YBR_FULL_422", 3) => {}
            (pi, n) => {
                return Err(unsupported(format!(
                    "Photometric Interpretation {pi:?} with {n} sample(s) per pixel is not \
                     supported (MONOCHROME1/2, PALETTE COLOR, RGB, YBR_FULL and YBR_FULL_422 \
                     are)"
                )));
            }
        }
        match self.bits_allocated {
            1 if self.samples == 1 => {}
            8 | 16 => {}
            n => {
                return Err(unsupported(format!(
                    "{n} bits allocated per sample are not supported (1, 8 and 16 are)"
                )));
            }
        }
        let bits = if self.bits_allocated == 1 {
            1
        } else {
            self.bits_allocated
        };
        if self.bits_stored == 0
            || self.bits_stored > bits
            || self.high_bit >= bits
            || self.high_bit + 1 < self.bits_stored
        {
            return Err(damaged(format!(
                "inconsistent bit layout: {} bits allocated, {} stored, high bit {}",
                self.bits_allocated, self.bits_stored, self.high_bit
            )));
        }
        let frame_bytes = self.pixels() as u64 * u64::from(self.samples) * 2;
        if frame_bytes > MAX_FRAME_BYTES {
            return Err(DecodeError::MemoryLimit {
                format: "DICOM",
                budget: MAX_FRAME_BYTES,
            });
        }
        Ok(())
    }

    fn pixels(&self) -> usize {
        self.rows as usize * self.columns as usize
    }

    /// Bytes per sample of uncompressed data (1-bit data is expanded to one byte each).
    fn bytes_per_sample(&self) -> usize {
        if self.bits_allocated == 16 { 2 } else { 1 }
    }
}

fn is_empty(element: &InMemElement) -> bool {
    matches!(element.value(), Value::Primitive(PrimitiveValue::Empty))
}

fn optional_u16(object: &InMemDicomObject, tag: Tag) -> Result<Option<u16>, DecodeError> {
    match object.get(tag) {
        None => Ok(None),
        Some(e) if is_empty(e) => Ok(None),
        Some(e) => e
            .to_int::<u16>()
            .map(Some)
            .map_err(|_| damaged(format!("{tag} is not a valid number"))),
    }
}

fn required_u16(object: &InMemDicomObject, tag: Tag, name: &str) -> Result<u16, DecodeError> {
    optional_u16(object, tag)?.ok_or_else(|| damaged(format!("{name} is missing")))
}

/// Frame `index` of uncompressed pixel data.
fn native_frame<'a>(
    pixel_data: &'a InMemElement,
    info: &ImageInfo,
    index: u32,
    encoding: DataSetEncoding,
) -> Result<Frame<'a>, DecodeError> {
    let Value::Primitive(value) = pixel_data.value() else {
        return Err(damaged(
            "Pixel Data is encapsulated, but the transfer syntax is uncompressed".into(),
        ));
    };
    let bytes = value.to_bytes();
    let short = || {
        damaged(format!(
            "Pixel Data holds {} bytes, too few for frame {} of {}×{}×{} samples",
            bytes.len(),
            index + 1,
            info.columns,
            info.rows,
            info.samples
        ))
    };
    let samples_per_frame = info.pixels() as u64 * u64::from(info.samples);
    if info.bits_allocated == 1 {
        // Bits packed across frames, least significant bit first; expanded to 0/1 bytes.
        let first = samples_per_frame * u64::from(index);
        let last_byte = (first + samples_per_frame).div_ceil(8);
        if last_byte > bytes.len() as u64 {
            return Err(short());
        }
        let data = (first..first + samples_per_frame)
            .map(|bit| (bytes[(bit / 8) as usize] >> (bit % 8)) & 1)
            .collect();
        return Ok(Frame {
            data: Cow::Owned(data),
            bytes_per_sample: 1,
            planar: false,
            photometric: info.photometric.clone(),
        });
    }
    let bytes_per_sample = info.bytes_per_sample() as u64;
    let frame_len = if info.photometric == "YBR_FULL_422" {
        if !info.columns.is_multiple_of(2) {
            return Err(damaged(
                "YBR_FULL_422 needs an even number of columns".into(),
            ));
        }
        info.pixels() as u64 * 2 * bytes_per_sample
    } else {
        samples_per_frame * bytes_per_sample
    };
    let start = frame_len * u64::from(index);
    let end = start + frame_len;
    if end > bytes.len() as u64 {
        return Err(short());
    }
    let (start, end) = (start as usize, end as usize);
    // 8-bit samples read as 16-bit words from a big-endian file are byte-swapped pairs.
    let swapped_words =
        encoding.big_endian && bytes_per_sample == 1 && matches!(value, PrimitiveValue::U16(_));
    let data = match bytes {
        Cow::Borrowed(b) if !swapped_words => Cow::Borrowed(&b[start..end]),
        b => {
            let mut frame = b[start..end].to_vec();
            if swapped_words {
                for pair in frame.chunks_exact_mut(2) {
                    pair.swap(0, 1);
                }
            }
            Cow::Owned(frame)
        }
    };
    Ok(Frame {
        data,
        bytes_per_sample: bytes_per_sample as usize,
        planar: info.planar,
        photometric: info.photometric.clone(),
    })
}

/// The fragments of encapsulated pixel data.
fn fragments(pixel_data: &InMemElement) -> Result<(&[Vec<u8>], &[u32]), DecodeError> {
    match pixel_data.value() {
        Value::PixelSequence(seq) => Ok((seq.fragments(), seq.offset_table())),
        _ => Err(damaged(
            "Pixel Data is not encapsulated, but the transfer syntax is compressed".into(),
        )),
    }
}

/// RLE: exactly one fragment per frame.
fn single_fragment<'a>(
    pixel_data: &'a InMemElement,
    info: &ImageInfo,
    index: u32,
) -> Result<&'a [u8], DecodeError> {
    let (fragments, _) = fragments(pixel_data)?;
    if fragments.len() as u64 != u64::from(info.frames) {
        return Err(damaged(format!(
            "RLE Pixel Data has {} fragments for {} frames",
            fragments.len(),
            info.frames
        )));
    }
    fragments
        .get(index as usize)
        .map(Vec::as_slice)
        .ok_or_else(|| damaged("an RLE frame is missing".into()))
}

/// JPEG: the bytes of frame `index`. One frame takes all fragments; otherwise one fragment per
/// frame, or frames located by the Basic Offset Table, or by the start-of-image marker that
/// begins each frame's first fragment.
fn jpeg_stream<'a>(
    pixel_data: &'a InMemElement,
    info: &ImageInfo,
    index: u32,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let (fragments, offsets) = fragments(pixel_data)?;
    let concat = |parts: &[Vec<u8>]| -> Cow<'a, [u8]> { Cow::Owned(parts.concat()) };
    if fragments.is_empty() {
        return Err(damaged("Pixel Data has no fragments".into()));
    }
    if info.frames == 1 {
        return Ok(match fragments {
            [only] => Cow::Borrowed(only.as_slice()),
            many => concat(many),
        });
    }
    if fragments.len() as u64 == u64::from(info.frames) {
        return Ok(fragments
            .get(index as usize)
            .map(|f| Cow::Borrowed(f.as_slice()))
            .unwrap_or_default());
    }
    // Group fragments into frames: by the offset table when it has one entry per frame,
    // else by start-of-image markers.
    let mut starts: Vec<usize> = Vec::new();
    if offsets.len() as u64 == u64::from(info.frames) {
        let mut position = 0u64;
        let mut next = offsets.iter().peekable();
        for (i, fragment) in fragments.iter().enumerate() {
            if next.peek().is_some_and(|&&o| u64::from(o) == position) {
                next.next();
                starts.push(i);
            }
            position += 8 + fragment.len() as u64;
        }
        if next.peek().is_some() {
            starts.clear();
        }
    }
    if starts.len() as u64 != u64::from(info.frames) {
        starts = fragments
            .iter()
            .enumerate()
            .filter(|(_, f)| f.starts_with(&[0xFF, 0xD8]))
            .map(|(i, _)| i)
            .collect();
    }
    if starts.len() as u64 != u64::from(info.frames) || starts.first() != Some(&0) {
        return Err(damaged(format!(
            "cannot find frame {} of {} among {} JPEG fragments",
            index + 1,
            info.frames,
            fragments.len()
        )));
    }
    let i = index as usize;
    let from = starts[i];
    let to = starts.get(i + 1).copied().unwrap_or(fragments.len());
    Ok(concat(&fragments[from..to]))
}

#[cfg(test)]
mod tests;
