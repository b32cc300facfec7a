//! What the data check reads of a file besides its embedding: its content hash, pixel size,
//! format and how much of it is near-black.

use image::{DynamicImage, GenericImageView};
use serde::{Deserialize, Serialize};

use crate::embeddings::content_hash;
use crate::formats::{DecodeError, Format, decode_8bit, sniff};

/// A grey level (0–255) below which a pixel counts as near-black (a fundus photograph's or a
/// collimated X-ray's border).
pub const DARK_BELOW: u8 = 20;
/// Most pixels sampled for [`ImageFacts::dark_share`] (a regular grid over larger images).
const MAX_SAMPLES: u64 = 1 << 18;

/// The facts of one image file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageFacts {
    /// SHA-256 of the file's bytes, hex ([`content_hash`]).
    pub content_hash: String,
    /// Width in pixels, as decoded (after EXIF orientation).
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The format sniffed from the content: `PNG`, `JPEG`, `TIFF` or `DICOM`.
    pub format: String,
    /// The file name's extension, lower case, without the dot (empty when it has none).
    pub extension: String,
    /// Share of near-black pixels (grey below [`DARK_BELOW`]), `0..=1`.
    pub dark_share: f32,
    /// The 256-bit difference hash (dHash: Krawetz, "Kind of like that", 2013) of the image and
    /// of its 7 other rotations by 90° and mirror images ([`perceptual_hashes`]); the first is
    /// the image's own.
    pub hashes: Vec<[u64; 4]>,
}

impl ImageFacts {
    /// Reads the facts of the file `name` (only its extension is used) with content `bytes`.
    ///
    /// # Errors
    /// The [`DecodeError`] of [`decode_8bit`] when the file cannot be decoded.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let image = decode_8bit(bytes)?;
        let format = match sniff(bytes) {
            Some(Format::Png) => "PNG",
            Some(Format::Jpeg) => "JPEG",
            Some(Format::Tiff) => "TIFF",
            Some(Format::Dicom) => "DICOM",
            None => "other",
        };
        let extension = name
            .rsplit_once('.')
            .map(|(stem, ext)| if stem.is_empty() { "" } else { ext })
            .unwrap_or("")
            .to_lowercase();
        Ok(Self {
            content_hash: content_hash(bytes),
            width: image.width(),
            height: image.height(),
            format: format.into(),
            extension,
            dark_share: dark_share(&image),
            hashes: perceptual_hashes(&image),
        })
    }
}

/// Share of near-black pixels of `image`, over a grid of at most [`MAX_SAMPLES`] pixels.
fn dark_share(image: &DynamicImage) -> f32 {
    let (w, h) = (u64::from(image.width()), u64::from(image.height()));
    if w == 0 || h == 0 {
        return 0.0;
    }
    let step = ((w * h) as f64 / MAX_SAMPLES as f64).sqrt().ceil().max(1.0) as u32;
    let grey = |x: u32, y: u32| -> u8 {
        match image {
            DynamicImage::ImageLuma8(g) => g.get_pixel(x, y).0[0],
            DynamicImage::ImageRgb8(rgb) => {
                let [r, g, b] = rgb.get_pixel(x, y).0;
                ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b)) / 1000) as u8
            }
            other => {
                let [r, g, b, _] = other.get_pixel(x, y).0;
                ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b)) / 1000) as u8
            }
        }
    };
    let (mut dark, mut all) = (0u64, 0u64);
    for y in (0..image.height()).step_by(step as usize) {
        for x in (0..image.width()).step_by(step as usize) {
            all += 1;
            dark += u64::from(grey(x, y) < DARK_BELOW);
        }
    }
    dark as f32 / all as f32
}

/// Side of the grey grid a hash is taken from (one more than the bits per row).
const GRID: u32 = HASH_SIDE + 1;
/// Bits per row and rows of a hash.
const HASH_SIDE: u32 = 16;

/// The difference hash of `image` under each of the 8 symmetries of the square (identity
/// first): the image shrunk to a 17×17 grey grid (triangle filter), then one bit per
/// horizontal neighbour pair of the first 16 rows, set when the right one is brighter. A
/// resized or re-encoded copy differs in a few of the 256 bits; different images in dozens.
pub fn perceptual_hashes(image: &DynamicImage) -> Vec<[u64; 4]> {
    let grey = image::imageops::resize(
        &image.to_luma8(),
        GRID,
        GRID,
        image::imageops::FilterType::Triangle,
    );
    let at = |x: u32, y: u32| grey.get_pixel(x, y).0[0];
    let last = GRID - 1;
    // (x, y) of the grid seen under each symmetry.
    let views: [&dyn Fn(u32, u32) -> u8; 8] = [
        &|x, y| at(x, y),
        &|x, y| at(last - x, y),
        &|x, y| at(x, last - y),
        &|x, y| at(last - x, last - y),
        &|x, y| at(y, x),
        &|x, y| at(last - y, x),
        &|x, y| at(y, last - x),
        &|x, y| at(last - y, last - x),
    ];
    views
        .iter()
        .map(|view| {
            let mut hash = [0u64; 4];
            for y in 0..HASH_SIDE {
                for x in 0..HASH_SIDE {
                    if view(x + 1, y) > view(x, y) {
                        let bit = (y * HASH_SIDE + x) as usize;
                        hash[bit / 64] |= 1 << (bit % 64);
                    }
                }
            }
            hash
        })
        .collect()
}

/// Bits in which two hashes differ, `0..=256`.
pub fn hamming(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// The fewest bits in which `a`'s own hash differs from any symmetry of `b`'s (`None` when
/// either has no hash).
pub fn hash_distance(a: &ImageFacts, b: &ImageFacts) -> Option<u32> {
    let own = a.hashes.first()?;
    b.hashes.iter().map(|h| hamming(own, h)).min()
}
