//! From greyscale values of any bit depth to 8 bits: the linear windows, the automatic
//! (percentile) window and the lookup table that applies them.
//!
//! Everything here works on *stored* integer values (at most 16 bits, signed or unsigned), so
//! the whole mapping — rescale, window, inversion — is computed once per distinct value into a
//! lookup table, and the percentiles of the automatic window come exactly from a histogram in
//! one pass, whatever the image size.
//!
//! The rules (also in the README's "Image formats"):
//!
//! - *modality value* `m = stored × slope + intercept` (DICOM Rescale Slope/Intercept; 1 and 0
//!   for PNG and TIFF);
//! - a DICOM window (centre `c`, width `w ≥ 1`) maps `m` with DICOM's linear VOI function
//!   (PS3.3 C.11.2.1.2.1): 0 when `m ≤ c − 0.5 − (w − 1)/2`, 255 when `m > c − 0.5 + (w − 1)/2`,
//!   else `((m − (c − 0.5)) / (w − 1) + 0.5) × 255`;
//! - the automatic window maps `[low, high]` linearly onto 0..=255 (clamped outside), where
//!   `low` and `high` are the values at ranks `⌊0.005 (n − 1)⌋` and `⌈0.995 (n − 1)⌉` of the
//!   `n` sorted values (the 0.5th and 99.5th percentiles, numpy's `lower`/`higher` methods); when
//!   they are equal, the minimum and maximum are used instead, and an image with a single value
//!   becomes black;
//! - results are rounded half up (`⌊y + 0.5⌋`); DICOM MONOCHROME1 is inverted afterwards
//!   (`255 − y`).

/// Percentile of the automatic window's low end (values at or below it become black).
pub const AUTO_LOW_PERCENTILE: f64 = 0.5;
/// Percentile of the automatic window's high end (values at or above it become white).
pub const AUTO_HIGH_PERCENTILE: f64 = 99.5;

/// Widest range of stored values the histogram accepts (17 bits covers every signed or
/// unsigned 16-bit sample).
const MAX_RANGE: i64 = 1 << 17;

/// Linear map from stored values to modality values (DICOM's Rescale Slope and Intercept).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rescale {
    /// Multiplies the stored value.
    pub slope: f64,
    /// Added after the slope.
    pub intercept: f64,
}

impl Rescale {
    /// Stored values are the modality values (PNG, TIFF, DICOM without rescale).
    pub const IDENTITY: Rescale = Rescale {
        slope: 1.0,
        intercept: 0.0,
    };

    /// The modality value of a stored value.
    pub fn apply(self, stored: i32) -> f64 {
        f64::from(stored) * self.slope + self.intercept
    }
}

/// A linear map from modality values onto 0..=255.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Window {
    /// DICOM's linear VOI function (PS3.3 C.11.2.1.2.1) with a centre and a width (≥ 1).
    CenterWidth {
        /// Window Center.
        center: f64,
        /// Window Width, at least 1.
        width: f64,
    },
    /// `low` ↦ 0 and `high` ↦ 255, linear in between, clamped outside (`high > low`).
    Range {
        /// Value shown black.
        low: f64,
        /// Value shown white.
        high: f64,
    },
}

impl Window {
    /// A DICOM window, or `None` when the values are unusable (width below 1, not finite).
    pub fn center_width(center: f64, width: f64) -> Option<Window> {
        (center.is_finite() && width.is_finite() && width >= 1.0)
            .then_some(Window::CenterWidth { center, width })
    }

    /// The 8-bit value of modality value `x`, rounded half up.
    pub fn apply(self, x: f64) -> u8 {
        let y = match self {
            Window::CenterWidth { center, width } => {
                let c = center - 0.5;
                let half = (width - 1.0) / 2.0;
                if x <= c - half {
                    return 0;
                }
                if x > c + half {
                    return 255;
                }
                ((x - c) / (width - 1.0) + 0.5) * 255.0
            }
            Window::Range { low, high } => {
                if x <= low {
                    return 0;
                }
                if x >= high {
                    return 255;
                }
                (x - low) / (high - low) * 255.0
            }
        };
        // In range by construction; the clamp only guards against rounding at the edges.
        (y + 0.5).floor().clamp(0.0, 255.0) as u8
    }
}

/// How many times each stored value occurs, over the values' range.
#[derive(Clone, Debug)]
pub struct Histogram {
    min: i32,
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    /// Counts `values` (called twice: once for the range, once to count). `None` when there are
    /// no values or their range is wider than 17 bits (callers pass at most 16-bit samples).
    pub fn from_values<I, F>(values: F) -> Option<Histogram>
    where
        F: Fn() -> I,
        I: Iterator<Item = i32>,
    {
        let (mut min, mut max) = (i32::MAX, i32::MIN);
        for v in values() {
            min = min.min(v);
            max = max.max(v);
        }
        if min > max || i64::from(max) - i64::from(min) >= MAX_RANGE {
            return None;
        }
        let mut counts = vec![0u64; (i64::from(max) - i64::from(min) + 1) as usize];
        let mut total = 0u64;
        for v in values() {
            // In range: min ≤ v ≤ max was established over the same values.
            if let Some(count) = counts.get_mut((i64::from(v) - i64::from(min)) as usize) {
                *count += 1;
                total += 1;
            }
        }
        Some(Histogram { min, counts, total })
    }

    /// Smallest value.
    pub fn min(&self) -> i32 {
        self.min
    }

    /// Largest value.
    pub fn max(&self) -> i32 {
        self.min + self.counts.len() as i32 - 1
    }

    /// Number of values counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The value at 0-based `rank` in sorted order (the largest value past the end).
    pub fn value_at_rank(&self, rank: u64) -> i32 {
        let mut seen = 0u64;
        for (offset, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen > rank {
                return self.min + offset as i32;
            }
        }
        self.max()
    }

    /// The automatic window of these stored values after `rescale` (see the module
    /// documentation), or `None` when all values are equal.
    pub fn auto_window(&self, rescale: Rescale) -> Option<Window> {
        let last = self.total.saturating_sub(1) as f64;
        let low_rank = (last * (AUTO_LOW_PERCENTILE / 100.0)).floor() as u64;
        let high_rank = (last * (AUTO_HIGH_PERCENTILE / 100.0)).ceil() as u64;
        let range = |a: i32, b: i32| {
            let (a, b) = (rescale.apply(a), rescale.apply(b));
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            (high > low).then_some(Window::Range { low, high })
        };
        range(self.value_at_rank(low_rank), self.value_at_rank(high_rank))
            .or_else(|| range(self.min(), self.max()))
    }
}

/// The 8-bit value of every stored value in a histogram's range: rescale, then the window (or
/// the automatic one), then inversion for MONOCHROME1.
#[derive(Clone, Debug)]
pub struct Lut {
    min: i32,
    table: Vec<u8>,
}

impl Lut {
    /// The table for `histogram`'s range. With no `window`, the automatic window is used (an
    /// image with a single value becomes black, or white when inverted).
    pub fn new(
        histogram: &Histogram,
        rescale: Rescale,
        window: Option<Window>,
        invert: bool,
    ) -> Lut {
        let window = window.or_else(|| histogram.auto_window(rescale));
        let table = (histogram.min()..=histogram.max())
            .map(|stored| {
                let y = window.map_or(0, |w| w.apply(rescale.apply(stored)));
                if invert { 255 - y } else { y }
            })
            .collect();
        Lut {
            min: histogram.min(),
            table,
        }
    }

    /// The 8-bit value of `stored` (0 outside the table's range, which callers never ask for).
    pub fn get(&self, stored: i32) -> u8 {
        usize::try_from(i64::from(stored) - i64::from(self.min))
            .ok()
            .and_then(|i| self.table.get(i).copied())
            .unwrap_or(0)
    }
}

/// 8-bit rendering of greyscale stored values (see the module documentation): `values` is
/// called up to three times and must yield the same values each time. `None` when there are no
/// values or they span more than 17 bits.
pub fn render_grey<I, F>(
    values: F,
    rescale: Rescale,
    window: Option<Window>,
    invert: bool,
) -> Option<Vec<u8>>
where
    F: Fn() -> I,
    I: Iterator<Item = i32>,
{
    let histogram = Histogram::from_values(&values)?;
    let lut = Lut::new(&histogram, rescale, window, invert);
    Some(values().map(|v| lut.get(v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(values: &[i32], rescale: Rescale, window: Option<Window>, invert: bool) -> Vec<u8> {
        render_grey(|| values.iter().copied(), rescale, window, invert).expect("renders")
    }

    /// The DICOM linear function at its edges (PS3.3 C.11.2.1.2.1), with centre 40 and
    /// width 400 (a CT soft-tissue window): −160 and below are black, above 239 white.
    #[test]
    fn dicom_window_follows_the_standard() {
        let w = Window::center_width(40.0, 400.0).expect("valid");
        assert_eq!(w.apply(-1000.0), 0);
        assert_eq!(w.apply(-160.5), 0);
        assert_eq!(w.apply(239.5), 255);
        assert_eq!(w.apply(239.6), 255);
        assert_eq!(w.apply(3000.0), 255);
        // Centre: ((39.5 − 39.5)/399 + 0.5) × 255 = 127.5 → 128 (half up).
        assert_eq!(w.apply(39.5), 128);
        // On the low edge, and one quarter of the way up: 63.75 → 64.
        assert_eq!(w.apply(-160.0), 0);
        assert_eq!(w.apply(-60.25), 64);
        // A width of 1 is a threshold at the centre.
        let t = Window::center_width(100.0, 1.0).expect("valid");
        assert_eq!((t.apply(99.5), t.apply(99.6)), (0, 255));
        // Unusable windows are rejected.
        assert!(Window::center_width(0.0, 0.5).is_none());
        assert!(Window::center_width(f64::NAN, 10.0).is_none());
    }

    #[test]
    fn range_window_is_linear_and_clamped() {
        let w = Window::Range {
            low: 100.0,
            high: 355.0,
        };
        assert_eq!(w.apply(0.0), 0);
        assert_eq!(w.apply(100.0), 0);
        assert_eq!(w.apply(101.0), 1);
        assert_eq!(w.apply(227.5), 128);
        assert_eq!(w.apply(354.0), 254);
        assert_eq!(w.apply(355.0), 255);
        assert_eq!(w.apply(1e9), 255);
    }

    /// 1000 values 0..=999: ranks ⌊0.005 × 999⌋ = 4 and ⌈0.995 × 999⌉ = 995, so 4 ↦ 0 and
    /// 995 ↦ 255; outliers beyond are clamped.
    #[test]
    fn auto_window_uses_the_percentiles() {
        let values: Vec<i32> = (0..1000).collect();
        let h = Histogram::from_values(|| values.iter().copied()).expect("counts");
        assert_eq!((h.min(), h.max(), h.total()), (0, 999, 1000));
        assert_eq!(
            h.auto_window(Rescale::IDENTITY),
            Some(Window::Range {
                low: 4.0,
                high: 995.0
            })
        );
        let out = render(&values, Rescale::IDENTITY, None, false);
        assert_eq!(&out[..6], &[0, 0, 0, 0, 0, 0]);
        assert_eq!(&out[994..], &[255, 255, 255, 255, 255, 255]);
        assert_eq!(out[500], ((496.0 / 991.0 * 255.0 + 0.5) as u8));
        // A single extreme outlier does not squash everything else to black.
        let mut spiky = vec![10; 999];
        spiky.push(60000);
        spiky[0] = 0;
        spiky[1] = 20;
        let out = render(&spiky, Rescale::IDENTITY, None, false);
        // The percentiles are both 10 (flat), so the full range 0..=60000 is used instead.
        assert_eq!(out[999], 255);
        assert_eq!(out[0], 0);
    }

    #[test]
    fn rescale_and_inversion() {
        // CT-like: stored 0..=2000, modality −1024..=976, a soft-tissue window.
        let values = [0, 1024, 1064, 1264, 2000];
        let rescale = Rescale {
            slope: 1.0,
            intercept: -1024.0,
        };
        let window = Window::center_width(40.0, 400.0);
        let out = render(&values, rescale, window, false);
        assert_eq!(out[0], 0); // −1024 (air)
        assert_eq!(
            out[1],
            Window::center_width(40.0, 400.0).map_or(0, |w| w.apply(0.0))
        );
        assert_eq!(out[2], 128); // 40 is the centre (rounded half up from 127.8)
        assert_eq!(out[3], 255); // 240
        let inverted = render(&values, rescale, window, true);
        for (a, b) in out.iter().zip(&inverted) {
            assert_eq!(*a, 255 - b);
        }
        // A negative slope flips the automatic window's ends, so the order of grey levels
        // follows the modality values.
        let flipped = render(
            &[0, 1, 2, 3],
            Rescale {
                slope: -1.0,
                intercept: 0.0,
            },
            None,
            false,
        );
        assert_eq!(flipped, vec![255, 170, 85, 0]);
    }

    #[test]
    fn flat_and_degenerate_inputs() {
        assert_eq!(
            render(&[7, 7, 7], Rescale::IDENTITY, None, false),
            vec![0; 3]
        );
        assert_eq!(render(&[7, 7], Rescale::IDENTITY, None, true), vec![255; 2]);
        assert!(render_grey(std::iter::empty, Rescale::IDENTITY, None, false).is_none());
        // Wider than 17 bits: refused rather than allocating a huge table.
        assert!(
            render_grey(
                || [i32::MIN, i32::MAX].into_iter(),
                Rescale::IDENTITY,
                None,
                false
            )
            .is_none()
        );
        // Signed 16-bit extremes fit.
        let out = render(&[-32768, 32767], Rescale::IDENTITY, None, false);
        assert_eq!(out, vec![0, 255]);
    }
}
