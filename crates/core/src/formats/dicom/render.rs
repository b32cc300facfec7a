//! From a frame's stored samples to the 8-bit image: Modality LUT (rescale), VOI window,
//! MONOCHROME1 inversion, palette colour and YBR conversion (rules in the parent module's
//! documentation).

use super::*;

/// One frame's samples, before rendering.
pub(super) struct Frame<'a> {
    /// Little-endian samples, interleaved unless `planar`; for YBR_FULL_422 from uncompressed
    /// data, `Y Y Cb Cr` per pair of pixels.
    pub(super) data: Cow<'a, [u8]>,
    pub(super) bytes_per_sample: usize,
    pub(super) planar: bool,
    pub(super) photometric: String,
}

/// Rescale and window for the chosen frame.
pub(super) struct Voi {
    pub(super) rescale: Rescale,
    pub(super) window: Option<Window>,
}

impl Voi {
    /// Rescale Slope/Intercept and the first Window Center/Width, from the top level of the
    /// data set, else the frame's functional groups (enhanced multi-frame files).
    pub(super) fn read(object: &InMemDicomObject, frame: u32) -> Voi {
        let slope = first_number(
            object,
            tags::RESCALE_SLOPE,
            frame,
            PIXEL_VALUE_TRANSFORMATION,
        );
        let intercept = first_number(
            object,
            tags::RESCALE_INTERCEPT,
            frame,
            PIXEL_VALUE_TRANSFORMATION,
        );
        let center = first_number(object, tags::WINDOW_CENTER, frame, FRAME_VOI_LUT);
        let width = first_number(object, tags::WINDOW_WIDTH, frame, FRAME_VOI_LUT);
        Voi {
            rescale: Rescale {
                slope: slope.filter(|s| *s != 0.0).unwrap_or(1.0),
                intercept: intercept.unwrap_or(0.0),
            },
            window: center
                .zip(width)
                .and_then(|(c, w)| Window::center_width(c, w)),
        }
    }
}

pub(super) const PIXEL_VALUE_TRANSFORMATION: Tag = Tag(0x0028, 0x9145);
pub(super) const FRAME_VOI_LUT: Tag = Tag(0x0028, 0x9132);

/// The first value of `tag` (a number), at the top level or in the functional group sequence
/// `group` (per-frame item `frame`, else shared).
pub(super) fn first_number(
    object: &InMemDicomObject,
    tag: Tag,
    frame: u32,
    group: Tag,
) -> Option<f64> {
    let number = |e: &InMemElement| {
        e.to_multi_float64()
            .ok()
            .and_then(|v| v.first().copied())
            .filter(|v| v.is_finite())
    };
    if let Some(e) = object.get(tag) {
        return number(e);
    }
    let in_group =
        |item: &InMemDicomObject| item.get(group)?.items()?.first()?.get(tag).and_then(number);
    object
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|s| s.items())
        .and_then(|items| items.get(frame as usize))
        .and_then(in_group)
        .or_else(|| {
            object
                .get(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
                .and_then(|s| s.items())
                .and_then(|items| items.first())
                .and_then(in_group)
        })
}

/// The 8-bit image of a frame (rules in the module documentation).
pub(super) fn render(
    info: &ImageInfo,
    frame: &Frame,
    voi: &Voi,
    palette: Option<&Palette>,
) -> Result<DynamicImage, DecodeError> {
    let (width, height) = (info.columns, info.rows);
    let pixels = info.pixels();
    let data = frame.data.as_ref();
    let bps = frame.bytes_per_sample;
    let word = |i: usize| -> u32 {
        if bps == 2 {
            u32::from(u16::from_le_bytes([data[2 * i], data[2 * i + 1]]))
        } else {
            u32::from(data[i])
        }
    };
    // Stored value of sample `i`: masked to Bits Stored, sign-extended if signed.
    let (bits, shift) = if info.bits_allocated == 1 {
        (1, 0)
    } else {
        (
            u32::from(info.bits_stored),
            u32::from(info.high_bit + 1 - info.bits_stored),
        )
    };
    let mask = (1u32 << bits) - 1;
    let stored = |i: usize| -> i32 {
        let v = (word(i) >> shift) & mask;
        if info.signed && bits > 1 && v & (1 << (bits - 1)) != 0 {
            v as i32 - (1i32 << bits)
        } else {
            v as i32
        }
    };
    let needed = match (frame.photometric.as_str(), frame.planar) {
        ("YBR_FULL_422", _) => pixels * 2 * bps,
        _ => pixels * usize::from(info.samples) * bps,
    };
    if data.len() < needed {
        return Err(damaged("a frame holds fewer samples than its size".into()));
    }

    if let Some(palette) = palette {
        let mut rgb = Vec::with_capacity(pixels * 3);
        for i in 0..pixels {
            rgb.extend_from_slice(&palette.apply(stored(i)));
        }
        return RgbImage::from_raw(width, height, rgb)
            .map(DynamicImage::ImageRgb8)
            .ok_or_else(|| damaged("a frame has the wrong size".into()));
    }
    if info.samples == 1 {
        let invert = info.photometric == "MONOCHROME1";
        let grey = render_grey(|| (0..pixels).map(stored), voi.rescale, voi.window, invert)
            .ok_or_else(|| damaged("a frame has no pixels".into()))?;
        return GrayImage::from_raw(width, height, grey)
            .map(DynamicImage::ImageLuma8)
            .ok_or_else(|| damaged("a frame has the wrong size".into()));
    }

    // Colour: 8-bit samples, scaled from Bits Stored when wider.
    let to_8bit = |i: usize| -> u8 {
        let v = (word(i) >> shift) & mask;
        if bits <= 8 {
            v as u8
        } else {
            ((f64::from(v) * 255.0 / f64::from(mask)) + 0.5).floor() as u8
        }
    };
    let mut rgb = vec![0u8; pixels * 3];
    match (frame.photometric.as_str(), frame.planar) {
        ("YBR_FULL_422", _) => {
            for pair in 0..pixels / 2 {
                let base = pair * 4;
                let (y0, y1) = (to_8bit(base), to_8bit(base + 1));
                let (cb, cr) = (to_8bit(base + 2), to_8bit(base + 3));
                rgb[pair * 6..pair * 6 + 3].copy_from_slice(&ybr_to_rgb(y0, cb, cr));
                rgb[pair * 6 + 3..pair * 6 + 6].copy_from_slice(&ybr_to_rgb(y1, cb, cr));
            }
        }
        (pi, planar) => {
            let sample = |p: usize, c: usize| {
                if planar {
                    to_8bit(c * pixels + p)
                } else {
                    to_8bit(p * 3 + c)
                }
            };
            for p in 0..pixels {
                let (a, b, c) = (sample(p, 0), sample(p, 1), sample(p, 2));
                let out = if pi == "YBR_FULL" {
                    ybr_to_rgb(a, b, c)
                } else {
                    [a, b, c]
                };
                rgb[p * 3..p * 3 + 3].copy_from_slice(&out);
            }
        }
    }
    RgbImage::from_raw(width, height, rgb)
        .map(DynamicImage::ImageRgb8)
        .ok_or_else(|| damaged("a frame has the wrong size".into()))
}

/// The red, green and blue lookup tables of a PALETTE COLOR image (PS3.3 C.7.6.3.1.5–6),
/// already scaled to 8 bits.
pub(super) struct Palette {
    pub(super) tables: [(i32, Vec<u8>); 3],
}

impl Palette {
    pub(super) fn read(object: &InMemDicomObject) -> Result<Palette, DecodeError> {
        let channel = |descriptor: Tag, data: Tag, segmented: Tag, name: &str| {
            let Some(data) = object.get(data) else {
                return Err(if object.get(segmented).is_some() {
                    unsupported("segmented palettes are not supported".into())
                } else {
                    damaged(format!("the {name} palette is missing"))
                });
            };
            let descriptor = object
                .get(descriptor)
                .and_then(|e| e.to_multi_int::<i64>().ok())
                .filter(|d| d.len() == 3)
                .ok_or_else(|| damaged(format!("the {name} palette descriptor is invalid")))?;
            let entries = match descriptor[0] {
                0 => 65536,
                n @ 1..=65535 => n as usize,
                _ => return Err(damaged(format!("the {name} palette size is invalid"))),
            };
            // The first mapped value is US or SS; either way it fits 16 bits.
            let first = i32::try_from(descriptor[1])
                .ok()
                .filter(|f| (-32768..=65535).contains(f))
                .ok_or_else(|| damaged(format!("the {name} palette start is invalid")))?;
            let bits = descriptor[2];
            let Value::Primitive(value) = data.value() else {
                return Err(damaged(format!("the {name} palette data is invalid")));
            };
            let bytes = value.to_bytes();
            let table: Vec<u8> = if bytes.len() >= entries * 2 {
                // 16-bit words (also when the descriptor says 8 bits: the value is in the
                // low byte then).
                bytes
                    .chunks_exact(2)
                    .take(entries)
                    .map(|w| {
                        let v = u16::from_le_bytes([w[0], w[1]]);
                        if bits == 8 {
                            v.min(255) as u8
                        } else {
                            ((f64::from(v) * 255.0 / 65535.0) + 0.5).floor() as u8
                        }
                    })
                    .collect()
            } else if bits == 8 && bytes.len() >= entries {
                bytes[..entries].to_vec()
            } else {
                return Err(damaged(format!(
                    "the {name} palette has fewer entries than its descriptor says"
                )));
            };
            Ok((first, table))
        };
        Ok(Palette {
            tables: [
                channel(
                    Tag(0x0028, 0x1101),
                    Tag(0x0028, 0x1201),
                    Tag(0x0028, 0x1221),
                    "red",
                )?,
                channel(
                    Tag(0x0028, 0x1102),
                    Tag(0x0028, 0x1202),
                    Tag(0x0028, 0x1222),
                    "green",
                )?,
                channel(
                    Tag(0x0028, 0x1103),
                    Tag(0x0028, 0x1203),
                    Tag(0x0028, 0x1223),
                    "blue",
                )?,
            ],
        })
    }

    /// The colour of a stored value.
    pub(super) fn apply(&self, stored: i32) -> [u8; 3] {
        self.tables.each_ref().map(|(first, table)| {
            let last = table.len().saturating_sub(1);
            let i = usize::try_from(i64::from(stored) - i64::from(*first))
                .unwrap_or(0)
                .min(last);
            table.get(i).copied().unwrap_or(0)
        })
    }
}

/// Full-range YCbCr (ITU-R BT.601, as JPEG and DICOM YBR_FULL use it) to RGB, rounded.
pub(super) fn ybr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (f64::from(y), f64::from(cb) - 128.0, f64::from(cr) - 128.0);
    let channel = |v: f64| (v + 0.5).floor().clamp(0.0, 255.0) as u8;
    [
        channel(y + 1.402 * cr),
        channel(y - 0.344136 * cb - 0.714136 * cr),
        channel(y + 1.772 * cb),
    ]
}
