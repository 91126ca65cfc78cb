//! A registry's manifest or index body, with each content type crius accepts and none, and
//! platform selection over whatever index it yields.
#![no_main]

use crius_image::manifest::{Parsed, describe_platforms, parse, select_platform};
use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 5] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[usize::from(sel) % TYPES.len()];
    if let Ok(Parsed::Index(manifests)) = parse(body, content_type) {
        let _ = describe_platforms(&manifests);
        let _ = select_platform(&manifests, "linux", "amd64");
    }
});
