//! Any bytes through `ProjectArchive::from_bytes` (zip directory, manifest JSON, embeddings,
//! thumbnails, the embedded model file, the read budget): it must return `Ok` or `Err`, never
//! panic or allocate without bound. A project that loads is written again, and the copy loads
//! to the same project.
#![no_main]

use libfuzzer_sys::fuzz_target;
use medtransfer_core::project_file::ProjectArchive;

fuzz_target!(|data: &[u8]| {
    if let Ok(project) = ProjectArchive::from_bytes(data) {
        let bytes = project.to_bytes("fuzz").expect("a loaded project can be written");
        assert_eq!(ProjectArchive::from_bytes(&bytes).as_ref(), Ok(&project));
    }
});
