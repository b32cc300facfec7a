//! Random augmented views of a training image, used to add extra embeddings per training image
//! so that a small labelled set covers a little more of the variation seen in practice.
//!
//! One view is drawn as [`AugmentParams`] (so it can be logged and replayed) and applied by
//! [`apply`]: a geometric transform about the image centre, sampled bilinearly with the edge
//! pixels replicated (no black borders), then a brightness and contrast change.
//!
//! Conventions (screen coordinates, y pointing down):
//! * the source is first mirrored left–right (if `flip`), then zoomed by `scale` and rotated by
//!   `rotation_degrees` about the centre — **positive = counter-clockwise as seen on screen** —
//!   then shifted by `translate_x × width` to the right and `translate_y × height` down;
//! * the colour change is `out = mean + (v − mean) × (1 + contrast) + brightness × 255` per
//!   channel, where `mean` is the mean grey (ITU-R BT.601 luma) of the transformed image, then
//!   rounded and clamped to 0..=255.

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::rng::SeededRng;

/// Which random changes an augmented view may apply, and how strongly. Missing fields take
/// their defaults when deserialised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Mirror left–right with probability 0.5 (default `true`).
    pub horizontal_flip: bool,
    /// Rotation drawn uniformly from `±max_rotation_degrees` (default 10).
    pub max_rotation_degrees: f32,
    /// Zoom about the centre drawn uniformly from this range (default (0.9, 1.1); > 1 enlarges).
    pub scale_range: (f32, f32),
    /// Shift in each direction drawn uniformly from `±max_translation` × the image's size in
    /// that direction (default 0.05).
    pub max_translation: f32,
    /// Brightness offset drawn uniformly from `±brightness` × 255 (default 0.1).
    pub brightness: f32,
    /// Deviations from the mean grey scaled by `1 + uniform(−contrast, contrast)` (default 0.1).
    pub contrast: f32,
}

impl Default for AugmentConfig {
    /// Mild changes that keep a medical image plausible: flips, ±10°, ±10 % zoom, ±5 % shift,
    /// ±10 % brightness and contrast.
    fn default() -> Self {
        Self {
            horizontal_flip: true,
            max_rotation_degrees: 10.0,
            scale_range: (0.9, 1.1),
            max_translation: 0.05,
            brightness: 0.1,
            contrast: 0.1,
        }
    }
}

/// The parameters drawn for one view, so that a view can be logged, tested and replayed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AugmentParams {
    /// Mirror left–right (applied first, in the source image).
    pub flip: bool,
    /// Rotation about the centre in degrees, positive = counter-clockwise on screen.
    pub rotation_degrees: f32,
    /// Zoom about the centre (1 = unchanged, > 1 enlarges the content).
    pub scale: f32,
    /// Shift to the right as a fraction of the width.
    pub translate_x: f32,
    /// Shift downwards as a fraction of the height.
    pub translate_y: f32,
    /// Offset added to every channel, as a fraction of 255.
    pub brightness: f32,
    /// Deviations from the mean grey are scaled by `1 + contrast` (0 = unchanged).
    pub contrast: f32,
}

impl AugmentParams {
    /// Draws one view's parameters from `config`. Always consumes the same number of random
    /// values (seven), so changing one setting does not shift the others' draws. Out-of-range
    /// settings are sanitised: negative maxima count as their magnitude, non-finite ones as 0,
    /// a non-positive or non-finite zoom bound as 1 (bounds are used in either order).
    pub fn draw(config: &AugmentConfig, rng: &mut SeededRng) -> Self {
        let coin = rng.next_f64();
        let rotation = symmetric(rng, config.max_rotation_degrees);
        let (lo, hi) = zoom_bounds(config.scale_range);
        let scale = rng.uniform(lo, hi).clamp(lo, hi);
        let translate_x = symmetric(rng, config.max_translation);
        let translate_y = symmetric(rng, config.max_translation);
        let brightness = symmetric(rng, config.brightness);
        let contrast = symmetric(rng, config.contrast);
        Self {
            flip: config.horizontal_flip && coin < 0.5,
            rotation_degrees: rotation,
            scale,
            translate_x,
            translate_y,
            brightness,
            contrast,
        }
    }

    /// The view that changes nothing: [`apply`] with it reproduces the image exactly.
    pub fn identity() -> Self {
        Self {
            flip: false,
            rotation_degrees: 0.0,
            scale: 1.0,
            translate_x: 0.0,
            translate_y: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        }
    }
}

impl Default for AugmentParams {
    /// The identity view.
    fn default() -> Self {
        Self::identity()
    }
}

/// A uniform draw from `[−max, max]` (magnitude of `max`; non-finite → 0).
fn symmetric(rng: &mut SeededRng, max: f32) -> f32 {
    let m = finite_or(max, 0.0).abs();
    rng.uniform(-m, m).clamp(-m, m)
}

/// Zoom bounds in ascending order, each finite and positive.
fn zoom_bounds((a, b): (f32, f32)) -> (f32, f32) {
    let fix = |s: f32| if s.is_finite() && s > 0.0 { s } else { 1.0 };
    let (a, b) = (fix(a), fix(b));
    (a.min(b), a.max(b))
}

fn finite_or(x: f32, fallback: f32) -> f32 {
    if x.is_finite() { x } else { fallback }
}

/// Draws one view from `config` with `rng` and applies it, returning the view and its
/// parameters (for logging).
pub fn random_view(
    image: &RgbImage,
    config: &AugmentConfig,
    rng: &mut SeededRng,
) -> (RgbImage, AugmentParams) {
    let params = AugmentParams::draw(config, rng);
    (apply(image, &params), params)
}

/// Applies one view and returns a new image of the same size (any size, including empty).
///
/// Inverse-mapped affine transform (horizontal flip, then scale and rotation about the centre,
/// then translation — see the module docs for the conventions) with bilinear sampling; output
/// pixels whose source falls outside the image take the nearest edge pixel (clamp), so no black
/// borders appear. Then brightness and contrast, rounded and clamped to 0..=255. Non-finite
/// parameters count as the identity's, a non-positive scale as 1, and a contrast below −1 as −1.
pub fn apply(image: &RgbImage, params: &AugmentParams) -> RgbImage {
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return image.clone();
    }
    let w = width as f32;
    let h = height as f32;
    let cx = (w - 1.0) / 2.0;
    let cy = (h - 1.0) / 2.0;

    let degrees = finite_or(params.rotation_degrees, 0.0);
    let (sin, cos) = f64::from(degrees).to_radians().sin_cos();
    // Snap round-off (e.g. cos 90°) so right-angle rotations sample exact pixel centres.
    let snap = |v: f64| if v.abs() < 1e-9 { 0.0 } else { v as f32 };
    let (sin, cos) = (snap(sin), snap(cos));
    let scale = if params.scale.is_finite() && params.scale > 0.0 {
        params.scale
    } else {
        1.0
    };
    let shift_x = finite_or(params.translate_x, 0.0) * w;
    let shift_y = finite_or(params.translate_y, 0.0) * h;
    let max_x = w - 1.0;
    let max_y = h - 1.0;

    // Geometric pass into floating-point RGB, so colour changes round only once.
    let mut pixels: Vec<[f32; 3]> = Vec::with_capacity(width as usize * height as usize);
    for y in 0..height {
        for x in 0..width {
            // Undo the shift, then the rotation (forward: u' = u cos + v sin,
            // v' = −u sin + v cos for counter-clockwise on screen), then the zoom, then the flip.
            let u = x as f32 - cx - shift_x;
            let v = y as f32 - cy - shift_y;
            let mut su = (u * cos - v * sin) / scale;
            let sv = (u * sin + v * cos) / scale;
            if params.flip {
                su = -su;
            }
            pixels.push(sample_bilinear(
                image,
                (su + cx).max(0.0).min(max_x),
                (sv + cy).max(0.0).min(max_y),
            ));
        }
    }

    let brightness = finite_or(params.brightness, 0.0) * 255.0;
    let factor = 1.0 + finite_or(params.contrast, 0.0).max(-1.0);
    let mean = if factor == 1.0 {
        0.0
    } else {
        let sum: f64 = pixels
            .iter()
            .map(|p| f64::from(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]))
            .sum();
        (sum / pixels.len() as f64) as f32
    };

    let mut out = RgbImage::new(width, height);
    for (dst, src) in out.pixels_mut().zip(&pixels) {
        *dst = Rgb(src.map(|value| {
            let adjusted = mean + (value - mean) * factor + brightness;
            // `as` saturates (and maps NaN to 0); the clamp makes the intent explicit.
            adjusted.round().clamp(0.0, 255.0) as u8
        }));
    }
    out
}

/// Bilinear sample at `(x, y)`, which must already lie within the image (callers clamp).
fn sample_bilinear(image: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (width, height) = image.dimensions();
    let x0 = (x.floor() as u32).min(width.saturating_sub(1));
    let y0 = (y.floor() as u32).min(height.saturating_sub(1));
    let x1 = (x0 + 1).min(width.saturating_sub(1));
    let y1 = (y0 + 1).min(height.saturating_sub(1));
    let fx = (x - x0 as f32).clamp(0.0, 1.0);
    let fy = (y - y0 as f32).clamp(0.0, 1.0);
    let p00 = image.get_pixel(x0, y0).0.map(f32::from);
    let p10 = image.get_pixel(x1, y0).0.map(f32::from);
    let p01 = image.get_pixel(x0, y1).0.map(f32::from);
    let p11 = image.get_pixel(x1, y1).0.map(f32::from);
    lerp3(lerp3(p00, p10, fx), lerp3(p01, p11, fx), fy)
}

/// Per-channel `a × (1 − t) + b × t` (exact at `t = 0` and `t = 1`).
fn lerp3([a0, a1, a2]: [f32; 3], [b0, b1, b2]: [f32; 3], t: f32) -> [f32; 3] {
    let s = 1.0 - t;
    [a0 * s + b0 * t, a1 * s + b1 * t, a2 * s + b2 * t]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic, non-symmetric test image.
    fn pattern(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            Rgb([
                (x * 37 + y * 11) as u8,
                (x * 5 + y * 71 + 13) as u8,
                ((x ^ y) * 29) as u8,
            ])
        })
    }

    #[test]
    fn identity_reproduces_the_image() {
        for (w, h) in [(224, 224), (17, 9), (1, 1), (2, 3)] {
            let image = pattern(w, h);
            assert_eq!(apply(&image, &AugmentParams::identity()), image);
        }
        assert_eq!(AugmentParams::default(), AugmentParams::identity());
    }

    #[test]
    fn flip_alone_equals_flip_horizontal() {
        for (w, h) in [(224, 224), (17, 9), (8, 5)] {
            let image = pattern(w, h);
            let params = AugmentParams {
                flip: true,
                ..AugmentParams::identity()
            };
            assert_eq!(
                apply(&image, &params),
                image::imageops::flip_horizontal(&image)
            );
        }
    }

    #[test]
    fn zero_rotation_unit_scale_no_shift_is_identity() {
        let image = pattern(31, 20);
        let params = AugmentParams {
            rotation_degrees: 0.0,
            scale: 1.0,
            translate_x: 0.0,
            translate_y: 0.0,
            ..AugmentParams::identity()
        };
        assert_eq!(apply(&image, &params), image);
        // −0.0 is the same as 0.
        let params = AugmentParams {
            rotation_degrees: -0.0,
            translate_x: -0.0,
            ..params
        };
        assert_eq!(apply(&image, &params), image);
    }

    #[test]
    fn brightness_raises_mid_grey_by_a_tenth_of_255() {
        let image = RgbImage::from_pixel(16, 16, Rgb([128, 128, 128]));
        let params = AugmentParams {
            brightness: 0.1,
            ..AugmentParams::identity()
        };
        let out = apply(&image, &params);
        for p in out.pixels() {
            for &v in &p.0 {
                assert!((f32::from(v) - (128.0 + 25.5)).abs() <= 1.0, "{v}");
            }
        }
        // Large offsets clamp instead of wrapping.
        let bright = apply(
            &image,
            &AugmentParams {
                brightness: 2.0,
                ..params
            },
        );
        assert!(bright.pixels().all(|p| p.0 == [255; 3]));
        let dark = apply(
            &image,
            &AugmentParams {
                brightness: -2.0,
                ..params
            },
        );
        assert!(dark.pixels().all(|p| p.0 == [0; 3]));
    }

    #[test]
    fn contrast_leaves_a_uniform_image_unchanged() {
        let image = RgbImage::from_pixel(10, 7, Rgb([90, 90, 90]));
        for contrast in [-0.5, -0.1, 0.1, 0.5, 3.0] {
            let params = AugmentParams {
                contrast,
                ..AugmentParams::identity()
            };
            assert_eq!(apply(&image, &params), image, "{contrast}");
        }
    }

    #[test]
    fn contrast_spreads_values_about_the_mean() {
        let mut image = RgbImage::from_pixel(2, 1, Rgb([100, 100, 100]));
        image.put_pixel(1, 0, Rgb([200, 200, 200]));
        let params = AugmentParams {
            contrast: 0.2,
            ..AugmentParams::identity()
        };
        let out = apply(&image, &params);
        // Mean 150; deviations ±50 become ±60.
        assert_eq!(out.get_pixel(0, 0).0, [90; 3]);
        assert_eq!(out.get_pixel(1, 0).0, [210; 3]);
    }

    #[test]
    fn draw_is_deterministic_per_seed() {
        let config = AugmentConfig::default();
        let a: Vec<_> = {
            let mut rng = SeededRng::new(5);
            (0..10)
                .map(|_| AugmentParams::draw(&config, &mut rng))
                .collect()
        };
        let b: Vec<_> = {
            let mut rng = SeededRng::new(5);
            (0..10)
                .map(|_| AugmentParams::draw(&config, &mut rng))
                .collect()
        };
        let c: Vec<_> = {
            let mut rng = SeededRng::new(6);
            (0..10)
                .map(|_| AugmentParams::draw(&config, &mut rng))
                .collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn draws_stay_within_the_configured_ranges() {
        let config = AugmentConfig {
            horizontal_flip: true,
            max_rotation_degrees: 15.0,
            scale_range: (0.8, 1.25),
            max_translation: 0.1,
            brightness: 0.2,
            contrast: 0.3,
        };
        let mut rng = SeededRng::new(11);
        let mut flips = 0;
        let n = 5000;
        for _ in 0..n {
            let p = AugmentParams::draw(&config, &mut rng);
            flips += usize::from(p.flip);
            assert!(p.rotation_degrees.abs() <= 15.0);
            assert!((0.8..=1.25).contains(&p.scale));
            assert!(p.translate_x.abs() <= 0.1 && p.translate_y.abs() <= 0.1);
            assert!(p.brightness.abs() <= 0.2);
            assert!(p.contrast.abs() <= 0.3);
        }
        assert!((flips as f64 / n as f64 - 0.5).abs() < 0.05, "{flips}");

        // Disabled settings give the identity, and draws still consume the same stream.
        let off = AugmentConfig {
            horizontal_flip: false,
            max_rotation_degrees: 0.0,
            scale_range: (1.0, 1.0),
            max_translation: 0.0,
            brightness: 0.0,
            contrast: 0.0,
        };
        let mut rng = SeededRng::new(3);
        for _ in 0..100 {
            let p = AugmentParams::draw(&off, &mut rng);
            assert_eq!(p.rotation_degrees.abs(), 0.0);
            assert!(!p.flip && p.scale == 1.0);
        }
    }

    #[test]
    fn odd_configs_are_sanitised() {
        let config = AugmentConfig {
            horizontal_flip: true,
            max_rotation_degrees: -20.0,
            scale_range: (1.2, f32::NAN),
            max_translation: f32::INFINITY,
            brightness: f32::NAN,
            contrast: -0.1,
        };
        let mut rng = SeededRng::new(2);
        for _ in 0..200 {
            let p = AugmentParams::draw(&config, &mut rng);
            assert!(p.rotation_degrees.abs() <= 20.0);
            assert!((1.0..=1.2).contains(&p.scale));
            assert_eq!(p.translate_x, 0.0);
            assert_eq!(p.brightness, 0.0);
            assert!(p.contrast.abs() <= 0.1);
        }
        let image = pattern(9, 9);
        let weird = AugmentParams {
            flip: false,
            rotation_degrees: f32::NAN,
            scale: 0.0,
            translate_x: f32::INFINITY,
            translate_y: f32::NAN,
            brightness: f32::NAN,
            contrast: -5.0,
        };
        // Contrast −1 flattens to the mean grey; nothing panics.
        let out = apply(&image, &weird);
        assert_eq!(out.dimensions(), (9, 9));
        let first = out.get_pixel(0, 0).0;
        assert!(out.pixels().all(|p| p.0 == first));
    }

    #[test]
    fn config_defaults_and_serde() {
        let config = AugmentConfig::default();
        assert!(config.horizontal_flip);
        assert_eq!(config.max_rotation_degrees, 10.0);
        assert_eq!(config.scale_range, (0.9, 1.1));
        assert_eq!(config.max_translation, 0.05);
        assert_eq!(config.brightness, 0.1);
        assert_eq!(config.contrast, 0.1);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<AugmentConfig>(&json).unwrap(),
            config
        );
        let partial: AugmentConfig = serde_json::from_str(r#"{"horizontal_flip":false}"#).unwrap();
        assert_eq!(
            partial,
            AugmentConfig {
                horizontal_flip: false,
                ..config
            }
        );
    }

    #[test]
    fn tiny_and_thin_images_do_not_panic() {
        let config = AugmentConfig {
            max_rotation_degrees: 180.0,
            scale_range: (0.5, 2.0),
            max_translation: 0.5,
            ..AugmentConfig::default()
        };
        let mut rng = SeededRng::new(4);
        for (w, h) in [(1, 1), (3, 500), (500, 3), (0, 0), (0, 5)] {
            let image = pattern(w, h);
            for _ in 0..20 {
                let (out, _) = random_view(&image, &config, &mut rng);
                assert_eq!(out.dimensions(), (w, h));
            }
        }
        // A 1×1 image keeps its colour under any geometry.
        let one = RgbImage::from_pixel(1, 1, Rgb([10, 20, 30]));
        let p = AugmentParams {
            rotation_degrees: 33.0,
            scale: 1.7,
            translate_x: 0.4,
            flip: true,
            ..AugmentParams::identity()
        };
        assert_eq!(apply(&one, &p), one);
    }

    #[test]
    fn rotation_by_90_moves_a_marked_pixel_counter_clockwise() {
        // 9×9, centre (4, 4); mark the pixel 3 to the right of the centre.
        let mut image = RgbImage::new(9, 9);
        image.put_pixel(7, 4, Rgb([255, 0, 0]));
        let params = AugmentParams {
            rotation_degrees: 90.0,
            ..AugmentParams::identity()
        };
        let out = apply(&image, &params);
        // Counter-clockwise on screen (y down): right of centre → above the centre.
        assert_eq!(out.get_pixel(4, 1).0, [255, 0, 0]);
        assert_eq!(out.pixels().filter(|p| p.0 != [0; 3]).count(), 1);
        // −90° moves it below the centre; 180° to the left.
        let cw = apply(
            &image,
            &AugmentParams {
                rotation_degrees: -90.0,
                ..params
            },
        );
        assert_eq!(cw.get_pixel(4, 7).0, [255, 0, 0]);
        let half = apply(
            &image,
            &AugmentParams {
                rotation_degrees: 180.0,
                ..params
            },
        );
        assert_eq!(half.get_pixel(1, 4).0, [255, 0, 0]);

        // Even size (centre between pixels): 8×8, centre (3.5, 3.5); (7, 3) → (3, 0).
        let mut even = RgbImage::new(8, 8);
        even.put_pixel(7, 3, Rgb([0, 255, 0]));
        let out = apply(&even, &params);
        assert_eq!(out.get_pixel(3, 0).0, [0, 255, 0]);
        assert_eq!(out.pixels().filter(|p| p.0 != [0; 3]).count(), 1);
    }

    #[test]
    fn translation_and_scale_follow_the_conventions() {
        // Shift right by 2 pixels of 10: the content moves right, the left edge is replicated.
        let image = pattern(10, 6);
        let params = AugmentParams {
            translate_x: 0.2,
            ..AugmentParams::identity()
        };
        let out = apply(&image, &params);
        for y in 0..6 {
            for x in 2..10 {
                assert_eq!(out.get_pixel(x, y), image.get_pixel(x - 2, y));
            }
            assert_eq!(out.get_pixel(0, y), image.get_pixel(0, y));
            assert_eq!(out.get_pixel(1, y), image.get_pixel(0, y));
        }
        // Shift down.
        let down = apply(
            &image,
            &AugmentParams {
                translate_x: 0.0,
                translate_y: 0.5,
                ..params
            },
        );
        assert_eq!(down.get_pixel(4, 5), image.get_pixel(4, 2));
        // Zoom by 2 about the centre of a 9×9: output (8, 4) samples source (6, 4).
        let image = pattern(9, 9);
        let zoom = apply(
            &image,
            &AugmentParams {
                scale: 2.0,
                ..AugmentParams::identity()
            },
        );
        assert_eq!(zoom.get_pixel(8, 4), image.get_pixel(6, 4));
        assert_eq!(zoom.get_pixel(4, 4), image.get_pixel(4, 4));
    }
}
