//! Who a container runs as: names resolved against the image's `/etc/passwd` and `/etc/group`
//! inside its rootfs (never the host's), the Merge/Strict supplemental group policy, and the
//! identity read back from `/proc/PID/status`.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crius_proto::{ProcessUser, UserRequest};

use crate::Error;

/// Most supplementary groups a process may have (the kernel's NGROUPS_MAX).
const NGROUPS_MAX: usize = 65536;

/// Most bytes read of an image's `/etc/passwd` or `/etc/group`.
const MAX_ID_FILE: u64 = 4 << 20;

/// Reads `rel` inside `root`, resolving every symlink as if `root` were `/`. A missing file is
/// `None`, and so is anything but a regular file (a FIFO, device or socket an image puts there is
/// never read: it could block the monitor or expose a host device).
pub(crate) fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>, Error> {
    let dir =
        std::fs::File::open(root).map_err(Error::io(format!("cannot open {}", root.display())))?;
    let fd = match crate::resolve::openat2(
        std::os::fd::AsFd::as_fd(&dir),
        rel,
        libc::O_PATH,
        0,
        crate::resolve::RESOLVE_IN_ROOT,
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(errno) => {
            return Err(Error::Sys {
                what: format!("cannot open {rel} in the container rootfs"),
                source: errno,
            });
        }
    };
    // Only an O_PATH descriptor is taken until the file is known to be regular: opening a
    // device or FIFO at all can block or have effects.
    let stat = nix::sys::stat::fstat(&fd).map_err(|source| Error::Sys {
        what: format!("cannot stat {rel} in the container rootfs"),
        source,
    })?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        crate::log(format_args!(
            "{rel} in the container rootfs is not a regular file; treated as absent"
        ));
        return Ok(None);
    }
    let reopen = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&reopen)
        .map_err(Error::io(format!(
            "cannot open {rel} in the container rootfs"
        )))?;
    let mut text = Vec::new();
    file.take(MAX_ID_FILE)
        .read_to_end(&mut text)
        .map_err(Error::io(format!(
            "cannot read {rel} in the container rootfs"
        )))?;
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) home: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupEntry {
    pub(crate) name: String,
    pub(crate) gid: u32,
    pub(crate) members: Vec<String>,
}

pub(crate) fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: (*f.first()?).to_owned(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|h| (*h).to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

pub(crate) fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: (*f.first()?).to_owned(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The resolved identity of a container process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups, the primary gid first.
    pub(crate) groups: Vec<u32>,
    /// The user's home directory from the image's passwd (`/` when unknown).
    pub(crate) home: String,
}

/// Why the image user of a container cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A user name the image's passwd does not have.
    #[error("user {name:?} is not in the image's /etc/passwd")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// A group name the image's group file does not have.
    #[error("group {name:?} is not in the image's /etc/group")]
    UnknownGroup {
        /// The name.
        name: String,
    },
    /// More groups than a process may have.
    #[error("the process would have {count} groups; the kernel allows {NGROUPS_MAX}")]
    TooManyGroups {
        /// The groups the process would have.
        count: usize,
    },
}

/// Resolves `req` against the image's passwd and group files.
pub(crate) fn resolve(
    req: &UserRequest,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<Identity, IdentityError> {
    let (user_part, group_part) = if req.uid.is_some() || !req.username.is_empty() {
        (String::new(), None)
    } else {
        match req.image_user.split_once(':') {
            Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
            None => (req.image_user.clone(), None),
        }
    };
    // The user: by number (an entry is optional) or by name (an entry is required).
    let entry: Option<&PasswdEntry>;
    let uid = if let Some(uid) = req.uid {
        entry = passwd.iter().find(|p| p.uid == uid);
        uid
    } else {
        let name = if req.username.is_empty() {
            user_part.as_str()
        } else {
            req.username.as_str()
        };
        if name.is_empty() {
            entry = passwd.iter().find(|p| p.uid == 0);
            0
        } else if let Ok(uid) = name.parse::<u32>() {
            entry = passwd.iter().find(|p| p.uid == uid);
            uid
        } else {
            entry = passwd.iter().find(|p| p.name == name);
            entry
                .ok_or_else(|| IdentityError::UnknownUser {
                    name: name.to_owned(),
                })?
                .uid
        }
    };
    let gid = if let Some(gid) = req.gid {
        gid
    } else if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| IdentityError::UnknownGroup { name: g.clone() })?
                    .gid
            }
        }
    } else {
        entry.map(|e| e.gid).unwrap_or(0)
    };
    let mut list = vec![gid];
    let mut seen = std::collections::HashSet::from([gid]);
    let mut push = |g: u32| {
        if seen.insert(g) {
            list.push(g);
        }
    };
    for g in &req.supplemental_groups {
        push(*g);
    }
    if !req.strict
        && let Some(e) = entry
    {
        for g in groups.iter().filter(|g| g.members.contains(&e.name)) {
            push(g.gid);
        }
    }
    if list.len() > NGROUPS_MAX {
        return Err(IdentityError::TooManyGroups { count: list.len() });
    }
    Ok(Identity {
        uid,
        gid,
        groups: list,
        home: entry
            .map(|e| e.home.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
    })
}

/// The id inside a user namespace of host id `host` (unchanged without mappings).
fn from_host(ranges: Option<&[crius_proto::IdRange]>, host: u32) -> u32 {
    let Some(ranges) = ranges else {
        return host;
    };
    ranges
        .iter()
        .find_map(|r| {
            let offset = host.checked_sub(r.host_id)?;
            (offset < r.length).then(|| r.container_id.saturating_add(offset))
        })
        .unwrap_or(65534)
}

/// Reads the real uid, gid and groups of `pid` from `/proc/PID/status`, as seen in the pod's
/// user namespace (`userns`, none for the host's); the primary gid is included in the groups.
pub(crate) fn process_user(
    pid: i32,
    userns: Option<&crius_proto::UserNamespace>,
) -> Option<ProcessUser> {
    let user = process_user_on_host(pid)?;
    let uids = userns.map(|u| u.uids.as_slice());
    let gids = userns.map(|u| u.gids.as_slice());
    Some(ProcessUser {
        uid: from_host(uids, user.uid),
        gid: from_host(gids, user.gid),
        groups: user.groups.iter().map(|g| from_host(gids, *g)).collect(),
    })
}

fn process_user_on_host(pid: i32) -> Option<ProcessUser> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .map(str::to_owned)
    };
    let first =
        |text: Option<String>| -> Option<u32> { text?.split_whitespace().next()?.parse().ok() };
    let uid = first(field("Uid:"))?;
    let gid = first(field("Gid:"))?;
    let mut groups: Vec<u32> = field("Groups:")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Some(ProcessUser { uid, gid, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n";

    fn req() -> UserRequest {
        UserRequest {
            uid: Some(1000),
            gid: Some(3000),
            supplemental_groups: vec![4000],
            ..UserRequest::default()
        }
    }

    #[test]
    fn merge_adds_image_groups() {
        let id = resolve(&req(), &parse_passwd(PASSWD), &parse_group(GROUP)).expect("resolve");
        assert_eq!((id.uid, id.gid), (1000, 3000));
        assert_eq!(id.groups, vec![3000, 4000, 50000]);
    }

    #[test]
    fn strict_does_not() {
        let mut r = req();
        r.strict = true;
        let id = resolve(&r, &parse_passwd(PASSWD), &parse_group(GROUP)).expect("resolve");
        assert_eq!(id.groups, vec![3000, 4000]);
    }

    #[test]
    fn image_user_by_name_and_missing_names() {
        let r = UserRequest {
            image_user: "user-defined-in-image".into(),
            ..UserRequest::default()
        };
        let id = resolve(&r, &parse_passwd(PASSWD), &parse_group(GROUP)).expect("resolve");
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![1000, 50000]);
        assert_eq!(id.home, "/home");
        let r = UserRequest {
            username: "nobody-here".into(),
            ..UserRequest::default()
        };
        assert!(resolve(&r, &parse_passwd(PASSWD), &parse_group(GROUP)).is_err());
        let r = UserRequest {
            image_user: "5:7".into(),
            ..UserRequest::default()
        };
        let id = resolve(&r, &[], &[]).expect("numeric");
        assert_eq!((id.uid, id.gid, id.groups.clone()), (5, 7, vec![7]));
    }

    #[test]
    fn many_image_groups_resolve_and_too_many_are_refused() {
        let group = |n: u32| -> String {
            (0..n)
                .map(|i| format!("g{i}:x:{}:user-defined-in-image\n", 100_000 + i))
                .collect()
        };
        let id = resolve(&req(), &parse_passwd(PASSWD), &parse_group(&group(60_000)))
            .expect("60000 groups");
        assert_eq!(id.groups.len(), 2 + 60_000);
        let err = resolve(&req(), &parse_passwd(PASSWD), &parse_group(&group(70_000)))
            .expect_err("over NGROUPS_MAX");
        assert!(err.to_string().contains("65536"), "{err}");
    }

    #[test]
    fn reads_own_status() {
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        let u = process_user(pid, None).expect("status");
        assert!(u.groups.contains(&u.gid));
    }
}
