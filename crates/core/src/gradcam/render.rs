//! Drawing a Grad-CAM heat map: the `height × width` map upsampled bilinearly to the image's
//! size and coloured with d3's Turbo colour map (blue = none, red = the strongest evidence).

use image::imageops::{FilterType, resize};
use image::{ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};

use super::Heatmap;

/// Opacity of the colour where the evidence is strongest; it falls with the evidence, so the
/// image shows through where there is none.
const MAX_OPACITY: f32 = 0.6;

/// The map upsampled to `width × height` pixels (bilinear, values in `[0, 1]`).
fn upsampled(
    heatmap: &Heatmap,
    width: u32,
    height: u32,
) -> Option<ImageBuffer<Luma<f32>, Vec<f32>>> {
    let small: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(
        u32::try_from(heatmap.width).ok()?,
        u32::try_from(heatmap.height).ok()?,
        heatmap.values.clone(),
    )?;
    if width == 0 || height == 0 || heatmap.values.is_empty() {
        return None;
    }
    Some(resize(&small, width, height, FilterType::Triangle))
}

fn colour(value: f32) -> [u8; 3] {
    let c = colorous::TURBO.eval_continuous(f64::from(value.clamp(0.0, 1.0)));
    [c.r, c.g, c.b]
}

/// The heat map alone as a `width × height` RGBA layer to lay over the image (the page's
/// toggle): Turbo colours, opacity rising with the evidence to [`MAX_OPACITY`]. An empty map
/// gives a transparent layer.
pub fn heatmap_layer(heatmap: &Heatmap, width: u32, height: u32) -> RgbaImage {
    let mut layer = RgbaImage::new(width, height);
    if let Some(values) = upsampled(heatmap, width, height) {
        for (pixel, value) in layer.pixels_mut().zip(values.pixels()) {
            let v = value.0[0].clamp(0.0, 1.0);
            let [r, g, b] = colour(v);
            *pixel = Rgba([r, g, b, (255.0 * MAX_OPACITY * v.sqrt()).round() as u8]);
        }
    }
    layer
}

/// [`heatmap_layer`] as PNG bytes, `size × size` pixels (the page lays it over a square
/// thumbnail).
///
/// # Errors
/// The PNG encoder's, which an in-memory RGBA image should never meet.
pub fn heatmap_png(heatmap: &Heatmap, size: u32) -> Result<Vec<u8>, image::ImageError> {
    let mut png = Vec::new();
    heatmap_layer(heatmap, size, size)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// `image` with the heat map blended over it (the CLI's `explain` PNGs), same size.
pub fn overlay(image: &RgbImage, heatmap: &Heatmap) -> RgbImage {
    let layer = heatmap_layer(heatmap, image.width(), image.height());
    let mut out = image.clone();
    for (pixel, over) in out.pixels_mut().zip(layer.pixels()) {
        let alpha = f32::from(over.0[3]) / 255.0;
        let blend = |base: u8, top: u8| {
            (f32::from(base) * (1.0 - alpha) + f32::from(top) * alpha).round() as u8
        };
        *pixel = Rgb([
            blend(pixel.0[0], over.0[0]),
            blend(pixel.0[1], over.0[1]),
            blend(pixel.0[2], over.0[2]),
        ]);
    }
    out
}
