//! Bytes a streaming client sends over SPDY/3.1: frames read one after another (headers
//! inflated with the connection's shared zlib stream) until the end or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = crius_stream::fuzzing::read_frames(data);
});
