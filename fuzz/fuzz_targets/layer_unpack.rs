//! A layer (plain tar, or gzip/zstd by its magic) unpacked into a fresh directory: it must
//! never panic, and nothing may appear outside the destination.
#![no_main]

use std::io::Write;

use crius_image::unpack::{UnpackLimits, unpack_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = tempfile::tempdir().expect("tempdir");
    let blob = base.path().join("blob");
    std::fs::File::create(&blob)
        .and_then(|mut f| f.write_all(data))
        .expect("write blob");
    let dest = base.path().join("dest");
    std::fs::create_dir(&dest).expect("dest");
    let limits = UnpackLimits {
        max_bytes: 8 << 20,
        max_entries: 4096,
    };
    let _ = unpack_file(&blob, &dest, None, limits);
    let mut names: Vec<_> = std::fs::read_dir(base.path())
        .expect("base")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["blob", "dest"],
        "the layer wrote outside its directory"
    );
    let _ = crius_image::unpack::remove_tree(&dest);
});
