//! Peak memory of decoding metadata bombs: small files whose colour profile, text, tags or
//! deflated data set inflate far beyond their picture. Each must decode (metadata skipped) or
//! be refused with a message, while the decoder allocates no more than
//! [`memory_budget`] of its pixels plus the file's own size (plus a little for the test's own
//! bookkeeping). Measured with a counting global allocator, so this file holds one test: the
//! figures are not disturbed by other tests running beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use medtransfer_core::formats::{DecodeError, decode_8bit, memory_budget};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counts are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How much each bomb's metadata inflates to: three times the budget of its 96 × 64 picture.
const BOMB: usize = 96 << 20;
const WIDTH: u32 = 96;
const HEIGHT: u32 = 64;

/// `BOMB` zero bytes, zlib-compressed (about 100 kB).
fn zeros_zlib() -> Vec<u8> {
    let block = vec![0u8; 1 << 20];
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..BOMB / block.len() {
        e.write_all(&block).expect("compress");
    }
    e.finish().expect("finish")
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// A 96 × 64 grey PNG with `extra` chunks before its image data.
fn png_with(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut ihdr = WIDTH.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&HEIGHT.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    for chunk in extra {
        out.extend_from_slice(chunk);
    }
    let rows: Vec<u8> = (0..HEIGHT)
        .flat_map(|y| std::iter::once(0).chain((0..WIDTH).map(move |x| (x + y) as u8)))
        .collect();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&rows).expect("compress");
    out.extend(png_chunk(b"IDAT", &z.finish().expect("finish")));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// A little-endian 96 × 64 8-bit grey TIFF (one uncompressed strip) with `extra` IFD entries
/// (tag, type, count, value or offset); its one strip is `strip`, compressed by `compression`.
fn tiff_with(extra: &[(u16, u16, u32, u32)], compression: u16, strip: &[u8]) -> Vec<u8> {
    let mut entries: Vec<(u16, u16, u32, u32)> = vec![
        (256, 4, 1, WIDTH),
        (257, 4, 1, HEIGHT),
        (258, 3, 1, 8),
        (259, 3, 1, u32::from(compression)),
        (262, 3, 1, 1),
        (273, 4, 1, 0),
        (277, 3, 1, 1),
        (278, 4, 1, HEIGHT),
        (279, 4, 1, strip.len() as u32),
    ];
    entries.extend_from_slice(extra);
    entries.sort_by_key(|e| e.0);
    let data_offset = (8 + 2 + entries.len() * 12 + 4) as u32;
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, count, value) in entries {
        let value = if tag == 273 { data_offset } else { value };
        t.extend_from_slice(&tag.to_le_bytes());
        t.extend_from_slice(&kind.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        if kind == 3 && count == 1 {
            t.extend_from_slice(&(value as u16).to_le_bytes());
            t.extend_from_slice(&[0, 0]);
        } else {
            t.extend_from_slice(&value.to_le_bytes());
        }
    }
    t.extend_from_slice(&0u32.to_le_bytes());
    t.extend_from_slice(strip);
    t
}

/// One explicit-VR little-endian element.
fn element(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = group.to_le_bytes().to_vec();
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"UN" | b"UT" | b"SQ") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
    out
}

fn us(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A DICOM Part 10 file in Deflated Explicit VR Little Endian whose data set is `deflated`.
fn deflated_dicom(deflated: &[u8]) -> Vec<u8> {
    let mut meta = Vec::new();
    meta.extend(element(0x0002, 0x0001, b"OB", &[0, 1]));
    meta.extend(element(
        0x0002,
        0x0002,
        b"UI",
        b"1.2.840.10008.5.1.4.1.1.7\0",
    ));
    meta.extend(element(0x0002, 0x0003, b"UI", b"1.2.3.4\0"));
    meta.extend(element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1.99"));
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend(element(
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    ));
    out.extend(meta);
    out.extend_from_slice(deflated);
    out
}

/// The image attributes of a 96 × 64 8-bit MONOCHROME2 picture.
fn image_attributes() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(element(0x0028, 0x0002, b"US", &us(1)));
    out.extend(element(0x0028, 0x0004, b"CS", b"MONOCHROME2 "));
    out.extend(element(0x0028, 0x0010, b"US", &us(HEIGHT as u16)));
    out.extend(element(0x0028, 0x0011, b"US", &us(WIDTH as u16)));
    out.extend(element(0x0028, 0x0100, b"US", &us(8)));
    out.extend(element(0x0028, 0x0101, b"US", &us(8)));
    out.extend(element(0x0028, 0x0102, b"US", &us(7)));
    out.extend(element(0x0028, 0x0103, b"US", &us(0)));
    out
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).expect("compress");
    e.finish().expect("finish")
}

/// A deflated data set: `before` (raw, deflated), then a private OB element of `BOMB` zeros
/// streamed through the same compressor, then `after`.
fn deflated_with_blob(before: &[u8], blob_header: &[u8], after: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(before).expect("compress");
    e.write_all(blob_header).expect("compress");
    let block = vec![0u8; 1 << 20];
    for _ in 0..BOMB / block.len() {
        e.write_all(&block).expect("compress");
    }
    e.write_all(after).expect("compress");
    e.finish().expect("finish")
}

fn blob_header(group: u16, elem: u16) -> Vec<u8> {
    let mut out = group.to_le_bytes().to_vec();
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(b"OB\0\0");
    out.extend_from_slice(&(BOMB as u32).to_le_bytes());
    out
}

fn pixel_data() -> Vec<u8> {
    let pixels: Vec<u8> = (0..WIDTH * HEIGHT).map(|i| (i % 251) as u8).collect();
    element(0x7FE0, 0x0010, b"OB", &pixels)
}

/// Decodes `file`, returning the outcome and the peak of extra memory while decoding.
fn measure(file: &[u8]) -> (Result<(u32, u32), DecodeError>, usize) {
    let baseline = CURRENT.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let result = decode_8bit(file).map(|i| (i.width(), i.height()));
    let peak = PEAK.load(Ordering::SeqCst) - baseline;
    (result, peak)
}

#[test]
fn metadata_bombs_stay_within_the_memory_budget() {
    let zlib = zeros_zlib();
    let mut icc = b"bomb\0\0".to_vec();
    icc.extend_from_slice(&zlib);
    let mut ztxt = b"Comment\0\0".to_vec();
    ztxt.extend_from_slice(&zlib);
    let mut itxt = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
    itxt.extend_from_slice(&zlib);
    let tiff_strip: Vec<u8> = (0..WIDTH * HEIGHT).map(|i| i as u8).collect();

    let mut dicom_before = element(0x0008, 0x0060, b"CS", b"OT");
    dicom_before.extend(element(0x0009, 0x0010, b"LO", b"BOMB"));
    let mut dicom_after = image_attributes();
    dicom_after.extend(pixel_data());
    let dicom_private_blob = deflated_dicom(&deflated_with_blob(
        &dicom_before,
        &blob_header(0x0009, 0x1000),
        &dicom_after,
    ));
    // The image declared first, then pixel data far longer than a 96 × 64 picture.
    let mut dicom_attrs = element(0x0008, 0x0060, b"CS", b"OT");
    dicom_attrs.extend(image_attributes());
    let dicom_long_pixels = deflated_dicom(&deflated_with_blob(
        &dicom_attrs,
        &blob_header(0x7FE0, 0x0010),
        &[],
    ));
    // A plain small deflated DICOM decodes, for comparison.
    let mut plain = dicom_attrs.clone();
    plain.extend(pixel_data());
    let dicom_plain = deflated_dicom(&deflate(&plain));

    let bombs: Vec<(&str, Vec<u8>)> = vec![
        (
            "PNG iCCP colour profile",
            png_with(&[png_chunk(b"iCCP", &icc)]),
        ),
        ("PNG zTXt text", png_with(&[png_chunk(b"zTXt", &ztxt)])),
        (
            "PNG iTXt compressed XMP",
            png_with(&[png_chunk(b"iTXt", &itxt)]),
        ),
        (
            "TIFF ICC tag far past the end",
            tiff_with(&[(34675, 7, 400_000_000, 8)], 1, &tiff_strip),
        ),
        (
            "TIFF XMP tag far past the end",
            tiff_with(&[(700, 1, 400_000_000, 8)], 1, &tiff_strip),
        ),
        (
            "TIFF strip inflating past its picture",
            // Declared Deflate-compressed, inflating to 96 MiB for a 6 kB picture.
            tiff_with(&[], 8, &zlib),
        ),
        ("DICOM deflated private tag", dicom_private_blob),
        ("DICOM deflated over-long pixel data", dicom_long_pixels),
        ("DICOM deflated, ordinary", dicom_plain),
    ];
    let budget = memory_budget(u64::from(WIDTH * HEIGHT)) as usize;
    let mut report = Vec::new();
    let mut over = Vec::new();
    for (name, file) in &bombs {
        let (result, peak) = measure(file);
        let outcome = match &result {
            Ok((w, h)) => format!("decoded {w}×{h}"),
            Err(e) => format!("refused: {e}"),
        };
        report.push(format!(
            "{name}: file {} kB, peak {:.1} MiB; {outcome}",
            file.len() / 1000,
            peak as f64 / (1 << 20) as f64
        ));
        if let Ok(dims) = result {
            assert_eq!(dims, (WIDTH, HEIGHT), "{name}");
        }
        // The budget, plus the file itself once more (a decoder may copy what it reads) and
        // 2 MiB for the decoders' fixed working buffers (inflate windows, row buffers). Before
        // the budget, the iCCP bomb peaked at 132 MiB and the DICOM ones at 256 MiB.
        if peak > budget + file.len() + (2 << 20) {
            over.push(name.to_string());
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        over.is_empty(),
        "over the budget of {} MiB: {over:?}\n{}",
        budget >> 20,
        report.join("\n")
    );
    // The ordinary file is not refused.
    assert!(measure(&bombs[8].1).0.is_ok(), "{}", report.join("\n"));
}
