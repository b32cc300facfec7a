//! JPEG-compressed DICOM frames (Baseline, Extended 8-bit, Lossless) through `jpeg-decoder`,
//! the pure-Rust decoder `dicom-rs` itself uses. The frame header is read here first, so the
//! size, bit depth and colour model are checked against the DICOM header before anything is
//! decoded (and `jpeg_decoder::Decoder::info`, which panics on unusual component counts, is
//! never called).

use jpeg_decoder::{ColorTransform, Decoder};

use super::{damaged, unsupported};
use crate::formats::DecodeError;

/// What a JPEG stream's frame header (SOFn) and application markers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegHeader {
    /// Bits per sample.
    pub precision: u8,
    /// Lines.
    pub height: u16,
    /// Samples per line.
    pub width: u16,
    /// Number of components.
    pub components: u8,
    /// Lossless process (SOF3, SOF7, SOF11, SOF15).
    pub lossless: bool,
    /// A JFIF (APP0) marker is present: 3 components are YCbCr.
    pub jfif: bool,
    /// The Adobe (APP14) marker's transform flag, if present (1: YCbCr).
    pub adobe_transform: Option<u8>,
}

/// Reads markers up to the frame header.
pub fn read_header(data: &[u8]) -> Result<JpegHeader, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("a JPEG frame does not start with a JPEG start-of-image marker".into());
    }
    let mut pos = 2;
    let mut jfif = false;
    let mut adobe_transform = None;
    loop {
        if data.get(pos) != Some(&0xFF) {
            return Err("a JPEG frame has bytes where a marker should be".into());
        }
        while data.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *data
            .get(pos)
            .ok_or("a JPEG frame ends before its frame header")?;
        pos += 1;
        match marker {
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => return Err("a JPEG frame has no frame header before its data".into()),
            _ => {}
        }
        let len = match data.get(pos..pos + 2) {
            Some(&[a, b]) => usize::from(u16::from_be_bytes([a, b])),
            _ => return Err("a JPEG frame ends inside a marker".into()),
        };
        let segment = data
            .get(pos + 2..pos + len.max(2))
            .ok_or("a JPEG frame ends inside a marker segment")?;
        match marker {
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let &[precision, h1, h0, w1, w0, components, ..] = segment else {
                    return Err("a JPEG frame header is too short".into());
                };
                return Ok(JpegHeader {
                    precision,
                    height: u16::from_be_bytes([h1, h0]),
                    width: u16::from_be_bytes([w1, w0]),
                    components,
                    lossless: matches!(marker, 0xC3 | 0xC7 | 0xCB | 0xCF),
                    jfif,
                    adobe_transform,
                });
            }
            0xE0 if segment.starts_with(b"JFIF\0") => jfif = true,
            0xEE if segment.starts_with(b"Adobe") => adobe_transform = segment.get(11).copied(),
            _ => {}
        }
        pos += len.max(2);
    }
}

/// One decoded frame: interleaved little-endian samples.
#[derive(Clone, Debug)]
pub struct JpegFrame {
    /// The samples.
    pub data: Vec<u8>,
    /// Components per pixel (1 or 3; 3 is RGB).
    pub samples: usize,
    /// 1 or 2.
    pub bytes_per_sample: usize,
}

/// Decodes one JPEG frame of a DICOM image of `rows × columns`, whose Photometric
/// Interpretation is `photometric` (which says whether 3 components are RGB or YCbCr).
pub fn decode_frame(
    data: &[u8],
    rows: u32,
    columns: u32,
    photometric: &str,
) -> Result<JpegFrame, DecodeError> {
    let header = read_header(data).map_err(damaged)?;
    if (u32::from(header.width), u32::from(header.height)) != (columns, rows) {
        return Err(damaged(format!(
            "a JPEG frame is {}×{} but the DICOM header says {columns}×{rows}",
            header.width, header.height
        )));
    }
    if !header.lossless && header.precision != 8 {
        return Err(unsupported(format!(
            "{}-bit lossy JPEG is not supported (8-bit lossy JPEG and JPEG Lossless are)",
            header.precision
        )));
    }
    if !(2..=16).contains(&header.precision) {
        return Err(damaged(format!(
            "a JPEG frame has {}-bit samples",
            header.precision
        )));
    }
    let samples = match header.components {
        1 => 1,
        3 => 3,
        4 => return Err(unsupported("CMYK JPEG frames are not supported".into())),
        n => return Err(damaged(format!("a JPEG frame has {n} components"))),
    };
    let bytes_per_sample = if samples == 1 && header.precision > 8 {
        2
    } else {
        1
    };
    let expected = (rows as usize)
        .checked_mul(columns as usize)
        .and_then(|n| n.checked_mul(samples * bytes_per_sample))
        .ok_or_else(|| damaged("a JPEG frame is too large".into()))?;

    let mut decoder = Decoder::new(data);
    decoder.set_max_decoding_buffer_size(expected);
    if samples == 3 {
        // DICOM's Photometric Interpretation is authoritative: YBR means the components are
        // YCbCr; RGB means they are RGB unless the stream itself marks them as YCbCr.
        if photometric.starts_with("YBR") {
            decoder.set_color_transform(ColorTransform::YCbCr);
        } else if !header.jfif && header.adobe_transform != Some(1) {
            decoder.set_color_transform(ColorTransform::RGB);
        }
    }
    let mut pixels = decoder.decode().map_err(|e| match e {
        jpeg_decoder::Error::Unsupported(feature) => unsupported(format!(
            "this JPEG frame uses {feature:?}, which is not supported"
        )),
        other => damaged(format!("a JPEG frame cannot be decoded: {other}")),
    })?;
    if pixels.len() != expected {
        return Err(damaged(format!(
            "a JPEG frame decoded to {} bytes instead of {expected}",
            pixels.len()
        )));
    }
    if bytes_per_sample == 2 {
        // `jpeg-decoder` writes 16-bit samples in native byte order.
        for pair in pixels.chunks_exact_mut(2) {
            let v = u16::from_ne_bytes([pair[0], pair[1]]);
            pair.copy_from_slice(&v.to_le_bytes());
        }
    }
    Ok(JpegFrame {
        data: pixels,
        samples,
        bytes_per_sample,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_of_an_encoded_jpeg() {
        let image = image::RgbImage::from_pixel(17, 9, image::Rgb([200, 10, 10]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut bytes, image::ImageFormat::Jpeg)
            .expect("encodes");
        let header = read_header(bytes.get_ref()).expect("reads");
        assert_eq!(
            (
                header.width,
                header.height,
                header.components,
                header.precision
            ),
            (17, 9, 3, 8)
        );
        assert!(!header.lossless);
        let frame = decode_frame(bytes.get_ref(), 9, 17, "YBR_FULL_422").expect("decodes");
        assert_eq!((frame.samples, frame.bytes_per_sample), (3, 1));
        assert!(
            (i32::from(frame.data[0]) - 200).abs() < 8,
            "{:?}",
            &frame.data[..3]
        );
        // The DICOM header must agree with the stream.
        assert!(decode_frame(bytes.get_ref(), 10, 17, "YBR_FULL_422").is_err());
    }

    #[test]
    fn broken_streams_are_errors() {
        for bad in [
            &b""[..],
            b"\xff\xd8",
            b"\xff\xd8\xff",
            b"\xff\xd8\xff\xe0\x00",
            b"\xff\xd8\xff\xe0\x00\x10JFIF",
            b"\xff\xd8\xff\xda\x00\x02",
            b"\xff\xd8\xff\xc0\x00\x05\x08\x00",
            b"\xff\xd8\x00\x00",
        ] {
            assert!(read_header(bad).is_err(), "{bad:?}");
            assert!(decode_frame(bad, 1, 1, "MONOCHROME2").is_err());
        }
        // A two-component frame header (which `Decoder::info` would panic on).
        let two = b"\xff\xd8\xff\xc0\x00\x0e\x08\x00\x01\x00\x01\x02\x01\x11\x00\x02\x11\x00";
        assert_eq!(read_header(two).map(|h| h.components), Ok(2));
        assert!(matches!(
            decode_frame(two, 1, 1, "MONOCHROME2"),
            Err(DecodeError::Damaged { .. })
        ));
    }
}
