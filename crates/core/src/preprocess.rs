//! Turning image files into network inputs — the one preprocessing shared by the browser app,
//! the CLI and the tests, so that training and inference always see identical pixels.
//!
//! decode to 8 bits ([`crate::formats`]: PNG, JPEG, TIFF, DICOM) → RGB (greyscale replicated)
//! → the whole image resized to 224×224 (no crop, aspect ratio not kept, bilinear "triangle"
//! filter, rounded to 8 bits) → `(x − 127) / 128` per channel for `x` in 0..=255 → flat CHW
//! `f32`s.
//!
//! This matches what the EfficientNet-Lite weights were trained on (inputs in about [−1, 1])
//! and the reference implementation's preprocessing (Pillow `convert('RGB')`, `resize(BILINEAR)`).
//! Resamplers differ slightly between libraries; an image that is already 224×224 is used as is,
//! so such inputs are reproduced exactly.

use burn::tensor::{Device, Tensor, TensorData};
use image::{DynamicImage, RgbImage, imageops::FilterType};

use crate::efficientnet::{IMAGE_CHANNELS, IMAGE_SIZE};
use crate::formats::{DecodeError, decode_8bit};

/// Number of `f32`s in one preprocessed image: 3 × 224 × 224.
pub const INPUT_LEN: usize = IMAGE_CHANNELS * IMAGE_SIZE * IMAGE_SIZE;

/// Why an image could not be turned into a network input.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The file could not be decoded (empty, not an image, damaged, unsupported, too large):
    /// the message says which.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The image decoded, but its thumbnail could not be encoded.
    #[error("cannot make the image's thumbnail: {0}")]
    Thumbnail(String),
    /// The image decoded but has no pixels.
    #[error("the image has no pixels ({width}×{height})")]
    NoPixels {
        /// Decoded width.
        width: u32,
        /// Decoded height.
        height: u32,
    },
    /// [`batch_to_tensor`] was given no images.
    #[error("no images to batch")]
    EmptyBatch,
    /// [`batch_to_tensor`] was given something that is not a preprocessed image.
    #[error("input {index} has {len} values, expected {INPUT_LEN} (3×224×224)")]
    WrongLength {
        /// Position in the batch.
        index: usize,
        /// Its length.
        len: usize,
    },
}

/// The network's normalisation of one 8-bit channel value: `(x − 127) / 128`, in about [−1, 1].
pub fn normalize_channel(x: u8) -> f32 {
    (f32::from(x) - 127.0) / 128.0
}

/// Decodes a PNG, JPEG, TIFF or DICOM file (format sniffed from the content, not a file name)
/// into an 8-bit greyscale or RGB image: [`crate::formats::decode_8bit`]. Never panics on
/// malformed input; images over the pixel budget are refused from their header.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, PreprocessError> {
    Ok(decode_8bit(bytes)?)
}

/// The RGB 224×224 image the network sees: greyscale replicated to three channels, alpha
/// dropped, the whole image resized with a bilinear (triangle) filter unless it already is
/// 224×224.
pub fn resize_for_network(image: &DynamicImage) -> Result<RgbImage, PreprocessError> {
    let (width, height) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return Err(PreprocessError::NoPixels { width, height });
    }
    let rgb = image.to_rgb8();
    let size = IMAGE_SIZE as u32;
    if (width, height) == (size, size) {
        Ok(rgb)
    } else {
        Ok(image::imageops::resize(
            &rgb,
            size,
            size,
            FilterType::Triangle,
        ))
    }
}

/// Flat CHW `f32`s (`INPUT_LEN` of them) of an RGB image, normalised with
/// [`normalize_channel`]. The image should be 224×224 (see [`resize_for_network`]); any size is
/// laid out as `3 × height × width`.
pub fn rgb_to_chw(image: &RgbImage) -> Vec<f32> {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let mut out = vec![0.0f32; IMAGE_CHANNELS * width * height];
    let plane = width * height;
    for (i, pixel) in image.pixels().enumerate() {
        for channel in 0..IMAGE_CHANNELS {
            out[channel * plane + i] = normalize_channel(pixel.0[channel]);
        }
    }
    out
}

/// Preprocesses an already decoded image: RGB, 224×224, normalised, flat CHW.
pub fn preprocess_decoded(image: &DynamicImage) -> Result<Vec<f32>, PreprocessError> {
    Ok(rgb_to_chw(&resize_for_network(image)?))
}

/// Preprocesses the bytes of a PNG, JPEG, TIFF or DICOM file into one network input: [`INPUT_LEN`] `f32`s,
/// channel-major (CHW). The single entry point for the app, the CLI and the tests.
pub fn preprocess_image(bytes: &[u8]) -> Result<Vec<f32>, PreprocessError> {
    preprocess_decoded(&decode_image(bytes)?)
}

/// Stacks preprocessed images into one `[N, 3, 224, 224]` tensor on `device`.
pub fn batch_to_tensor(images: &[Vec<f32>], device: &Device) -> Result<Tensor<4>, PreprocessError> {
    if images.is_empty() {
        return Err(PreprocessError::EmptyBatch);
    }
    let mut flat = Vec::with_capacity(images.len() * INPUT_LEN);
    for (index, image) in images.iter().enumerate() {
        if image.len() != INPUT_LEN {
            return Err(PreprocessError::WrongLength {
                index,
                len: image.len(),
            });
        }
        flat.extend_from_slice(image);
    }
    let data = TensorData::new(flat, [images.len(), IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE]);
    Ok(Tensor::from_data(data, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, Luma, Rgb, RgbaImage};
    use std::io::Cursor;

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).expect("encodes");
        bytes.into_inner()
    }

    #[test]
    fn normalisation_is_exact() {
        assert_eq!(normalize_channel(127), 0.0);
        assert_eq!(normalize_channel(255), 1.0);
        assert_eq!(normalize_channel(0), -127.0 / 128.0);
        assert_eq!(normalize_channel(191), 0.5);
        assert_eq!(normalize_channel(63), -0.5);
    }

    /// A 224×224 PNG goes through untouched: exact values, channel-major.
    #[test]
    fn exact_values_on_a_known_image() {
        let mut image = RgbImage::from_pixel(224, 224, Rgb([127, 255, 0]));
        image.put_pixel(1, 0, Rgb([191, 63, 255]));
        image.put_pixel(0, 2, Rgb([0, 0, 0]));
        let input = preprocess_image(&encode(DynamicImage::ImageRgb8(image), ImageFormat::Png))
            .expect("ok");
        assert_eq!(input.len(), INPUT_LEN);
        let plane = 224 * 224;
        // Pixel (x=0, y=0): [127, 255, 0].
        assert_eq!(
            (input[0], input[plane], input[2 * plane]),
            (0.0, 1.0, -127.0 / 128.0)
        );
        // Pixel (x=1, y=0): [191, 63, 255].
        assert_eq!(
            (input[1], input[plane + 1], input[2 * plane + 1]),
            (0.5, -0.5, 1.0)
        );
        // Pixel (x=0, y=2) is at row 2: index 2 * 224.
        let i = 2 * 224;
        let black = -127.0 / 128.0;
        assert_eq!(
            (input[i], input[plane + i], input[2 * plane + i]),
            (black, black, black)
        );
        // Everything else is the background.
        assert_eq!(input[plane - 1], 0.0);
        assert_eq!(input[2 * plane - 1], 1.0);
    }

    #[test]
    fn greyscale_is_replicated_to_three_channels() {
        let image = GrayImage::from_fn(50, 30, |x, y| Luma([(x * 5 + y) as u8]));
        let input = preprocess_image(&encode(DynamicImage::ImageLuma8(image), ImageFormat::Png))
            .expect("ok");
        let plane = 224 * 224;
        assert_eq!(&input[..plane], &input[plane..2 * plane]);
        assert_eq!(&input[..plane], &input[2 * plane..]);
        // Resized, not cropped: the corners keep the source's corner tones (dark top-left,
        // bright bottom-right).
        assert!(input[0] < input[plane - 1]);
    }

    #[test]
    fn any_size_becomes_224_and_uniform_stays_uniform() {
        for (w, h) in [(1, 1), (3, 500), (640, 480), (224, 225)] {
            let image = RgbaImage::from_pixel(w, h, image::Rgba([10, 200, 127, 30]));
            let input =
                preprocess_image(&encode(DynamicImage::ImageRgba8(image), ImageFormat::Png))
                    .expect("ok");
            assert_eq!(input.len(), INPUT_LEN);
            let plane = 224 * 224;
            // Alpha dropped, not composited; a uniform image resizes to itself.
            assert!(
                input[..plane].iter().all(|&v| v == normalize_channel(10)),
                "{w}×{h}"
            );
            assert!(
                input[plane..2 * plane]
                    .iter()
                    .all(|&v| v == normalize_channel(200))
            );
            assert!(input[2 * plane..].iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn jpeg_decodes() {
        let image = RgbImage::from_pixel(64, 48, Rgb([200, 100, 50]));
        let input = preprocess_image(&encode(DynamicImage::ImageRgb8(image), ImageFormat::Jpeg))
            .expect("ok");
        // JPEG is lossy; a flat colour survives to within a few levels.
        assert!((input[0] - normalize_channel(200)).abs() < 4.0 / 128.0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            preprocess_image(&[]),
            Err(PreprocessError::Decode(DecodeError::Empty))
        ));
        assert!(matches!(
            preprocess_image(b"definitely not an image"),
            Err(PreprocessError::Decode(DecodeError::NotAnImage(_)))
        ));
        // A valid PNG, truncated, and with its body scrambled.
        let png = encode(
            DynamicImage::ImageRgb8(RgbImage::from_pixel(32, 32, Rgb([1, 2, 3]))),
            ImageFormat::Png,
        );
        assert!(preprocess_image(&png[..png.len() / 2]).is_err());
        let mut scrambled = png.clone();
        for byte in scrambled.iter_mut().skip(40) {
            *byte = byte.wrapping_mul(31).wrapping_add(7);
        }
        assert!(preprocess_image(&scrambled).is_err());
        // PNG and JPEG signatures followed by junk.
        assert!(preprocess_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").is_err());
        assert!(preprocess_image(b"\xff\xd8\xff\xe0\0\x10JFIF\0").is_err());
    }

    #[test]
    fn batching_checks_lengths() {
        let device = Device::flex();
        assert!(matches!(
            batch_to_tensor(&[], &device),
            Err(PreprocessError::EmptyBatch)
        ));
        assert!(matches!(
            batch_to_tensor(&[vec![0.0; INPUT_LEN], vec![0.0; 5]], &device),
            Err(PreprocessError::WrongLength { index: 1, len: 5 })
        ));
        let batch = batch_to_tensor(&[vec![0.5; INPUT_LEN], vec![-0.5; INPUT_LEN]], &device)
            .expect("batches");
        assert_eq!(batch.dims(), [2, 3, 224, 224]);
    }
}
