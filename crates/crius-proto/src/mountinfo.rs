//! `/proc/PID/mountinfo` (proc_pid_mountinfo(5)): one line per mount, fields separated by single
//! spaces, the optional fields ended by a lone `-`. The kernel writes a space, tab, newline or
//! backslash in a path as an octal escape (`\040` …); [`Mount`] holds its paths unescaped.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mount of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount<'a> {
    /// The mount's id (field 1), as statx's `STATX_MNT_ID` reports it.
    pub id: u64,
    /// The filesystem's device, `major:minor` (field 3).
    pub dev: &'a str,
    /// The directory of the filesystem mounted here (field 4).
    pub root: PathBuf,
    /// Where it is mounted (field 5).
    pub mount_point: PathBuf,
    /// Per-mount options, comma-separated (field 6).
    pub mount_options: &'a str,
    /// The filesystem type (the first field after `-`).
    pub fs_type: &'a str,
    /// Per-superblock options, comma-separated (the third field after `-`).
    pub super_options: &'a str,
}

impl Mount<'_> {
    /// Whether the mount or its superblock is read-only.
    pub fn read_only(&self) -> bool {
        let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        ro(self.mount_options) || ro(self.super_options)
    }
}

/// The mounts of mountinfo `text`, in its order; a line that does not parse is passed over.
pub fn parse(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(parse_line)
}

/// The text of `/proc/self/mountinfo`: the mounts of this process's mount namespace.
pub fn read_self() -> std::io::Result<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
}

fn parse_line(line: &str) -> Option<Mount<'_>> {
    let fields: Vec<&str> = line.split(' ').collect();
    // Six fixed fields, the optional ones, `-`, then type, source and superblock options.
    let separator = 6 + fields.get(6..)?.iter().position(|f| *f == "-")?;
    let [fs_type, _source, super_options] = *fields.get(separator + 1..separator + 4)? else {
        return None;
    };
    Some(Mount {
        id: fields[0].parse().ok()?,
        dev: fields[2],
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        mount_options: fields[5],
        fs_type,
        super_options,
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash …). A path need
/// not be UTF-8: its bytes are kept as they are.
pub fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = field.get(i + 1..i + 4)
            && oct.bytes().all(|b| (b'0'..=b'7').contains(&b))
            && let Ok(b) = u8::from_str_radix(oct, 8)
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    const TEXT: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
31 23 0:28 / /sys/fs/cgroup ro,nosuid master:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 22 0:45 /data\\040dir /mnt/with\\040space\\011tab rw shared:3 master:2 - overlay overlay rw,lowerdir=/a\\134b
51 22 0:46 / /mnt/back\\134slash\\012line rw - tmpfs none ro
not a mountinfo line
52 22 0:47 / /mnt/no-separator rw tmpfs tmpfs rw
";

    #[test]
    fn fields_parse_and_paths_unescape() {
        let mounts: Vec<Mount<'_>> = parse(TEXT).collect();
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[0].id, 22);
        assert_eq!(mounts[3].id, 50);
        assert_eq!(mounts[0].dev, "8:1");
        assert_eq!(mounts[0].root, PathBuf::from("/"));
        assert_eq!(mounts[0].mount_point, PathBuf::from("/"));
        assert_eq!(mounts[0].fs_type, "ext4");
        assert_eq!(mounts[0].super_options, "rw,errors=remount-ro");
        assert_eq!(mounts[2].fs_type, "cgroup2");
        assert_eq!(mounts[3].root, PathBuf::from("/data dir"));
        assert_eq!(mounts[3].mount_point, PathBuf::from("/mnt/with space\ttab"));
        assert_eq!(mounts[3].fs_type, "overlay");
        assert_eq!(mounts[3].mount_options, "rw");
        assert_eq!(
            mounts[4].mount_point,
            PathBuf::from("/mnt/back\\slash\nline")
        );
    }

    #[test]
    fn read_only_is_either_set_of_options() {
        let ro: Vec<bool> = parse(TEXT).map(|m| m.read_only()).collect();
        assert_eq!(ro, [false, true, false, false, true]);
    }

    #[test]
    fn unescape_keeps_what_is_not_an_escape() {
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape("/a\\04"), PathBuf::from("/a\\04"));
        assert_eq!(unescape("/a\\09x"), PathBuf::from("/a\\09x"));
        assert_eq!(unescape("/a\\"), PathBuf::from("/a\\"));
        assert_eq!(unescape("/\\377").as_os_str().as_bytes(), b"/\xff");
    }

    #[test]
    fn this_process_has_a_root_mount() {
        let text = read_self().expect("/proc/self/mountinfo");
        assert!(parse(&text).any(|m| m.mount_point == std::path::Path::new("/")));
    }
}
