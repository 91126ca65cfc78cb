//! Removing a directory tree whose shape an image or a container chose.
//!
//! [`remove`] walks the tree with an explicit stack of open directories, never by path and never
//! through a symlink: every directory is opened relative to its parent with
//! `O_NOFOLLOW | O_DIRECTORY` and every entry removed with `unlinkat`. At most [`OPEN_DIRS`]
//! directories are open at once, whatever the depth: a directory found below that depth is
//! first moved (`renameat`) to a fresh name directly under the tree's root, which is read again
//! until it is empty. Stack use and descriptors are therefore bounded, and a tree of any depth
//! is removed. A mount point, or anything on another filesystem than the root, stops the removal
//! before anything beneath it is touched (a bind of the root's own filesystem is told by statx's
//! mount-root attribute, which Linux reports since 5.8).

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, Dir, FileType, Mode, OFlags, RenameFlags, StatxAttributes, StatxFlags,
};
use rustix::io::Errno;

/// Most directories [`remove`] keeps open at once.
pub const OPEN_DIRS: usize = 64;

/// Longest path an error shows whole; longer ones are cut.
const SHOWN_PATH_MAX: usize = 1024;

/// Prefix of the names directories are moved to under the root.
const MOVED_PREFIX: &str = ".crius-tree-";

/// Why a tree could not be removed. What was removed before the failure stays removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// A system call on `path` failed.
    #[error("cannot {op} {}: {source}", shown(path))]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory (its current place, under a fresh name if it was moved).
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// `path` is a mount point or on another filesystem than the tree; nothing beneath it was
    /// touched.
    #[error(
        "cannot remove {}: it is a mount point; nothing on it was removed",
        shown(path)
    )]
    Mount {
        /// The directory.
        path: PathBuf,
    },
}

impl RemoveError {
    /// The file or directory the error is about.
    pub fn path(&self) -> &Path {
        match self {
            RemoveError::Io { path, .. } | RemoveError::Mount { path } => path,
        }
    }

    /// The kind of the error: [`std::io::ErrorKind::NotFound`] only when the tree's root does
    /// not exist.
    pub fn kind(&self) -> std::io::ErrorKind {
        match self {
            RemoveError::Io { source, .. } => source.kind(),
            RemoveError::Mount { .. } => std::io::ErrorKind::ResourceBusy,
        }
    }

    /// Whether the tree's root does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == std::io::ErrorKind::NotFound
    }
}

impl From<RemoveError> for std::io::Error {
    fn from(e: RemoveError) -> std::io::Error {
        std::io::Error::new(e.kind(), e)
    }
}

/// Removes `path` and everything beneath it without following symlinks or leaving its
/// filesystem; a symlink or other non-directory at `path` is removed alone. Fails with a
/// [`RemoveError::kind`] of `NotFound` when `path` does not exist. Blocks: run it off the async
/// workers.
pub fn remove(path: &Path) -> Result<(), RemoveError> {
    remove_with(path, OPEN_DIRS)
}

/// [`remove`] with at most `open_dirs` (2 or more) directories open at once.
fn remove_with(path: &Path, open_dirs: usize) -> Result<(), RemoveError> {
    let io = |op, source: Errno| RemoveError::Io {
        op,
        path: path.to_owned(),
        source: source.into(),
    };
    let fd = match rustix::fs::openat(CWD, path, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR | Errno::LOOP) => {
            return rustix::fs::unlinkat(CWD, path, AtFlags::empty()).map_err(|e| io("remove", e));
        }
        Err(e) => return Err(io("open", e)),
    };
    let (dev, _) = identity(fd.as_fd()).map_err(|e| io("stat", e))?;
    let root = Dir::new(fd).map_err(|e| io("read", e))?;
    let mut walk = Walk {
        root: path,
        dev,
        open_dirs: open_dirs.max(2),
        frames: vec![Frame {
            dir: root,
            name: CString::default(),
        }],
        moved: false,
        serial: 0,
        noreplace: true,
    };
    walk.run()?;
    drop(walk);
    match rustix::fs::unlinkat(CWD, path, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io("remove", e)),
    }
}

/// An open directory of the walk and its name in its parent (the frame before it).
struct Frame {
    dir: Dir,
    name: CString,
}

/// One removal in progress.
struct Walk<'a> {
    /// The tree's root as the caller named it.
    root: &'a Path,
    /// The device (major, minor) of the root's filesystem.
    dev: (u32, u32),
    /// Most frames at once.
    open_dirs: usize,
    /// The open directories from the root (first) down to the one being read.
    frames: Vec<Frame>,
    /// Something was moved under the root since its reading began.
    moved: bool,
    /// The number of the next name tried for a move.
    serial: u64,
    /// `renameat2(RENAME_NOREPLACE)` works on this filesystem.
    noreplace: bool,
}

impl Walk<'_> {
    /// Empties the root.
    fn run(&mut self) -> Result<(), RemoveError> {
        loop {
            let Some(top) = self.frames.last_mut() else {
                return Ok(());
            };
            match top.dir.read() {
                Some(Ok(entry)) => {
                    let name = entry.file_name();
                    if name == c"." || name == c".." {
                        continue;
                    }
                    let is_dir = entry.file_type() == FileType::Directory;
                    self.entry(name.to_owned(), is_dir)?;
                }
                Some(Err(e)) => return Err(self.error("read", None, e)),
                None if self.frames.len() == 1 => {
                    if !std::mem::take(&mut self.moved) {
                        return Ok(());
                    }
                    // What was moved here after the reading began may not have been listed.
                    if let Some(root) = self.frames.first_mut() {
                        root.dir.rewind();
                    }
                }
                None => self.finish_top()?,
            }
        }
    }

    /// The directory being read.
    fn top(&self) -> Result<BorrowedFd<'_>, RemoveError> {
        let fd = self.frames.last().map(|f| f.dir.fd());
        fd.unwrap_or(Err(Errno::BADF))
            .map_err(|e| self.error("read", None, e))
    }

    /// Removes entry `name` of the directory being read, or opens it to empty it first.
    fn entry(&mut self, name: CString, is_dir: bool) -> Result<(), RemoveError> {
        if !is_dir {
            match rustix::fs::unlinkat(self.top()?, &name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => return Ok(()),
                // Listed with an unknown type, or replaced since.
                Err(Errno::ISDIR) => {}
                Err(e) => return Err(self.error("remove", Some(&name), e)),
            }
        }
        if self.frames.len() >= self.open_dirs {
            return self.move_to_root(name);
        }
        match rustix::fs::openat(self.top()?, &name, dir_flags(), Mode::empty()) {
            Ok(fd) => {
                let (dev, mount_root) =
                    identity(fd.as_fd()).map_err(|e| self.error("stat", Some(&name), e))?;
                if dev != self.dev || mount_root {
                    return Err(RemoveError::Mount {
                        path: self.path(Some(&name)),
                    });
                }
                let dir = Dir::new(fd).map_err(|e| self.error("read", Some(&name), e))?;
                self.frames.push(Frame { dir, name });
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            // Replaced by a symlink or a file since it was listed: removed as such.
            Err(Errno::NOTDIR | Errno::LOOP) => {
                match rustix::fs::unlinkat(self.top()?, &name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(self.error("remove", Some(&name), e)),
                }
            }
            Err(e) => Err(self.error("open", Some(&name), e)),
        }
    }

    /// Closes the emptied directory being read and removes it.
    fn finish_top(&mut self) -> Result<(), RemoveError> {
        let Some(Frame { dir, name }) = self.frames.pop() else {
            return Ok(());
        };
        drop(dir);
        match rustix::fs::unlinkat(self.top()?, &name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.error("remove", Some(&name), e)),
        }
    }

    /// Moves directory `name` of the directory being read (at the deepest level the walk may
    /// open) to a fresh name under the root, to be emptied from there; an empty one is removed
    /// at once.
    fn move_to_root(&mut self, name: CString) -> Result<(), RemoveError> {
        match rustix::fs::unlinkat(self.top()?, &name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => return Ok(()),
            Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => {}
            Err(e) => return Err(self.error("remove", Some(&name), e)),
        }
        loop {
            self.serial += 1;
            let Ok(fresh) = CString::new(format!("{MOVED_PREFIX}{}", self.serial)) else {
                return Err(self.error("move", Some(&name), Errno::INVAL));
            };
            let parent = self.top()?;
            let root = self.frames.first().map(|f| f.dir.fd());
            let root = root
                .unwrap_or(Err(Errno::BADF))
                .map_err(|e| self.error("read", None, e))?;
            let moved = if self.noreplace {
                rustix::fs::renameat_with(parent, &name, root, &fresh, RenameFlags::NOREPLACE)
            } else {
                rustix::fs::renameat(parent, &name, root, &fresh)
            };
            match moved {
                Ok(()) => {
                    self.moved = true;
                    return Ok(());
                }
                Err(Errno::NOENT) => return Ok(()),
                // The filesystem has no RENAME_NOREPLACE: a plain rename fails on a taken name
                // unless it is an empty directory, which it then replaces (it is in the tree).
                Err(Errno::INVAL) if self.noreplace => self.noreplace = false,
                Err(Errno::EXIST) => {}
                Err(Errno::NOTEMPTY | Errno::NOTDIR | Errno::ISDIR) if !self.noreplace => {}
                Err(e) => return Err(self.error("move", Some(&name), e)),
            }
        }
    }

    /// The path of `name` in the directory being read (of that directory itself when `None`).
    fn path(&self, name: Option<&CStr>) -> PathBuf {
        let mut path = self.root.to_owned();
        for frame in self.frames.iter().skip(1) {
            path.push(OsStr::from_bytes(frame.name.to_bytes()));
        }
        if let Some(name) = name {
            path.push(OsStr::from_bytes(name.to_bytes()));
        }
        path
    }

    fn error(&self, op: &'static str, name: Option<&CStr>, e: Errno) -> RemoveError {
        RemoveError::Io {
            op,
            path: self.path(name),
            source: e.into(),
        }
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// The device (major, minor) of open directory `fd`, and whether it is the root of a mount.
fn identity(fd: BorrowedFd<'_>) -> Result<((u32, u32), bool), Errno> {
    match rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::empty(),
    ) {
        Ok(st) => {
            let root = StatxAttributes::MOUNT_ROOT;
            let mount_root =
                st.stx_attributes_mask.contains(root) && st.stx_attributes.contains(root);
            Ok(((st.stx_dev_major, st.stx_dev_minor), mount_root))
        }
        // No statx (a kernel before 4.11, or a sandbox refusing it): the device alone.
        Err(Errno::NOSYS | Errno::PERM) => {
            let st = rustix::fs::fstat(fd)?;
            Ok((
                (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev)),
                false,
            ))
        }
        Err(e) => Err(e),
    }
}

/// `path` as an error shows it: escaped, and cut when very long.
fn shown(path: &Path) -> String {
    crate::shown_cut(&path.to_string_lossy(), SHOWN_PATH_MAX)
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::{FileTypeExt, symlink};

    use super::*;

    fn open(path: &Path) -> OwnedFd {
        rustix::fs::openat(CWD, path, dir_flags(), Mode::empty()).unwrap()
    }

    /// Makes a chain of `depth` directories named `name` under `top`, holding two descriptors
    /// at most.
    fn chain(top: &Path, depth: usize, name: &str) {
        let mut dir = open(top);
        for _ in 0..depth {
            rustix::fs::mkdirat(&dir, name, Mode::RWXU).unwrap();
            dir = rustix::fs::openat(&dir, name, dir_flags(), Mode::empty()).unwrap();
        }
    }

    /// A tree with files, directories, symlinks (into `outside` too), a hardlink to a file of
    /// `outside`, and fifos.
    fn populate(root: &Path, outside: &Path) {
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        std::fs::write(root.join("a/b/c/file"), "x").unwrap();
        symlink(outside, root.join("to-outside-dir")).unwrap();
        symlink(outside.join("kept"), root.join("a/to-outside-file")).unwrap();
        symlink("/nonexistent/target", root.join("a/b/dangling")).unwrap();
        std::fs::hard_link(outside.join("kept"), root.join("a/b/hardlink")).unwrap();
        for fifo in ["fifo", "a/b/c/fifo"] {
            rustix::fs::mknodat(
                CWD,
                root.join(fifo).as_path(),
                FileType::Fifo,
                Mode::RUSR | Mode::WUSR,
                0,
            )
            .unwrap();
        }
    }

    fn outside_dir(tmp: &Path) -> PathBuf {
        let outside = tmp.join("outside");
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("kept"), "kept").unwrap();
        std::fs::write(outside.join("sub/kept"), "kept").unwrap();
        outside
    }

    fn assert_outside_kept(outside: &Path) {
        assert_eq!(std::fs::read(outside.join("kept")).unwrap(), b"kept");
        assert_eq!(std::fs::read(outside.join("sub/kept")).unwrap(), b"kept");
    }

    #[test]
    fn tree_with_files_symlinks_and_fifos_goes_and_symlink_targets_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = outside_dir(tmp.path());
        let root = tmp.path().join("tree");
        populate(&root, &outside);
        assert!(
            std::fs::symlink_metadata(root.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        remove(&root).unwrap();
        assert!(!root.exists());
        assert_outside_kept(&outside);
    }

    #[test]
    fn tree_moved_up_through_a_tiny_descriptor_budget_goes() {
        for open_dirs in [2, 3, 5] {
            let tmp = tempfile::tempdir().unwrap();
            let outside = outside_dir(tmp.path());
            let root = tmp.path().join("tree");
            // Branches and files at every depth; a name the moves would pick is taken already.
            let mut dir = root.clone();
            for level in 0..12 {
                dir.push(format!("d{level}"));
                std::fs::create_dir_all(dir.join("side/deeper")).unwrap();
                std::fs::write(dir.join("file"), "x").unwrap();
                std::fs::write(dir.join("side/deeper/file"), "x").unwrap();
                populate(&dir.join("more"), &outside);
            }
            std::fs::create_dir_all(root.join(format!("{MOVED_PREFIX}1/x"))).unwrap();
            std::fs::write(root.join(format!("{MOVED_PREFIX}2")), "x").unwrap();
            remove_with(&root, open_dirs).unwrap();
            assert!(!root.exists(), "budget {open_dirs}");
            assert_outside_kept(&outside);
        }
    }

    #[test]
    fn a_missing_root_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let e = remove(&tmp.path().join("absent")).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_symlink_or_file_root_goes_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = outside_dir(tmp.path());
        let link = tmp.path().join("link");
        symlink(&outside, &link).unwrap();
        remove(&link).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_outside_kept(&outside);
        let file = tmp.path().join("file");
        std::fs::write(&file, "x").unwrap();
        remove(&file).unwrap();
        assert!(!file.exists());
    }

    /// The child of [`deep_tree_goes_on_a_small_stack_within_few_descriptors`]: under a
    /// descriptor limit just above [`OPEN_DIRS`], on a 256 KiB stack, a tree 100,000
    /// directories deep is removed.
    #[test]
    #[ignore = "run in a process of its own by deep_tree_goes_on_a_small_stack_within_few_descriptors"]
    fn deep_tree_child() {
        let Some(top) = std::env::var_os("CRIUS_TREE_DEEP_DIR") else {
            return;
        };
        let root = PathBuf::from(top).join("deep");
        std::fs::create_dir(&root).unwrap();
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap_or(2);
        // The chain is built holding two descriptors; the walk may hold OPEN_DIRS.
        let limit = highest + 1 + OPEN_DIRS as u64 + 2;
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(limit),
                maximum: Some(limit),
            },
        )
        .unwrap();
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                chain(&root, 100_000, "d");
                // What std does: one descriptor per level.
                let std_result = std::fs::remove_dir_all(&root);
                assert!(std_result.is_err(), "std::fs::remove_dir_all succeeded");
                remove(&root).map(|()| root.exists())
            })
            .unwrap();
        assert!(!worker.join().unwrap().unwrap(), "the tree is still there");
    }

    #[test]
    fn deep_tree_goes_on_a_small_stack_within_few_descriptors() {
        // On tmpfs where there is one: a disk may take a millisecond per mkdir.
        let tmp = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tree::tests::deep_tree_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CRIUS_TREE_DEEP_DIR", tmp.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{}\n{text}",
            out.status
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    /// Unmounts (lazily) on drop.
    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }

    #[test]
    fn mount_points_inside_stop_the_removal_and_stay_whole() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let outside = outside_dir(tmp.path());
        let root = tmp.path().join("tree");
        // Deep enough under long names that the error must cut the path it shows.
        let long = "n".repeat(250);
        let mut deep = root.clone();
        for _ in 0..8 {
            deep.push(&long);
        }
        let tmpfs = deep.join("tmpfs");
        let bind = root.join("bind");
        std::fs::create_dir_all(&tmpfs).unwrap();
        std::fs::create_dir_all(&bind).unwrap();
        rustix::mount::mount(
            "tmpfs",
            &tmpfs,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        let _tmpfs = Mounted(tmpfs.clone());
        std::fs::write(tmpfs.join("on-tmpfs"), "kept").unwrap();
        // Another filesystem, then a bind mount of the tree's own.
        let e = remove(&root).unwrap_err();
        assert!(
            matches!(&e, RemoveError::Mount { path } if *path == tmpfs),
            "{e}"
        );
        let message = e.to_string();
        assert!(
            message.len() < 2 * SHOWN_PATH_MAX && message.contains("mount point"),
            "{message}"
        );
        assert_eq!(std::fs::read(tmpfs.join("on-tmpfs")).unwrap(), b"kept");
        drop(_tmpfs);
        std::fs::create_dir_all(&bind).unwrap();
        rustix::mount::mount_bind(&outside, &bind).unwrap();
        let _bind = Mounted(bind.clone());
        let e = remove(&root).unwrap_err();
        assert!(
            matches!(&e, RemoveError::Mount { path } if *path == bind),
            "{e}"
        );
        assert_eq!(e.kind(), std::io::ErrorKind::ResourceBusy);
        assert_outside_kept(&outside);
        drop(_bind);
        remove(&root).unwrap();
        assert!(!root.exists());
        assert_outside_kept(&outside);
    }
}
