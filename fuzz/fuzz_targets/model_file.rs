//! Any bytes through `ModelFile::from_bytes` (magic, version, checksum, JSON header, tensors):
//! it must return `Ok` or `Err`, never panic or allocate without bound.
//!
//! The file ends with a SHA-256 of everything before it, which random mutations almost never
//! satisfy; so each input is also tried with a correct checksum appended, which lets the
//! fuzzer reach the header and tensor parsing behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medtransfer_core::model_file::ModelFile;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let _ = ModelFile::from_bytes(data);
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&Sha256::digest(data));
    if let Ok(model) = ModelFile::from_bytes(&sealed) {
        // A file that loads can be written again, and that loads too.
        assert!(ModelFile::from_bytes(&model.to_bytes()).is_ok());
    }
});
