//! An image's /etc/passwd and /etc/group (split at the first NUL) and the image's `User`
//! (after a second NUL), resolved with Merge and Strict.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let passwd = parts.next().unwrap_or_default();
    let group = parts.next().unwrap_or_default();
    let user = parts.next().unwrap_or_default();
    for strict in [false, true] {
        if let Ok((_, gid, groups)) = crius_monitor::fuzzing::identity(passwd, group, user, strict)
        {
            assert_eq!(groups.first(), Some(&gid), "the primary gid comes first");
        }
    }
});
