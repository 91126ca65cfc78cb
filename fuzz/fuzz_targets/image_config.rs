//! An image config blob as crius reads it at pull and import, and the record made of it.
#![no_main]

use crius_image::ImageConfig;
use crius_image::manifest::ConfigFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = serde_json::from_slice::<ConfigFile>(data) {
        let _ = ImageConfig::from_file(&file);
    }
});
