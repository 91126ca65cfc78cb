//! A CNI plugin's stdout (an ADD result of any version) interpreted as crius does.
#![no_main]

use crius_net::PodNetworkResult;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = PodNetworkResult::from_value(value, "eth0");
    }
});
