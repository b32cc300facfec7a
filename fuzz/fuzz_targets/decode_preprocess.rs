//! Any bytes through `preprocess_image` (format sniffing, PNG/JPEG/TIFF/DICOM decoding, the
//! pixel budget, windowing, resizing): it must return `Ok` or `Err`, never panic, hang or
//! allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medtransfer_core::preprocess::{INPUT_LEN, preprocess_image};

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = preprocess_image(data) {
        assert_eq!(input.len(), INPUT_LEN);
        assert!(input.iter().all(|v| v.is_finite()));
    }
});
