//! Container output into the CRI log format: `<RFC3339Nano time> <stream> <F|P> <line>`.

use std::io::Write;
use std::path::PathBuf;

/// The longest line written whole; longer ones are split into `P` (partial) records.
const MAX_LINE: usize = 16 * 1024;

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A container's log file and the unterminated tail of each stream.
#[derive(Debug)]
pub(crate) struct LogWriter {
    target: Option<LogTarget>,
    file: Option<std::fs::File>,
    pending: [Vec<u8>; 2],
}

/// Where a container's log goes: `relative` beneath the pod's log `directory`.
#[derive(Debug, Clone)]
pub(crate) struct LogTarget {
    /// The pod's log directory (kubelet's; created when missing).
    pub(crate) directory: PathBuf,
    /// The container's log file, relative to `directory`.
    pub(crate) relative: PathBuf,
}

/// Opens (creating) the log file beneath its directory: every component below the directory is
/// resolved without symlinks or `..` (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), missing
/// directories are made on the way, and only a regular file is written.
fn open(target: &LogTarget) -> std::io::Result<std::fs::File> {
    use crate::resolve::{RESOLVE_BENEATH, RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, openat2};
    use std::os::fd::AsFd;
    const RESOLVE: u64 = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    let refused = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("log path {}: {why}", target.relative.display()),
        )
    };
    std::fs::create_dir_all(&target.directory)?;
    let mut dir: std::os::fd::OwnedFd = std::fs::File::open(&target.directory)?.into();
    let components: Vec<&str> = target
        .relative
        .to_str()
        .ok_or_else(|| refused("is not UTF-8"))?
        .split('/')
        .collect();
    let Some((file, parents)) = components.split_last() else {
        return Err(refused("is empty"));
    };
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(refused("leaves the pod's log directory"));
    }
    for name in parents {
        let c = std::ffi::CString::new(*name).map_err(|_| refused("holds NUL"))?;
        match nix::sys::stat::mkdirat(
            dir.as_fd(),
            c.as_c_str(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = openat2(
            dir.as_fd(),
            name,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            RESOLVE,
        )?;
    }
    let fd = openat2(
        dir.as_fd(),
        file,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_NONBLOCK | libc::O_NOCTTY,
        0o640,
        RESOLVE,
    )?;
    let file = std::fs::File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(refused("is not a regular file"));
    }
    // Writes to a regular file never block; the flag only kept a FIFO's open from waiting.
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
    )?;
    Ok(file)
}

impl LogWriter {
    /// Opens (creating) the log file; `None` discards output.
    pub(crate) fn new(target: Option<LogTarget>) -> std::io::Result<LogWriter> {
        let file = match &target {
            Some(t) => Some(open(t)?),
            None => None,
        };
        Ok(LogWriter {
            target,
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Reopens the file at its path (after rotation).
    pub(crate) fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(t) = &self.target {
            self.file = Some(open(t)?);
        }
        Ok(())
    }

    /// Writes the complete lines of `data` (lines longer than [`MAX_LINE`] as partial
    /// records); keeps a trailing partial line for later. All records of one call go to the
    /// file in one write.
    pub(crate) fn write(&mut self, stream: Stream, data: &[u8]) {
        let index = stream as usize;
        let mut pending = std::mem::take(&mut self.pending[index]);
        pending.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let rest = &pending[start..];
            let window = &rest[..rest.len().min(MAX_LINE + 1)];
            match window.iter().position(|b| *b == b'\n') {
                Some(pos) => {
                    self.record_into(&mut out, stream, 'F', &rest[..pos]);
                    start += pos + 1;
                }
                None if rest.len() >= MAX_LINE => {
                    self.record_into(&mut out, stream, 'P', &rest[..MAX_LINE]);
                    start += MAX_LINE;
                }
                None => break,
            }
        }
        pending.drain(..start);
        self.pending[index] = pending;
        self.emit(&out);
    }

    /// Writes what is left of a stream that ended.
    pub(crate) fn flush(&mut self, stream: Stream) {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if !rest.is_empty() {
            self.record(stream, 'F', &rest);
        }
    }

    fn record(&mut self, stream: Stream, tag: char, line: &[u8]) {
        let mut out = Vec::new();
        self.record_into(&mut out, stream, tag, line);
        self.emit(&out);
    }

    /// Appends one record to `out` (nothing when output is discarded).
    fn record_into(&self, out: &mut Vec<u8>, stream: Stream, tag: char, line: &[u8]) {
        if self.file.is_none() {
            return;
        }
        out.extend_from_slice(format!("{} {} {tag} ", rfc3339_nano(), stream.name()).as_bytes());
        out.extend_from_slice(line);
        out.push(b'\n');
    }

    fn emit(&mut self, out: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if !out.is_empty()
            && let Err(e) = file.write_all(out)
        {
            crate::log(format_args!("cannot write the container log: {e}"));
        }
    }
}

/// The current UTC time as RFC 3339 with nanoseconds.
pub(crate) fn rfc3339_nano() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_time(now.as_secs(), now.subsec_nanos())
}

fn format_time(secs: u64, nanos: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days)
        .unwrap_or(i64::MAX)
        .saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn formats_times() {
        assert_eq!(format_time(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(
            format_time(1_795_000_000, 123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
    }

    fn target(dir: &Path, rel: &str) -> LogTarget {
        LogTarget {
            directory: dir.to_owned(),
            relative: rel.into(),
        }
    }

    #[test]
    fn opens_only_beneath_the_log_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("pod");
        std::fs::create_dir(&logs).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), logs.join("link")).expect("symlink");
        std::os::unix::fs::symlink(outside.path().join("f"), logs.join("f.log")).expect("symlink");
        for rel in ["link/0.log", "f.log", "../escape.log", "/abs.log", "a//b"] {
            assert!(LogWriter::new(Some(target(&logs, rel))).is_err(), "{rel}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
        assert!(!dir.path().join("escape.log").exists());
        LogWriter::new(Some(target(&logs, "c/0.log"))).expect("open beneath");
        assert!(logs.join("c/0.log").is_file());
    }

    #[test]
    fn long_lines_become_partial_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut w = LogWriter::new(Some(target(dir.path(), "log"))).expect("open");
        let mut data = vec![b'a'; MAX_LINE + 5];
        data.extend_from_slice(b"\nshort\n");
        w.write(Stream::Stdout, &data);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        let tags: Vec<(&str, usize)> = lines.iter().map(|l| (l[2], l[3].len())).collect();
        assert_eq!(tags, [("P", MAX_LINE), ("F", 5), ("F", 5)]);
    }

    #[test]
    fn splits_lines_and_partials() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut w = LogWriter::new(Some(target(dir.path(), "log"))).expect("open");
        w.write(Stream::Stdout, b"one\ntw");
        w.write(Stream::Stderr, b"err\n");
        w.write(Stream::Stdout, b"o\nend");
        w.flush(Stream::Stdout);
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.splitn(4, ' ').collect()).collect();
        let tail: Vec<&[&str]> = lines.iter().map(|l| &l[1..]).collect();
        assert_eq!(
            tail,
            vec![
                &["stdout", "F", "one"][..],
                &["stderr", "F", "err"][..],
                &["stdout", "F", "two"][..],
                &["stdout", "F", "end"][..],
            ]
        );
    }
}
