//! Unpacking a layer tar into one directory laid out as an overlayfs lower directory.
//!
//! Every path is resolved beneath the layer directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, one component at a time, so a layer can never create, modify or
//! follow anything outside its directory, not even through a symlink it created itself.
//! Whiteouts become overlay whiteouts (0/0 character devices), opaque markers become the
//! `trusted.overlay.opaque=y` xattr. Owners are applied exactly as in the tar.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmodat, mkdirat, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

use crate::digest::HashingReader;

/// Prefix of a whiteout entry: `.wh.NAME` deletes `NAME` of the lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// An opaque-directory marker: the directory hides everything of the lower layers.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The longest path or link target an entry may have, in bytes (Linux's `PATH_MAX`): it bounds
/// how deep a layer's tree can go.
pub const PATH_MAX: usize = 4096;

/// Why a layer was refused or could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// A path in the tar is absolute, climbs out with `..`, or is otherwise unusable.
    #[error("refused tar entry {path:?}: {reason}")]
    UnsafePath {
        /// The path as in the tar.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// An entry's path or link target is longer than [`PATH_MAX`].
    #[error(
        "refused tar entry {path}: its {what} is {len} bytes, longer than PATH_MAX ({limit} bytes)"
    )]
    PathTooLong {
        /// The start of the entry's path as in the tar, quoted.
        path: String,
        /// `path` or `link target`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// [`PATH_MAX`].
        limit: usize,
    },
    /// A hardlink points outside the layer.
    #[error("refused hardlink {path:?} -> {target:?}: {reason}")]
    UnsafeLink {
        /// The link's path.
        path: String,
        /// Its target as in the tar.
        target: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A parent of an entry is a symlink or not a directory (writing through it could escape).
    #[error("refused tar entry {path:?}: a parent is a symlink or not a directory")]
    ThroughSymlink {
        /// The entry's path.
        path: String,
    },
    /// The tar holds an entry type crius does not unpack.
    #[error("tar entry {path:?} has unsupported type {kind}")]
    Unsupported {
        /// The entry's path.
        path: String,
        /// The type byte.
        kind: String,
    },
    /// The blob is not a tar in a known compression, or is truncated.
    #[error("reading the layer tar: {0}")]
    Tar(std::io::Error),
    /// The uncompressed tar does not match the diff id of the image config.
    #[error("uncompressed layer has digest {actual}, the image config says {expected}")]
    DiffIdMismatch {
        /// The config's diff id.
        expected: String,
        /// What the tar hashed to.
        actual: String,
    },
    /// The layer expands to more bytes than the configured cap.
    #[error("the layer expands to more than {limit} bytes (max_layer_bytes)")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// The layer holds more entries than the configured cap.
    #[error("the layer holds more than {limit} entries (max_layer_entries)")]
    TooManyEntries {
        /// The cap.
        limit: u64,
    },
    /// A file system operation failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The entry's path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Tar entries unpacked.
    pub entries: u64,
    /// The highest uid and the highest gid any entry carries.
    pub max_ids: (u32, u32),
}

/// The compression of a layer blob, recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// Recognises the compression from the blob's first bytes.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Caps on what one layer may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most uncompressed bytes (the whole tar stream, headers included).
    pub max_bytes: u64,
    /// Most tar entries.
    pub max_entries: u64,
}

impl UnpackLimits {
    /// No caps.
    pub const NONE: UnpackLimits = UnpackLimits {
        max_bytes: u64::MAX,
        max_entries: u64::MAX,
    };
}

/// Unpacks the layer blob at `blob` (tar, gzip or zstd) into the existing empty directory
/// `dest`, and checks the uncompressed tar against `diff_id` when given. On error `dest` is
/// left as is; the caller removes it.
pub fn unpack_file(
    blob: &Path,
    dest: &Path,
    diff_id: Option<&str>,
    limits: UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    let file = File::open(blob).map_err(|source| UnpackError::Io {
        op: "open",
        path: blob.display().to_string(),
        source,
    })?;
    unpack_blob(file, dest, diff_id, limits)
}

/// Unpacks a layer blob (tar, gzip or zstd) read from `blob` into the existing empty directory
/// `dest`, and checks the uncompressed tar against `diff_id` when given. On error `dest` is
/// left as is; the caller removes it.
pub fn unpack_blob(
    blob: impl Read,
    dest: &Path,
    diff_id: Option<&str>,
    limits: UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    let mut reader = BufReader::with_capacity(256 * 1024, blob);
    let head = reader.fill_buf().map_err(UnpackError::Tar)?;
    let decoded: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => {
            Box::new(zstd::Decoder::with_buffer(reader).map_err(UnpackError::Tar)?)
        }
    };
    let unpacked = unpack(decoded, dest, limits)?;
    if let Some(expected) = diff_id
        && unpacked.diff_id != expected
    {
        return Err(UnpackError::DiffIdMismatch {
            expected: expected.to_owned(),
            actual: unpacked.diff_id,
        });
    }
    Ok(unpacked)
}

/// The marker error of [`CappedReader`].
#[derive(Debug)]
struct OverCap;

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the layer is larger than its cap")
    }
}

impl std::error::Error for OverCap {}

/// A reader failing with [`OverCap`] once more than `left` bytes were asked for.
struct CappedReader<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.exceeded {
            return Err(std::io::Error::other(OverCap));
        }
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded = true;
                Err(std::io::Error::other(OverCap))
            }
        }
    }
}

/// Files from this size on start their writeback as soon as they are written; smaller ones
/// are left to the one `syncfs` (a call per small file cost more than it saved).
const WRITEBACK_MIN_BYTES: u64 = 256 * 1024;

/// Starts writing `file`'s data to disk without waiting for it, so that the one `syncfs`
/// before the image record finds little left to write. Best effort: an error only means the
/// sync will do the work.
pub(crate) fn start_writeback(file: &File) {
    // SAFETY: sync_file_range takes a descriptor this function borrows and plain integers.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Unpacks the uncompressed tar read from `tar` into the existing directory `dest`, within
/// `limits`.
pub fn unpack(tar: impl Read, dest: &Path, limits: UnpackLimits) -> Result<Unpacked, UnpackError> {
    let root = open_dir(dest).map_err(|source| UnpackError::Io {
        op: "open",
        path: dest.display().to_string(),
        source,
    })?;
    let mut hashing = HashingReader::new(CappedReader {
        inner: tar,
        left: limits.max_bytes,
        exceeded: false,
    });
    let mut layer = Layer {
        root,
        last_parent: None,
        dirs: Vec::new(),
        max_ids: (0, 0),
    };
    let mut entries = 0u64;
    let result = (|| {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(UnpackError::Tar)? {
            let entry = entry.map_err(UnpackError::Tar)?;
            if entries >= limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    limit: limits.max_entries,
                });
            }
            layer.entry(entry)?;
            entries += 1;
        }
        Ok(())
    })();
    if let Err(e) = result {
        return Err(if hashing.get_ref().exceeded {
            UnpackError::TooLarge {
                limit: limits.max_bytes,
            }
        } else {
            e
        });
    }
    layer.finish_dirs()?;
    let finished = hashing.finish();
    let (diff_id, _) = finished.map_err(|e| {
        if e.get_ref().is_some_and(|inner| inner.is::<OverCap>()) {
            UnpackError::TooLarge {
                limit: limits.max_bytes,
            }
        } else {
            UnpackError::Tar(e)
        }
    })?;
    Ok(Unpacked {
        diff_id,
        entries,
        max_ids: layer.max_ids,
    })
}

/// A tar path as its normal components; `None` for the root itself.
///
/// Refuses absolute paths, `..` components and NUL bytes; drops `.` and empty components.
pub fn clean_path(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path");
    }
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    let mut out = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("`..` component"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What a file name means in an overlayfs lower directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special<'a> {
    /// An ordinary name.
    Plain,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: `NAME` is deleted.
    Whiteout(&'a [u8]),
    /// `.wh..wh.*` other than the opaque marker: AUFS metadata, skipped.
    AufsMeta,
}

/// Classifies a file name (the last path component).
pub fn special(name: &[u8]) -> Special<'_> {
    if name == OPAQUE_MARKER.as_bytes() {
        Special::Opaque
    } else if name.starts_with(b".wh..wh.") {
        Special::AufsMeta
    } else if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
        if target.is_empty() || target == b"." || target == b".." {
            Special::AufsMeta
        } else {
            Special::Whiteout(target)
        }
    } else {
        Special::Plain
    }
}

/// Ownership, permissions, times and xattrs of one entry.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// A directory whose metadata is applied at the end (children change its mtime).
struct DirMeta {
    path: Vec<u8>,
    meta: Meta,
}

/// The layer being unpacked.
struct Layer {
    root: OwnedFd,
    /// The parent directory of the last entry, reused by its siblings.
    last_parent: Option<(Vec<u8>, OwnedFd)>,
    dirs: Vec<DirMeta>,
    /// The highest uid and gid seen so far.
    max_ids: (u32, u32),
}

const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS)
    .union(ResolveFlag::RESOLVE_NO_XDEV);

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let fd = nix::fcntl::open(path, dir_flags(), Mode::empty())?;
    Ok(fd)
}

/// Opens `name` beneath `dir` as a directory, never following a symlink.
fn open_beneath(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    openat2(
        dir,
        OsStr::from_bytes(name),
        OpenHow::new().flags(dir_flags()).resolve(RESOLVE),
    )
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn io_err(op: &'static str, path: &[u8]) -> impl FnOnce(Errno) -> UnpackError {
    let path = lossy(path);
    move |e| UnpackError::Io {
        op,
        path,
        source: std::io::Error::from(e),
    }
}

fn cstring(name: &[u8], path: &[u8]) -> Result<CString, UnpackError> {
    CString::new(name).map_err(|_| UnpackError::UnsafePath {
        path: lossy(path),
        reason: "NUL byte in path",
    })
}

impl Layer {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let link_len = entry.link_name_bytes().map_or(0, |l| l.len());
        for (what, len) in [("path", raw_path.len()), ("link target", link_len)] {
            if len > PATH_MAX {
                return Err(UnpackError::PathTooLong {
                    path: format!("{:?}...", lossy(&raw_path[..raw_path.len().min(200)])),
                    what,
                    len,
                    limit: PATH_MAX,
                });
            }
        }
        let comps = clean_path(&raw_path).map_err(|reason| UnpackError::UnsafePath {
            path: lossy(&raw_path),
            reason,
        })?;
        let meta = meta_of(&mut entry, &raw_path)?;
        self.max_ids = (self.max_ids.0.max(meta.uid), self.max_ids.1.max(meta.gid));
        let kind = entry.header().entry_type();
        let Some((name, parents)) = comps.split_last() else {
            // The layer root itself (`./`): only its metadata counts.
            if kind.is_dir() {
                self.dirs.push(DirMeta {
                    path: Vec::new(),
                    meta,
                });
            }
            return Ok(());
        };
        let parent_path = parents.join(&b'/');
        let parent = self.take_parent(&parent_path, &raw_path)?;
        let result = self.entry_in(parent.as_fd(), &mut entry, &raw_path, &comps, name, meta);
        self.last_parent = Some((parent_path, parent));
        result
    }

    /// Creates the entry `name` in its open `parent` directory.
    fn entry_in<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        entry: &mut tar::Entry<'_, R>,
        raw_path: &[u8],
        comps: &[&[u8]],
        name: &[u8],
        meta: Meta,
    ) -> Result<(), UnpackError> {
        let raw_path = raw_path.to_vec();
        let kind = entry.header().entry_type();
        match special(name) {
            Special::AufsMeta => return Ok(()),
            Special::Opaque => {
                set_xattr(parent, OPAQUE_XATTR, b"y").map_err(|e| UnpackError::Io {
                    op: "set opaque xattr on the parent of",
                    path: lossy(&raw_path),
                    source: e,
                })?;
                return Ok(());
            }
            Special::Whiteout(target) => {
                remove_existing(parent, target, &raw_path)?;
                let c = cstring(target, &raw_path)?;
                mknodat(parent, c.as_c_str(), SFlag::S_IFCHR, Mode::empty(), 0)
                    .map_err(io_err("create whiteout", &raw_path))?;
                fchownat(
                    parent,
                    c.as_c_str(),
                    Some(Uid::from_raw(0)),
                    Some(Gid::from_raw(0)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(io_err("chown", &raw_path))?;
                return Ok(());
            }
            Special::Plain => {}
        }
        let c = cstring(name, &raw_path)?;
        let full_path = comps.join(&b'/');
        match kind {
            tar::EntryType::Directory => {
                match mkdirat(parent, c.as_c_str(), Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) if is_dir(parent, &c) => {}
                    Err(Errno::EEXIST) => {
                        remove_existing(parent, name, &raw_path)?;
                        mkdirat(parent, c.as_c_str(), Mode::from_bits_truncate(0o700))
                            .map_err(io_err("mkdir", &raw_path))?;
                    }
                    Err(e) => return Err(io_err("mkdir", &raw_path)(e)),
                }
                self.dirs.push(DirMeta {
                    path: full_path,
                    meta,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = create_or_replace(parent, name, &raw_path, || {
                    nix::fcntl::openat(
                        parent,
                        c.as_c_str(),
                        OFlag::O_WRONLY
                            | OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o600),
                    )
                })?;
                let mut file = File::from(fd);
                let written =
                    std::io::copy(entry, &mut file).map_err(|source| UnpackError::Io {
                        op: "write",
                        path: lossy(&raw_path),
                        source,
                    })?;
                apply_fd_meta(file.as_fd(), &meta, &raw_path)?;
                if written >= WRITEBACK_MIN_BYTES {
                    start_writeback(&file);
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(UnpackError::UnsafeLink {
                        path: lossy(&raw_path),
                        target: lossy(&target),
                        reason: "empty symlink target",
                    });
                }
                create_or_replace(parent, name, &raw_path, || {
                    symlinkat(OsStr::from_bytes(&target), parent, c.as_c_str())
                })?;
                apply_path_meta(parent, &c, &meta, &raw_path, false)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let refuse = |reason| UnpackError::UnsafeLink {
                    path: lossy(&raw_path),
                    target: lossy(&target),
                    reason,
                };
                let tcomps = clean_path(&target).map_err(refuse)?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(refuse("hardlink to the layer root"));
                };
                let tparent = self.walk(&tparents.join(&b'/'), &raw_path, false)?;
                let tc = cstring(tname, &raw_path)?;
                remove_existing(parent, name, &raw_path)?;
                linkat(
                    tparent.as_fd(),
                    tc.as_c_str(),
                    parent,
                    c.as_c_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| match e {
                    Errno::ENOENT => refuse("target is not in this layer"),
                    e => io_err("hardlink", &raw_path)(e),
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                remove_existing(parent, name, &raw_path)?;
                mknodat(
                    parent,
                    c.as_c_str(),
                    sflag,
                    Mode::empty(),
                    libc::makedev(major, minor),
                )
                .map_err(io_err("mknod", &raw_path))?;
                apply_path_meta(parent, &c, &meta, &raw_path, true)?;
            }
            // Global PAX headers carry defaults for the archive, not a file.
            tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(UnpackError::Unsupported {
                    path: lossy(&raw_path),
                    kind: format!("{other:?}"),
                });
            }
        }
        Ok(())
    }

    /// The parent directory `path` (components joined by `/`), created as needed. The last
    /// one is cached for its siblings: the caller puts it back in `last_parent`.
    fn take_parent(&mut self, path: &[u8], entry: &[u8]) -> Result<OwnedFd, UnpackError> {
        if let Some((cached, fd)) = self.last_parent.take()
            && cached.as_slice() == path
        {
            return Ok(fd);
        }
        self.walk(path, entry, true)
    }

    /// Opens directory `path` beneath the root one component at a time, refusing symlinks;
    /// missing directories are created (mode 0755, root-owned) when `create`.
    fn walk(&self, path: &[u8], entry: &[u8], create: bool) -> Result<OwnedFd, UnpackError> {
        let mut cur = self.root.try_clone().map_err(|source| UnpackError::Io {
            op: "dup",
            path: lossy(entry),
            source,
        })?;
        for comp in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            let next = match open_beneath(cur.as_fd(), comp) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    let c = cstring(comp, entry)?;
                    match mkdirat(cur.as_fd(), c.as_c_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io_err("mkdir parent of", entry)(e)),
                    }
                    fchmodat(
                        cur.as_fd(),
                        c.as_c_str(),
                        Mode::from_bits_truncate(0o755),
                        FchmodatFlags::FollowSymlink,
                    )
                    .map_err(io_err("chmod parent of", entry))?;
                    open_beneath(cur.as_fd(), comp).map_err(|e| walk_error(e, entry))?
                }
                Err(e) => return Err(walk_error(e, entry)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Applies directory metadata, deepest last-seen first, so children do not disturb mtimes.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        self.last_parent = None;
        let dirs = std::mem::take(&mut self.dirs);
        for dir in dirs.iter().rev() {
            let fd = self.walk(&dir.path, &dir.path, false)?;
            apply_fd_meta(fd.as_fd(), &dir.meta, &dir.path)?;
        }
        Ok(())
    }
}

fn walk_error(e: Errno, entry: &[u8]) -> UnpackError {
    match e {
        Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV => {
            UnpackError::ThroughSymlink { path: lossy(entry) }
        }
        Errno::ENOENT => UnpackError::UnsafeLink {
            path: lossy(entry),
            target: String::new(),
            reason: "a parent of the target does not exist in this layer",
        },
        e => io_err("open parent of", entry)(e),
    }
}

fn is_dir(parent: BorrowedFd<'_>, name: &CString) -> bool {
    nix::sys::stat::fstatat(parent, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Runs `create`; when `name` already exists (an earlier entry of the same layer), removes it
/// and runs `create` again.
fn create_or_replace<T>(
    parent: BorrowedFd<'_>,
    name: &[u8],
    entry: &[u8],
    create: impl Fn() -> Result<T, Errno>,
) -> Result<T, UnpackError> {
    match create() {
        Err(Errno::EEXIST) => {
            remove_existing(parent, name, entry)?;
            create().map_err(io_err("create", entry))
        }
        other => other.map_err(io_err("create", entry)),
    }
}

/// Whether this process creates files owned by 0:0 (then chowning to 0:0 is a no-op).
fn creates_as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| nix::unistd::geteuid().is_root() && nix::unistd::getegid().as_raw() == 0)
}

/// Removes `name` in `parent` if it exists, so a later entry replaces an earlier one. A
/// non-empty directory is not replaced.
fn remove_existing(parent: BorrowedFd<'_>, name: &[u8], entry: &[u8]) -> Result<(), UnpackError> {
    let c = cstring(name, entry)?;
    match nix::sys::stat::fstatat(parent, c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_err("stat", entry)(e)),
        Ok(st) => {
            let flag = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                UnlinkatFlags::RemoveDir
            } else {
                UnlinkatFlags::NoRemoveDir
            };
            unlinkat(parent, c.as_c_str(), flag).map_err(io_err("replace", entry))
        }
    }
}

/// Reads owner, mode, mtime and xattrs from the header and its PAX records.
fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>, path: &[u8]) -> Result<Meta, UnpackError> {
    let header = entry.header();
    let bad = |reason| UnpackError::UnsafePath {
        path: lossy(path),
        reason,
    };
    // An empty numeric field reads as 0, as other tar readers do.
    let old = header.as_old();
    let mode =
        numeric(header.mode().map(u64::from), &old.mode).ok_or_else(|| bad("unreadable mode"))?;
    let mode = u32::try_from(mode & 0o7777).unwrap_or(0);
    let mut uid = numeric(header.uid(), &old.uid).ok_or_else(|| bad("unreadable uid"))?;
    let mut gid = numeric(header.gid(), &old.gid).ok_or_else(|| bad("unreadable gid"))?;
    let mut mtime = TimeSpec::new(i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0), 0);
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(UnpackError::Tar)? {
        for ext in pax {
            let ext = ext.map_err(UnpackError::Tar)?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            match key {
                "uid" => uid = parse_num(value).ok_or_else(|| bad("bad PAX uid"))?,
                "gid" => gid = parse_num(value).ok_or_else(|| bad("bad PAX gid"))?,
                "mtime" => mtime = parse_pax_time(value).unwrap_or(mtime),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        // Only what an image may carry: file capabilities, ACLs and user
                        // xattrs. The overlay's own xattrs would change what the merged view
                        // shows; security labels and other trusted.* belong to the node.
                        if !xattr_allowed(name) {
                            tracing::debug!(path = %lossy(path), xattr = name, "xattr skipped");
                            continue;
                        }
                        let name = cstring(name.as_bytes(), path)?;
                        xattrs.push((name, value.to_vec()));
                    }
                }
            }
        }
    }
    let uid = u32::try_from(uid)
        .ok()
        .filter(|u| *u != u32::MAX)
        .ok_or_else(|| bad("uid out of range"))?;
    let gid = u32::try_from(gid)
        .ok()
        .filter(|g| *g != u32::MAX)
        .ok_or_else(|| bad("gid out of range"))?;
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

/// A header number, or 0 when its raw field is empty (all NUL or space).
fn numeric(parsed: std::io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(n) => Some(n),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Some(0),
        Err(_) => None,
    }
}

fn parse_num(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos = if digits.is_empty() {
        0
    } else {
        digits.parse::<i64>().ok()? * 10i64.pow(9 - u32::try_from(digits.len()).ok()?)
    };
    Some(TimeSpec::new(secs, nanos))
}

/// The xattr of an unpacked layer's root directory recording the highest uid and gid any of its
/// files carries (`<uid>:<gid>`); `trusted.*`, so no container sees it.
pub const MAX_IDS_XATTR: &str = "trusted.crius.max_ids";

/// Records `ids` (highest uid, highest gid) on the layer directory `dir`. Best effort: without
/// CAP_SYS_ADMIN a trusted xattr cannot be set, and the ids are then unknown.
pub fn record_max_ids(dir: &Path, ids: (u32, u32)) {
    let Ok(file) = std::fs::File::open(dir) else {
        return;
    };
    let value = format!("{}:{}", ids.0, ids.1);
    if let Err(e) = set_xattr(file.as_fd(), MAX_IDS_XATTR, value.as_bytes()) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot record a layer's highest ids");
    }
}

/// The highest uid and gid recorded on the layer directory `dir`, if any.
pub fn max_ids(dir: &Path) -> Option<(u32, u32)> {
    let path = CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    let name = CString::new(MAX_IDS_XATTR).ok()?;
    let mut buf = [0u8; 32];
    // SAFETY: NUL-terminated path and name, and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let text = std::str::from_utf8(buf.get(..usize::try_from(n).ok()?)?).ok()?;
    let (uid, gid) = text.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

/// Sets an xattr on an open file or directory.
fn set_xattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> std::io::Result<()> {
    let name =
        CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    set_xattr_c(fd, &name, value)
}

fn set_xattr_c(fd: BorrowedFd<'_>, name: &CString, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: the fd is open, the name NUL-terminated and the value a valid slice.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Owner, then mode (chown clears set-id bits), xattrs and times on an open file or directory.
fn apply_fd_meta(fd: BorrowedFd<'_>, meta: &Meta, path: &[u8]) -> Result<(), UnpackError> {
    // Everything in a layer is created by this unpack, so 0:0 is already right as root.
    if (meta.uid, meta.gid) != (0, 0) || !creates_as_root() {
        fchown_fd(fd, meta, path)?;
    }
    nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode))
        .map_err(io_err("chmod", path))?;
    for (name, value) in &meta.xattrs {
        set_xattr_c(fd, name, value).map_err(|source| UnpackError::Io {
            op: "set xattr",
            path: lossy(path),
            source,
        })?;
    }
    nix::sys::stat::futimens(fd, &meta.mtime, &meta.mtime).map_err(io_err("set times", path))
}

fn fchown_fd(fd: BorrowedFd<'_>, meta: &Meta, path: &[u8]) -> Result<(), UnpackError> {
    nix::unistd::fchown(
        fd,
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
    )
    .map_err(io_err("chown", path))
}

/// Owner, mode (unless a symlink) and times on `name` in `parent`, never following it.
fn apply_path_meta(
    parent: BorrowedFd<'_>,
    name: &CString,
    meta: &Meta,
    path: &[u8],
    chmod: bool,
) -> Result<(), UnpackError> {
    fchownat(
        parent,
        name.as_c_str(),
        Some(Uid::from_raw(meta.uid)),
        Some(Gid::from_raw(meta.gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(io_err("chown", path))?;
    if chmod {
        // The node was created by this unpack a moment ago and is not a symlink.
        fchmodat(
            parent,
            name.as_c_str(),
            Mode::from_bits_truncate(meta.mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(io_err("chmod", path))?;
    }
    nix::sys::stat::utimensat(
        parent,
        name.as_c_str(),
        &meta.mtime,
        &meta.mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io_err("set times", path))
}

/// Flushes directory `dir` itself (the names in it, after a rename) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a directory tree the unpack or the store made (absent is fine), whatever its depth,
/// without following symlinks or leaving its filesystem.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match crius_proto::tree::remove(path) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other.map_err(std::io::Error::from),
    }
}

/// Whether an xattr from a layer is applied: file capabilities, POSIX ACLs and `user.*`
/// (but not `user.overlay.*`, which overlayfs honours with `userxattr`).
fn xattr_allowed(name: &str) -> bool {
    name == "security.capability"
        || name.starts_with("system.posix_acl_")
        || (name.starts_with("user.") && !name.starts_with("user.overlay."))
}

#[cfg(test)]
mod tests {

    #[test]
    fn only_image_xattrs_are_applied() {
        for ok in [
            "security.capability",
            "system.posix_acl_access",
            "user.mime_type",
        ] {
            assert!(super::xattr_allowed(ok), "{ok}");
        }
        for refused in [
            "trusted.overlay.opaque",
            "trusted.foo",
            "security.selinux",
            "security.ima",
            "user.overlay.whiteout",
        ] {
            assert!(!super::xattr_allowed(refused), "{refused}");
        }
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    /// A raw tar entry: name bytes verbatim, type, link target, mode, uid, gid, data.
    struct Raw<'a>(&'a [u8], tar::EntryType, &'a [u8], u32, u64, &'a [u8]);

    fn tar_of(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for Raw(name, kind, link, mode, owner, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_uid(*owner);
            header.set_gid(*owner + 1);
            header.set_mtime(1_700_000_000);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn file<'a>(name: &'a [u8], data: &'a [u8]) -> Raw<'a> {
        Raw(name, tar::EntryType::Regular, b"", 0o644, 0, data)
    }

    fn dir(name: &[u8]) -> Raw<'_> {
        Raw(name, tar::EntryType::Directory, b"", 0o755, 0, b"")
    }

    /// Unpacks `entries` into `<tmp>/layer` and returns the temp dir.
    fn unpack_entries(entries: &[Raw<'_>]) -> (tempfile::TempDir, Result<Unpacked, UnpackError>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("layer");
        std::fs::create_dir(&dest).expect("mkdir");
        let result = unpack(&tar_of(entries)[..], &dest, UnpackLimits::NONE);
        (tmp, result)
    }

    #[test]
    fn clean_path_refuses_escapes() {
        assert_eq!(clean_path(b"./a//b/./c/"), Ok(vec![&b"a"[..], b"b", b"c"]));
        assert_eq!(clean_path(b"./"), Ok(vec![]));
        assert!(clean_path(b"/etc/x").is_err());
        assert!(clean_path(b"../../x").is_err());
        assert!(clean_path(b"a/../../b").is_err());
        assert!(clean_path(b"a/..").is_err());
    }

    #[test]
    fn special_names() {
        assert_eq!(special(b".wh..wh..opq"), Special::Opaque);
        assert_eq!(special(b".wh.foo"), Special::Whiteout(b"foo"));
        assert_eq!(special(b".wh..wh.plnk"), Special::AufsMeta);
        assert_eq!(special(b".wh."), Special::AufsMeta);
        assert_eq!(special(b".wh.."), Special::AufsMeta);
        assert_eq!(special(b"foo.wh.bar"), Special::Plain);
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
    }

    #[test]
    fn unpacks_every_kind_with_exact_owners() {
        let (tmp, result) = unpack_entries(&[
            dir(b"etc/"),
            Raw(
                b"etc/passwd",
                tar::EntryType::Regular,
                b"",
                0o4750,
                1000,
                b"root\n",
            ),
            Raw(
                b"bin/sh",
                tar::EntryType::Symlink,
                b"/bin/busybox",
                0o777,
                7,
                b"",
            ),
            Raw(
                b"etc/passwd-",
                tar::EntryType::Link,
                b"etc/passwd",
                0o644,
                0,
                b"",
            ),
            Raw(b"dev/null", tar::EntryType::Char, b"", 0o666, 0, b""),
            Raw(b"run/fifo", tar::EntryType::Fifo, b"", 0o600, 0, b""),
            file(b"data/.wh.gone", b""),
            file(b"opq/.wh..wh..opq", b""),
            Raw(b"./", tar::EntryType::Directory, b"", 0o711, 5, b""),
        ]);
        let unpacked = result.expect("unpack");
        assert_eq!(unpacked.entries, 9);
        let root = tmp.path().join("layer");
        let passwd = std::fs::metadata(root.join("etc/passwd")).expect("passwd");
        assert_eq!(
            (passwd.uid(), passwd.gid(), passwd.mode() & 0o7777),
            (1000, 1001, 0o4750)
        );
        assert_eq!(passwd.mtime(), 1_700_000_000);
        assert_eq!(passwd.nlink(), 2);
        let sh = std::fs::symlink_metadata(root.join("bin/sh")).expect("sh");
        assert!(sh.file_type().is_symlink());
        assert_eq!((sh.uid(), sh.gid()), (7, 8));
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).expect("link"),
            Path::new("/bin/busybox")
        );
        assert!(
            std::fs::symlink_metadata(root.join("dev/null"))
                .expect("null")
                .file_type()
                .is_char_device()
        );
        assert!(
            std::fs::symlink_metadata(root.join("run/fifo"))
                .expect("fifo")
                .file_type()
                .is_fifo()
        );
        let wh = std::fs::symlink_metadata(root.join("data/gone")).expect("whiteout");
        assert!(wh.file_type().is_char_device());
        assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0));
        assert!(!root.join("data/.wh.gone").exists());
        assert!(!root.join("opq/.wh..wh..opq").exists());
        let mut value = [0u8; 4];
        let opq = CString::new(root.join("opq").as_os_str().as_bytes()).expect("path");
        let name = CString::new(OPAQUE_XATTR).expect("name");
        // SAFETY: valid NUL-terminated strings and a valid buffer.
        let n = unsafe {
            libc::lgetxattr(
                opq.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert_eq!(n, 1);
        assert_eq!(value[0], b'y');
        let top = std::fs::metadata(&root).expect("root");
        assert_eq!((top.mode() & 0o7777, top.uid()), (0o711, 5));
    }

    fn assert_refused(entries: &[Raw<'_>], outside: &[&str]) {
        let (tmp, result) = unpack_entries(entries);
        let err = result.expect_err("a hostile layer was accepted");
        assert!(
            matches!(
                err,
                UnpackError::UnsafePath { .. }
                    | UnpackError::UnsafeLink { .. }
                    | UnpackError::ThroughSymlink { .. }
            ),
            "{err}"
        );
        for path in outside {
            assert!(
                !tmp.path().join(path).exists(),
                "{path} was written outside the layer"
            );
        }
    }

    #[test]
    fn hostile_layers_are_refused() {
        assert_refused(&[file(b"../../x", b"x")], &["x"]);
        assert_refused(&[file(b"../x", b"x")], &["x"]);
        assert_refused(&[file(b"/etc/x", b"x")], &[]);
        assert_refused(
            &[
                Raw(b"evil", tar::EntryType::Symlink, b"/", 0o777, 0, b""),
                file(b"evil/tmp/crius-unpack-escape", b"x"),
            ],
            &[],
        );
        assert!(!Path::new("/tmp/crius-unpack-escape").exists());
        assert_refused(
            &[
                Raw(b"up", tar::EntryType::Symlink, b"..", 0o777, 0, b""),
                file(b"up/x", b"x"),
            ],
            &["x"],
        );
        assert_refused(
            &[Raw(
                b"passwd",
                tar::EntryType::Link,
                b"/etc/passwd",
                0o644,
                0,
                b"",
            )],
            &[],
        );
        assert_refused(
            &[Raw(
                b"passwd",
                tar::EntryType::Link,
                b"../../etc/passwd",
                0o644,
                0,
                b"",
            )],
            &[],
        );
        assert_refused(
            &[
                Raw(b"etc", tar::EntryType::Symlink, b"/etc", 0o777, 0, b""),
                Raw(
                    b"passwd",
                    tar::EntryType::Link,
                    b"etc/passwd",
                    0o644,
                    0,
                    b"",
                ),
            ],
            &[],
        );
        assert_refused(
            &[
                Raw(b"d", tar::EntryType::Symlink, b"/tmp", 0o777, 0, b""),
                dir(b"d/sub/"),
            ],
            &[],
        );
    }

    /// A tar of one regular file whose path (or, with `link`, hardlink target) is given as a
    /// PAX record.
    fn pax_tar(path: &[u8], link: Option<&[u8]>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut records = vec![("path", path)];
        records.extend(link.map(|l| ("linkpath", l)));
        builder.append_pax_extensions(records).expect("pax");
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..1].copy_from_slice(b"x");
        header.set_entry_type(if link.is_some() {
            tar::EntryType::Link
        } else {
            tar::EntryType::Regular
        });
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        builder.append(&header, &b""[..]).expect("append");
        builder.into_inner().expect("tar")
    }

    #[test]
    fn paths_longer_than_path_max_are_refused_before_anything_is_made() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let deep = b"a/".repeat(200_000);
        let at_max = [b"b/".repeat(PATH_MAX / 2 - 1), b"cc".to_vec()].concat();
        assert_eq!(at_max.len(), PATH_MAX);
        for (n, tar, refused) in [
            (0, pax_tar(&deep, None), Some(("path", deep.len()))),
            (
                1,
                pax_tar(&[b"a".repeat(PATH_MAX), b"z".to_vec()].concat(), None),
                Some(("path", PATH_MAX + 1)),
            ),
            (
                2,
                pax_tar(b"l", Some(&deep)),
                Some(("link target", deep.len())),
            ),
            (3, pax_tar(&at_max, None), None),
        ] {
            let dest = tmp.path().join(format!("layer{n}"));
            std::fs::create_dir(&dest).expect("mkdir");
            let result = unpack(&tar[..], &dest, UnpackLimits::NONE);
            let Some((what, len)) = refused else {
                result.expect("a path of PATH_MAX bytes");
                continue;
            };
            let err = result.expect_err("refused");
            assert!(
                matches!(err, UnpackError::PathTooLong { what: w, len: l, limit: PATH_MAX, .. }
                    if w == what && l == len),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("PATH_MAX (4096 bytes)") && message.len() < 400,
                "{message}"
            );
            assert_eq!(std::fs::read_dir(&dest).expect("dest").count(), 0);
        }
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let (tmp, result) = unpack_entries(&[
            file(b"a", b"one"),
            file(b"a", b"two"),
            Raw(b"l", tar::EntryType::Symlink, b"a", 0o777, 0, b""),
            file(b"l", b"plain"),
        ]);
        result.expect("unpack");
        let root = tmp.path().join("layer");
        assert_eq!(std::fs::read(root.join("a")).expect("a"), b"two");
        assert!(
            !std::fs::symlink_metadata(root.join("l"))
                .expect("l")
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn diff_id_is_checked() {
        let tar = tar_of(&[file(b"a", b"x")]);
        let tmp = tempfile::tempdir().expect("tempdir");
        let blob = tmp.path().join("blob");
        std::fs::write(&blob, zstd::encode_all(&tar[..], 3).expect("zstd")).expect("write");
        let dest = tmp.path().join("layer");
        std::fs::create_dir(&dest).expect("mkdir");
        let good = crate::digest::sha256_of(&tar);
        assert_eq!(
            unpack_file(&blob, &dest, Some(&good), UnpackLimits::NONE)
                .expect("unpack")
                .diff_id,
            good
        );
        let dest2 = tmp.path().join("layer2");
        std::fs::create_dir(&dest2).expect("mkdir");
        let err = unpack_file(
            &blob,
            &dest2,
            Some(&crate::digest::sha256_of(b"other")),
            UnpackLimits::NONE,
        )
        .expect_err("mismatch");
        assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    }

    #[test]
    fn caps_stop_bombs() {
        let big = vec![0u8; 64 * 1024];
        let tar = tar_of(&[file(b"a", &big), file(b"b", b"x")]);
        let blob_dir = tempfile::tempdir().expect("tempdir");
        let blob = blob_dir.path().join("blob");
        std::fs::write(&blob, zstd::encode_all(&tar[..], 3).expect("zstd")).expect("write");
        assert!(std::fs::metadata(&blob).expect("blob").len() < 4096);
        let run = |limits| {
            let dest = tempfile::tempdir().expect("tempdir");
            unpack_file(&blob, dest.path(), None, limits)
        };
        let err = run(UnpackLimits {
            max_bytes: 32 * 1024,
            max_entries: 100,
        })
        .expect_err("over the byte cap");
        assert!(
            matches!(err, UnpackError::TooLarge { limit: 32768 }),
            "{err}"
        );
        let err = run(UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 1,
        })
        .expect_err("over the entry cap");
        assert!(
            matches!(err, UnpackError::TooManyEntries { limit: 1 }),
            "{err}"
        );
        let exact = UnpackLimits {
            max_bytes: tar.len() as u64,
            max_entries: 2,
        };
        assert_eq!(run(exact).expect("at the caps").entries, 2);
    }
}
