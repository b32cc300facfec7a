//! DICOM RLE Lossless (PS3.5 Annex G): one fragment per frame, a 64-byte header of up to 15
//! segment offsets, one PackBits segment per byte plane (most significant byte first, sample
//! by sample). Written here, bounds-checked throughout, rather than using
//! `dicom-transfer-syntax-registry`'s adapter, which indexes and unwraps unchecked on damaged
//! fragments.

/// Decodes one frame's fragment into interleaved little-endian samples
/// (`rows × columns × samples × bytes_per_sample` bytes).
pub fn decode_frame(
    fragment: &[u8],
    pixels: usize,
    samples: usize,
    bytes_per_sample: usize,
) -> Result<Vec<u8>, String> {
    let segments = samples * bytes_per_sample;
    let header = fragment
        .get(..64)
        .ok_or("the RLE fragment is shorter than its 64-byte header")?;
    let word = |i: usize| {
        let b = &header[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    };
    let declared = word(0);
    if declared != segments {
        return Err(format!(
            "the RLE header declares {declared} segments, but {samples} sample(s) of \
             {bytes_per_sample} byte(s) need {segments}"
        ));
    }
    let total = pixels
        .checked_mul(segments)
        .ok_or("the RLE frame is too large")?;
    let mut out = vec![0u8; total];
    let stride = segments;
    for segment in 0..segments {
        let start = word(segment + 1);
        let end = if segment + 1 < segments {
            word(segment + 2)
        } else {
            fragment.len()
        };
        let data = fragment
            .get(start..end)
            .ok_or("an RLE segment lies outside its fragment")?;
        // Segment `segment` holds byte `byte` (0 = most significant) of sample `sample`;
        // little-endian output puts the most significant byte last.
        let (sample, byte) = (segment / bytes_per_sample, segment % bytes_per_sample);
        let offset = sample * bytes_per_sample + (bytes_per_sample - 1 - byte);
        let mut positions = (offset..total).step_by(stride);
        let written = unpack_bits(data, pixels, |value| {
            if let Some(i) = positions.next() {
                out[i] = value;
            }
        });
        if written < pixels {
            return Err(format!(
                "an RLE segment decodes to {written} bytes, expected {pixels}"
            ));
        }
    }
    Ok(out)
}

/// PackBits: header `n` in 0..=127 copies the next `n + 1` bytes, −127..=−1 repeats the next
/// byte `1 − n` times, −128 is skipped. Emits at most `limit` bytes (extra output is ignored)
/// and returns how many were emitted.
fn unpack_bits(data: &[u8], limit: usize, mut emit: impl FnMut(u8)) -> usize {
    let mut written = 0;
    let mut i = 0;
    while i < data.len() && written < limit {
        let n = data[i] as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            let end = (i + count).min(data.len());
            for &b in &data[i..end] {
                if written == limit {
                    break;
                }
                emit(b);
                written += 1;
            }
            i = end;
        } else if n != -128 {
            let Some(&b) = data.get(i) else { break };
            i += 1;
            let count = (1 - i32::from(n)) as usize;
            for _ in 0..count.min(limit - written) {
                emit(b);
            }
            written += count.min(limit - written);
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fragment with the given segments (header + concatenated data).
    fn fragment(segments: &[Vec<u8>]) -> Vec<u8> {
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        let mut offset = 64u32;
        for (i, s) in segments.iter().enumerate() {
            header[4 + 4 * i..8 + 4 * i].copy_from_slice(&offset.to_le_bytes());
            offset += s.len() as u32;
        }
        let mut out = header;
        for s in segments {
            out.extend_from_slice(s);
        }
        out
    }

    #[test]
    fn packbits_literal_and_runs() {
        let mut out = Vec::new();
        // 3 literals, a run of 4 × 9, a no-op, 1 literal.
        let n = unpack_bits(&[2, 1, 2, 3, (-3i8) as u8, 9, 0x80, 0, 7], 100, |b| {
            out.push(b)
        });
        assert_eq!(out, vec![1, 2, 3, 9, 9, 9, 9, 7]);
        assert_eq!(n, 8);
        // Output is capped; truncated input stops cleanly.
        let mut out = Vec::new();
        assert_eq!(unpack_bits(&[(-127i8) as u8, 5], 3, |b| out.push(b)), 3);
        assert_eq!(unpack_bits(&[5, 1], 10, |_| {}), 1);
        assert_eq!(unpack_bits(&[(-5i8) as u8], 10, |_| {}), 0);
    }

    /// 16-bit values 0x1234 and 0xABCD over two pixels: planes MSB then LSB.
    #[test]
    fn sixteen_bit_planes_become_little_endian_samples() {
        let msb = vec![1, 0x12, 0xAB];
        let lsb = vec![1, 0x34, 0xCD];
        let out = decode_frame(&fragment(&[msb, lsb]), 2, 1, 2).expect("decodes");
        assert_eq!(out, vec![0x34, 0x12, 0xCD, 0xAB]);
    }

    #[test]
    fn rgb_planes_are_interleaved() {
        let r = vec![(-1i8) as u8, 10];
        let g = vec![(-1i8) as u8, 20];
        let b = vec![(-1i8) as u8, 30];
        let out = decode_frame(&fragment(&[r, g, b]), 2, 3, 1).expect("decodes");
        assert_eq!(out, vec![10, 20, 30, 10, 20, 30]);
    }

    #[test]
    fn damaged_fragments_are_errors() {
        assert!(decode_frame(&[], 4, 1, 1).is_err());
        assert!(decode_frame(&[0; 10], 4, 1, 1).is_err());
        // Wrong segment count.
        assert!(decode_frame(&fragment(&[vec![0, 1]]), 1, 3, 1).is_err());
        // Segment too short for the frame.
        assert!(decode_frame(&fragment(&[vec![0, 1]]), 4, 1, 1).is_err());
        // Offsets past the end, or decreasing.
        let mut bad = fragment(&[vec![0, 1], vec![0, 2]]);
        bad[8..12].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode_frame(&bad, 1, 1, 2).is_err());
        let mut bad = fragment(&[vec![0, 1], vec![0, 2]]);
        bad[8..12].copy_from_slice(&10u32.to_le_bytes());
        assert!(decode_frame(&bad, 1, 1, 2).is_err());
    }
}
