//! A structural check of a DICOM file before `dicom-object` parses it.
//!
//! `dicom-object` reserves and zero-fills each element's declared length before reading it, so
//! a 200-byte file declaring a 4 GB element would make it allocate 4 GB, and it builds nested
//! sequences recursively, so thousands of nested sequences would exhaust the stack. This walk
//! mirrors how `dicom-object` 0.10 reads the file meta group and the data set (`DataSetReader`:
//! sequences, items, encapsulated pixel data, undefined lengths) without allocating, and refuses
//! any element or item longer than the bytes left in the file, and nesting deeper than
//! [`MAX_DEPTH`]. A deflated data set is inflated under a budget proportional to the image it
//! declares ([`check_data_set`]) and walked the same way. Whatever passes, the parser's
//! allocations are bounded by the file's size.

use std::io::Read;

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::VR;
use dicom_dictionary_std::StandardDataDictionary;

use crate::formats::DecodeError;

/// Deepest nesting of sequences and items accepted (each sequence level counts twice: the
/// sequence and its item). Real files nest a handful of levels.
pub const MAX_DEPTH: usize = 64;

/// Largest deflated data set accepted once inflated.
pub const MAX_INFLATED_BYTES: u64 = 256 << 20;

/// Most of a deflated data set that may come before its pixel data once inflated: the
/// constant part of the decoder's memory budget ([`crate::formats::METADATA_BUDGET`]).
pub const METADATA_BUDGET: u64 = crate::formats::METADATA_BUDGET;

const UNDEFINED: u32 = u32::MAX;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// How the data set after the file meta group is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSetEncoding {
    /// Explicit VR (else implicit).
    pub explicit_vr: bool,
    /// Big endian (else little endian).
    pub big_endian: bool,
    /// Deflate-compressed data set.
    pub deflated: bool,
}

/// What the file meta group says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Transfer Syntax UID, trailing spaces and NULs removed.
    pub transfer_syntax: String,
    /// Where the data set starts (after the meta group).
    pub data_set_offset: usize,
}

/// Reads the file meta group of `data` (which starts with `DICM`) the way `dicom-object`
/// does, checking every length against the bytes left.
pub fn read_meta(data: &[u8]) -> Result<Meta, String> {
    let mut r = Cursor {
        data,
        pos: 4,
        big_endian: false,
    };
    if data.get(..4) != Some(b"DICM".as_slice()) {
        return Err("no DICM magic".into());
    }
    let (tag, len, _) = r
        .explicit_header()
        .ok_or("the file meta group is missing")?;
    if tag != Tag(0x0002, 0x0000) || len != 4 {
        return Err("the file meta group does not start with its group length".into());
    }
    let group_length = r.u32().ok_or("the file meta group is truncated")?;
    let mut total: u32 = 0;
    let mut transfer_syntax = None;
    while total < group_length {
        let (tag, len, header_len) = r
            .explicit_header()
            .ok_or("the file meta group is truncated")?;
        if len == UNDEFINED {
            return Err(format!("meta element {tag} has an undefined length"));
        }
        let value = r
            .take(len)
            .ok_or_else(|| format!("meta element {tag} is longer than the file"))?;
        if tag == Tag(0x0002, 0x0010) {
            transfer_syntax = Some(
                String::from_utf8_lossy(value)
                    .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string(),
            );
        }
        total = total.saturating_add(header_len as u32).saturating_add(len);
    }
    Ok(Meta {
        transfer_syntax: transfer_syntax.ok_or("the file meta group has no transfer syntax")?,
        data_set_offset: r.pos,
    })
}

/// Walks the data set `data[offset..]` (see the module documentation). A deflated data set is
/// inflated under a budget proportional to its image: at most [`METADATA_BUDGET`] (32 MiB) of
/// it may come before the Pixel Data element, and the whole at most that plus the pixel bytes
/// that Rows, Columns, Samples per Pixel, Bits Allocated and Number of Frames declare (never
/// more than [`MAX_INFLATED_BYTES`]), so that a few kilobytes of deflated private tags cannot
/// make the decoder allocate hundreds of megabytes.
pub fn check_data_set(
    data: &[u8],
    offset: usize,
    encoding: DataSetEncoding,
) -> Result<(), DecodeError> {
    let rest = data.get(offset..).unwrap_or_default();
    let walk_all = |bytes: &[u8]| {
        walk(bytes, encoding.explicit_vr, encoding.big_endian, false)
            .map(|_| ())
            .map_err(super::damaged)
    };
    if !encoding.deflated {
        return walk_all(rest);
    }
    let mut decoder = flate2::read::DeflateDecoder::new(rest);
    let mut inflated = Vec::new();
    inflate(&mut decoder, &mut inflated, METADATA_BUDGET)?;
    if inflated.len() as u64 > METADATA_BUDGET {
        let over_budget = |detail: String| DecodeError::Unsupported {
            format: "DICOM",
            detail,
        };
        let too_much = || {
            over_budget(format!(
                "the deflated data set holds more than {} MiB before its pixel data \
                 (metadata that large is refused)",
                METADATA_BUDGET >> 20
            ))
        };
        // Only the start: what the image declares, and where its pixel data begins.
        let top = walk(&inflated, encoding.explicit_vr, encoding.big_endian, true)
            .map_err(|_| too_much())?;
        if !top.pixel_data_seen {
            return Err(too_much());
        }
        let pixel_bytes = top.pixel_bytes().ok_or_else(|| {
            super::damaged(
                "the data set does not declare Rows, Columns and Bits Allocated before its \
                 pixel data"
                    .into(),
            )
        })?;
        let cap = METADATA_BUDGET
            .saturating_add(pixel_bytes)
            .min(MAX_INFLATED_BYTES);
        // Inflation goes on from where it stopped, now under the image's budget.
        inflate(&mut decoder, &mut inflated, cap)?;
        if inflated.len() as u64 > cap {
            return Err(over_budget(format!(
                "the deflated data set inflates to more than {} MiB, more than its {}×{} \
                 image of {} frame(s) needs",
                cap >> 20,
                top.columns.unwrap_or_default(),
                top.rows.unwrap_or_default(),
                top.frames.unwrap_or(1)
            )));
        }
    }
    walk_all(&inflated)
}

/// Inflates more of `decoder`'s stream into `inflated`, stopping once it holds `cap + 1` bytes
/// (so a caller can tell that there were more than `cap`). The buffer grows by doubling but
/// never past `cap + 1` bytes, so the budget is what is allocated (`read_to_end` would double
/// past it).
fn inflate(decoder: &mut impl Read, inflated: &mut Vec<u8>, cap: u64) -> Result<(), DecodeError> {
    let limit = usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX);
    let mut chunk = vec![0u8; 64 << 10];
    while inflated.len() < limit {
        let want = chunk.len().min(limit - inflated.len());
        let n = decoder.read(&mut chunk[..want]).map_err(|e| {
            super::damaged(format!("the deflated data set cannot be inflated: {e}"))
        })?;
        if n == 0 {
            break;
        }
        if inflated.len() + n > inflated.capacity() {
            let grown = (inflated.capacity() * 2).max(inflated.len() + n).min(limit);
            inflated.reserve_exact(grown - inflated.len());
        }
        inflated.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// What the walk saw at the top level of the data set: the image's declared size and whether
/// the Pixel Data element was reached.
#[derive(Debug, Default)]
struct TopLevel {
    rows: Option<u16>,
    columns: Option<u16>,
    samples: Option<u16>,
    bits_allocated: Option<u16>,
    frames: Option<u32>,
    pixel_data_seen: bool,
}

impl TopLevel {
    /// Bytes of pixel data the declared image needs (`None` without Rows, Columns and Bits
    /// Allocated).
    fn pixel_bytes(&self) -> Option<u64> {
        let bytes_per_sample = u64::from(self.bits_allocated?).div_ceil(8);
        Some(
            u64::from(self.rows?)
                * u64::from(self.columns?)
                * u64::from(self.samples.unwrap_or(1).max(1))
                * bytes_per_sample
                * u64::from(self.frames.unwrap_or(1).max(1)),
        )
    }

    /// Keeps `value` if `tag` is one of the image's size attributes (PS3.3 C.7.6.3, C.7.6.6).
    fn note(&mut self, tag: Tag, value: &[u8], big_endian: bool) {
        let us = || {
            let b: [u8; 2] = value.get(..2)?.try_into().ok()?;
            Some(if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            })
        };
        match tag {
            Tag(0x0028, 0x0002) => self.samples = us(),
            Tag(0x0028, 0x0010) => self.rows = us(),
            Tag(0x0028, 0x0011) => self.columns = us(),
            Tag(0x0028, 0x0100) => self.bits_allocated = us(),
            Tag(0x0028, 0x0008) => {
                self.frames = std::str::from_utf8(value).ok().and_then(|s| {
                    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                        .parse()
                        .ok()
                });
            }
            _ => {}
        }
    }
}

/// An open sequence or item, as `DataSetReader` tracks them.
struct Open {
    item: bool,
    pixel_data: bool,
    /// Declared length (`UNDEFINED` for none).
    len: u32,
    /// Where it ends, in the parser's logical position (`None`: undefined length).
    end: Option<u64>,
}

/// The data set walk: the same states as `dicom_parser::dataset::DataSetReader`.
///
/// The parser keeps a *logical* position that advances by each element's declared length,
/// while the bytes it actually consumes from binary values are rounded down to whole numbers
/// (an `AT` value of 5 bytes consumes 4): sequence and item ends are checked against the
/// logical position, headers are read at the physical one. Both are tracked here.
///
/// With `stop_at_pixel_data`, the walk ends at the top-level Pixel Data element (for a prefix
/// of an inflated data set); it returns what it saw at the top level either way.
fn walk(
    data: &[u8],
    explicit_vr: bool,
    big_endian: bool,
    stop_at_pixel_data: bool,
) -> Result<TopLevel, String> {
    let mut top = TopLevel::default();
    let mut r = Cursor {
        data,
        pos: 0,
        big_endian,
    };
    // Logical minus physical position.
    let mut skew: u64 = 0;
    let mut open: Vec<Open> = Vec::new();
    let mut in_sequence = false;
    let mut pixel_data_header = false;
    let mut offset_table_next = false;
    loop {
        // Close sequences and items whose defined length has been read.
        while let Some(end) = open.last().and_then(|o| o.end) {
            let logical = r.pos as u64 + skew;
            if logical < end {
                break;
            }
            if logical > end {
                return Err("a sequence or item ends inside an element".into());
            }
            in_sequence = open.pop().is_some_and(|o| o.item);
            offset_table_next = false;
        }
        if open.len() > MAX_DEPTH {
            return Err(format!("sequences are nested more than {MAX_DEPTH} deep"));
        }
        if in_sequence {
            // Expecting an item, or the end of the sequence.
            let Some((tag, len)) = r.item_header() else {
                return Ok(top);
            };
            match tag {
                ITEM => {
                    let pixel_data = match open.last() {
                        Some(o) => o.pixel_data,
                        None => return Err("an item outside any sequence".into()),
                    };
                    let end = r.defined_end(len, skew, tag)?;
                    if pixel_data && end.is_none() {
                        return Err("a pixel data fragment has an undefined length".into());
                    }
                    open.push(Open {
                        item: true,
                        pixel_data,
                        len,
                        end,
                    });
                    in_sequence = false;
                }
                ITEM_END => {
                    open.pop();
                    in_sequence = true;
                }
                SEQUENCE_END => {
                    open.pop();
                    in_sequence = false;
                }
                other => return Err(format!("expected an item, found {other}")),
            }
        } else if let Some(Open {
            item: true,
            pixel_data: true,
            len,
            ..
        }) = open.last()
        {
            // The offset table (whole 32-bit words), else a fragment's bytes.
            let n = if offset_table_next { len & !3 } else { *len };
            offset_table_next = false;
            r.take(n)
                .ok_or("a pixel data fragment is longer than the file")?;
        } else if pixel_data_header {
            pixel_data_header = false;
            open.push(Open {
                item: false,
                pixel_data: true,
                len: UNDEFINED,
                end: None,
            });
            let Some((tag, len)) = r.item_header() else {
                return Ok(top);
            };
            match tag {
                ITEM => {
                    let end = r.defined_end(len, skew, tag)?;
                    if end.is_none() {
                        return Err("the pixel data offset table has an undefined length".into());
                    }
                    open.push(Open {
                        item: true,
                        pixel_data: true,
                        len,
                        end,
                    });
                    offset_table_next = len != 0;
                    in_sequence = false;
                }
                SEQUENCE_END => {
                    open.pop();
                    in_sequence = false;
                }
                other => {
                    return Err(format!(
                        "expected the pixel data offset table, found {other}"
                    ));
                }
            }
        } else {
            let header = if explicit_vr {
                r.explicit_header_with_vr()
            } else {
                r.implicit_header()
            };
            let Some((tag, vr, len)) = header else {
                return Ok(top);
            };
            if open.is_empty() {
                if tag == PIXEL_DATA {
                    top.pixel_data_seen = true;
                    if stop_at_pixel_data {
                        return Ok(top);
                    }
                } else if tag.0 == 0x0028 && len <= 16 {
                    let value = data.get(r.pos..r.pos + len as usize).unwrap_or_default();
                    top.note(tag, value, big_endian);
                }
            }
            if vr == VR::SQ {
                let end = r.defined_end(len, skew, tag)?;
                open.push(Open {
                    item: false,
                    pixel_data: false,
                    len,
                    end,
                });
                in_sequence = true;
            } else if tag == ITEM_END {
                if !open.is_empty() {
                    open.pop();
                    in_sequence = true;
                }
            } else if tag == PIXEL_DATA && len == UNDEFINED {
                pixel_data_header = true;
            } else if len == UNDEFINED {
                open.push(Open {
                    item: false,
                    pixel_data: false,
                    len,
                    end: None,
                });
                in_sequence = true;
            } else if len > 0 {
                // The parser allocates the declared length, then reads whole values only.
                if len as usize > data.len() - r.pos {
                    return Err(format!("element {tag} is longer than the file"));
                }
                let consumed = len & !(value_size(vr) - 1);
                r.take(consumed)
                    .ok_or_else(|| format!("element {tag} is longer than the file"))?;
                skew += u64::from(len - consumed);
            }
        }
    }
}

/// Size of one value of a binary VR, which `dicom-parser` reads whole values of (1 for
/// text and bytes, read exactly).
fn value_size(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::AT | VR::UL | VR::OL | VR::SL | VR::FL | VR::OF => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

/// VRs whose explicit-VR header has a 16-bit length (PS3.5 7.1.2); all others have two
/// reserved bytes and a 32-bit length.
fn has_short_length(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::AT
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::FL
            | VR::FD
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::SL
            | VR::SS
            | VR::ST
            | VR::TM
            | VR::UI
            | VR::UL
            | VR::US
    )
}

/// Reading position in the bytes, with the byte order of the transfer syntax.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl Cursor<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let out: [u8; N] = self.data.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(out)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.bytes::<2>()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes::<4>()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn tag(&mut self) -> Option<Tag> {
        Some(Tag(self.u16()?, self.u16()?))
    }

    /// `len` bytes, if that many are left.
    fn take(&mut self, len: u32) -> Option<&[u8]> {
        let end = self.pos.checked_add(usize::try_from(len).ok()?)?;
        let out = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    /// Where (logically) a sequence or item of `len` bytes starting here ends (`None`:
    /// undefined length), refusing one longer than the bytes left.
    fn defined_end(&self, len: u32, skew: u64, tag: Tag) -> Result<Option<u64>, String> {
        if len == UNDEFINED {
            return Ok(None);
        }
        if len as usize > self.data.len() - self.pos {
            return Err(format!("{tag} is longer than the file"));
        }
        Ok(Some(self.pos as u64 + skew + u64::from(len)))
    }

    /// Tag and length of an item or delimiter (no VR in any encoding).
    fn item_header(&mut self) -> Option<(Tag, u32)> {
        Some((self.tag()?, self.u32()?))
    }

    /// Explicit VR header as `dicom-encoding` reads it: tag, length, header size.
    fn explicit_header(&mut self) -> Option<(Tag, u32, usize)> {
        let (tag, vr, len) = self.explicit_header_with_vr()?;
        let size = if tag.0 == 0xFFFE || has_short_length(vr) {
            8
        } else {
            12
        };
        Some((tag, len, size))
    }

    /// Explicit VR header: tag, VR (UN for items and delimiters) and length.
    fn explicit_header_with_vr(&mut self) -> Option<(Tag, VR, u32)> {
        let tag = self.tag()?;
        if tag.0 == 0xFFFE {
            return Some((tag, VR::UN, self.u32()?));
        }
        let vr_bytes = self.bytes::<2>()?;
        let vr = VR::from_binary(vr_bytes).unwrap_or(VR::UN);
        let len = if has_short_length(vr) {
            u32::from(self.u16()?)
        } else {
            self.bytes::<2>()?;
            self.u32()?
        };
        Some((tag, vr, len))
    }

    /// Implicit VR header: the VR comes from the standard dictionary, as `dicom-encoding` does.
    fn implicit_header(&mut self) -> Option<(Tag, VR, u32)> {
        let tag = self.tag()?;
        let len = self.u32()?;
        let vr = if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
            VR::OW
        } else {
            StandardDataDictionary
                .by_tag(tag)
                .map(|entry| entry.vr().relaxed())
                .unwrap_or(VR::UN)
        };
        Some((tag, vr, len))
    }
}
