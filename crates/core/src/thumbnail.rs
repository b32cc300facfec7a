//! Small JPEG thumbnails of users' images, made once when an image is embedded.
//!
//! The page shows and keeps these instead of the original files, so a project of thousands of
//! images stays small in memory and in the browser's storage, and a reloaded or imported project
//! still shows its pictures.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, imageops::FilterType};

use crate::preprocess::{PreprocessError, decode_image};

/// Longest side of a thumbnail, in pixels (shown at up to 64 CSS pixels; 2× for sharp screens).
pub const THUMBNAIL_SIDE: u32 = 128;

/// JPEG quality of thumbnails: small files (a few kB) that still show the anatomy.
pub const THUMBNAIL_QUALITY: u8 = 80;

/// A JPEG thumbnail of a decoded image, aspect ratio kept, longest side at most
/// [`THUMBNAIL_SIDE`]; colour images stay colour, everything else becomes greyscale.
pub fn thumbnail_of(image: &DynamicImage) -> Result<Vec<u8>, PreprocessError> {
    let (width, height) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return Err(PreprocessError::NoPixels { width, height });
    }
    let small = if width.max(height) > THUMBNAIL_SIDE {
        image.resize(THUMBNAIL_SIDE, THUMBNAIL_SIDE, FilterType::Triangle)
    } else {
        image.clone()
    };
    let small = if small.color().has_color() {
        DynamicImage::ImageRgb8(small.to_rgb8())
    } else {
        DynamicImage::ImageLuma8(small.to_luma8())
    };
    let mut out = Vec::new();
    small
        .write_with_encoder(JpegEncoder::new_with_quality(
            Cursor::new(&mut out),
            THUMBNAIL_QUALITY,
        ))
        .map_err(|e| PreprocessError::Thumbnail(e.to_string()))?;
    Ok(out)
}

/// The thumbnail of an image file's bytes (decoded exactly as for the network).
pub fn thumbnail_of_file(bytes: &[u8]) -> Result<Vec<u8>, PreprocessError> {
    thumbnail_of(&decode_image(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};

    fn png(image: &DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode a test PNG");
        out
    }

    #[test]
    fn large_images_shrink_with_their_aspect_ratio() {
        let wide =
            DynamicImage::ImageLuma8(GrayImage::from_fn(640, 320, |x, _| Luma([(x % 256) as u8])));
        let thumb = thumbnail_of_file(&png(&wide)).expect("thumbnail");
        let decoded = decode_image(&thumb).expect("the thumbnail is a readable JPEG");
        assert_eq!((decoded.width(), decoded.height()), (128, 64));
        assert!(!decoded.color().has_color(), "greyscale stays greyscale");
        assert!(thumb.len() < 16_000, "{} bytes", thumb.len());
    }

    #[test]
    fn small_colour_images_keep_size_and_colour() {
        let red = DynamicImage::ImageRgb8(RgbImage::from_pixel(20, 30, Rgb([200, 10, 10])));
        let decoded = decode_image(&thumbnail_of(&red).expect("thumbnail")).expect("decode");
        assert_eq!((decoded.width(), decoded.height()), (20, 30));
        let pixel = decoded.to_rgb8().get_pixel(10, 15).0;
        assert!(pixel[0] > 150 && pixel[1] < 60, "{pixel:?}");
    }

    #[test]
    fn unreadable_bytes_are_an_error() {
        assert!(thumbnail_of_file(b"not an image").is_err());
        assert!(thumbnail_of_file(&[]).is_err());
    }
}
