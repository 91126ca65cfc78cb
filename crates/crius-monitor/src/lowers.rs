//! Short names for the layers of a deep overlay. overlayfs keeps each `lowerdir+` string as
//! given and prints all of them in the mount's line of every mountinfo read. With full layer
//! paths a deep image's line outgrows a page, and the kernel renders it several times per read;
//! libcontainer reads the monitor's mount table a dozen times per container it makes. Past
//! [`ALIAS_ABOVE`] bytes of names the layers are given as symlinks named by their short ids, in
//! a directory beside the mount point that is the thread's working directory for the mount and
//! is removed right after it: 128 layers take ~3 KB of the line instead of ~12 KB.

use std::collections::HashSet;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The total length of the layers' `lowerdir+=` options (full names) above which they are
/// given by short names.
pub(crate) const ALIAS_ABOVE: usize = 2048;

/// Characters of a layer's directory name (its content digest) that name its alias.
const SHORT: usize = 12;

/// The most bytes of `lowerdir+=` options short ids may take; deeper images get positions.
const SHORT_IDS_UP_TO: usize = 3072;

/// The suffix of an alias directory's name.
const SUFFIX: &str = ".lowers";

/// The names `lowers` (bottom to top) get in the mount: `None` when their full names are short
/// enough; else the first [`SHORT`] characters of each layer directory's name where those are
/// ASCII alphanumerics, tell the layers apart and fit in [`SHORT_IDS_UP_TO`] bytes, and their
/// positions otherwise.
pub(crate) fn short_names(lowers: &[PathBuf]) -> Option<Vec<String>> {
    let total: usize = lowers
        .iter()
        .map(|l| l.as_os_str().len() + ",lowerdir+=".len())
        .sum();
    if total <= ALIAS_ABOVE {
        return None;
    }
    let prefixes: Option<Vec<&str>> = lowers
        .iter()
        .map(|l| {
            let short = l.file_name()?.to_str()?.get(..SHORT)?;
            short
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
                .then_some(short)
        })
        .collect();
    if let Some(prefixes) = prefixes
        && prefixes.len() * (SHORT + ",lowerdir+=".len()) <= SHORT_IDS_UP_TO
        && prefixes.iter().collect::<HashSet<_>>().len() == prefixes.len()
    {
        return Some(prefixes.into_iter().map(str::to_owned).collect());
    }
    Some((0..lowers.len()).map(|i| i.to_string()).collect())
}

/// The directory of the aliases of the overlay mounted at `target`: `.<name>.lowers` beside it.
pub(crate) fn dir_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}{SUFFIX}"))
}

/// Whether `name` is that of an alias directory (one a monitor that died mid-mount left).
pub(crate) fn is_alias_dir(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| n.starts_with('.') && n.ends_with(SUFFIX))
}

/// A root-only directory of symlinks, one per layer; removed with its links when dropped.
#[derive(Debug)]
pub(crate) struct Aliases {
    dir: PathBuf,
}

impl Aliases {
    /// Makes `dir` afresh (a leftover of an interrupted mount is replaced) with a symlink
    /// `names[i]` to `lowers[i]` for each layer.
    pub(crate) fn make(
        dir: PathBuf,
        lowers: &[PathBuf],
        names: &[String],
    ) -> std::io::Result<Aliases> {
        match crius_proto::tree::remove(&dir) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let aliases = Aliases { dir };
        for (name, lower) in names.iter().zip(lowers) {
            std::os::unix::fs::symlink(lower, aliases.dir.join(name))?;
        }
        Ok(aliases)
    }

    /// The directory the names are relative to.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Aliases {
    fn drop(&mut self) {
        if let Err(e) = crius_proto::tree::remove(&self.dir) {
            crate::log(format_args!(
                "cannot remove the layer aliases {}: {e}",
                self.dir.display()
            ));
        }
    }
}

/// Runs `f` with `dir` as the calling thread's working directory, its own from here on (the
/// other threads' stays), then returns that to `/`, where the monitor keeps it.
pub(crate) fn in_dir<T>(dir: &Path, f: impl FnOnce() -> T) -> std::io::Result<T> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)?;
    std::env::set_current_dir(dir)?;
    let out = f();
    if let Err(e) = std::env::set_current_dir("/") {
        // What `f` did stands; the monitor names every path from `/` anyway.
        crate::log(format_args!("cannot return to /: {e}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_layers(n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let id = (i as u64 + 1) * 0x9e37_79b9;
                PathBuf::from(format!("/proc/self/fd/9/{id:012x}{}", "e".repeat(52)))
            })
            .collect()
    }

    #[test]
    fn shallow_images_keep_their_full_names() {
        assert_eq!(short_names(&store_layers(1)), None);
        assert_eq!(short_names(&store_layers(20)), None);
    }

    #[test]
    fn deep_images_are_named_by_short_ids() {
        let lowers = store_layers(128);
        let names = short_names(&lowers).expect("aliased");
        assert_eq!(names.len(), 128);
        for (name, lower) in names.iter().zip(&lowers) {
            assert_eq!(name.len(), SHORT);
            assert!(
                lower
                    .file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(name.as_str())
            );
        }
    }

    #[test]
    fn the_deepest_images_are_named_by_position() {
        let names = short_names(&store_layers(256)).expect("aliased");
        assert_eq!(names[255], "255");
        assert!(short_names(&store_layers(133)).expect("aliased")[0].len() == SHORT);
        assert_eq!(short_names(&store_layers(134)).expect("aliased")[0], "0");
    }

    #[test]
    fn ids_that_collide_or_are_no_ids_give_positions() {
        // Two layers share the first 12 characters of their names.
        let mut lowers = store_layers(128);
        lowers[7] = PathBuf::from(format!(
            "/proc/self/fd/9/{}ff",
            &lowers[3].file_name().unwrap().to_str().unwrap()[..62]
        ));
        let names = short_names(&lowers).expect("aliased");
        assert_eq!(names[0], "0");
        assert_eq!(names[127], "127");
        // A name with characters overlayfs treats specially.
        let mut lowers = store_layers(128);
        lowers[5] = PathBuf::from(format!("/layers/{}", "a,b:c".repeat(10)));
        assert_eq!(short_names(&lowers).expect("aliased")[5], "5");
        // The same layer twice.
        let mut lowers = store_layers(128);
        lowers[9] = lowers[8].clone();
        assert_eq!(short_names(&lowers).expect("aliased")[9], "9");
    }

    #[test]
    fn aliases_link_each_layer_and_go_away_when_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("rootfs");
        let dir = dir_for(&target);
        assert_eq!(dir, tmp.path().join(".rootfs.lowers"));
        assert!(is_alias_dir(dir.file_name().unwrap()));
        assert!(!is_alias_dir("volume-0".as_ref()) && !is_alias_dir("rootfs".as_ref()));
        // A leftover of an interrupted mount is replaced.
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("stale"), "x").unwrap();
        let lowers = [tmp.path().join("a"), tmp.path().join("b")];
        let names = ["0".to_owned(), "1".to_owned()];
        let aliases = Aliases::make(dir.clone(), &lowers, &names).unwrap();
        assert!(!dir.join("stale").exists());
        assert_eq!(std::fs::read_link(dir.join("1")).unwrap(), lowers[1]);
        // The names resolve relative to the directory, on this thread only.
        std::fs::create_dir(&lowers[1]).unwrap();
        let here = std::env::current_dir().unwrap();
        let seen = std::thread::spawn({
            let dir = aliases.dir().to_owned();
            move || in_dir(&dir, || std::fs::metadata("1").map(|m| m.is_dir())).unwrap()
        })
        .join()
        .unwrap();
        assert!(seen.unwrap());
        assert_eq!(std::env::current_dir().unwrap(), here);
        drop(aliases);
        assert!(!dir.exists());
    }
}
