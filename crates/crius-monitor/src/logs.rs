//! Container output into the CRI log format: `<RFC3339Nano time> <stream> <F|P> <line>`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
    pending: [Vec<u8>; 2],
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl LogWriter {
    /// Opens (creating) the log file; `None` discards output.
    pub(crate) fn new(path: Option<PathBuf>) -> std::io::Result<LogWriter> {
        let file = match &path {
            Some(p) => Some(open(p)?),
            None => None,
        };
        Ok(LogWriter {
            path,
            file,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Reopens the file at its path (after rotation).
    pub(crate) fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(p) = &self.path {
            self.file = Some(open(p)?);
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
    let z = days as i64 + 719_468;
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

    #[test]
    fn formats_times() {
        assert_eq!(format_time(0, 5), "1970-01-01T00:00:00.000000005Z");
        assert_eq!(
            format_time(1_795_000_000, 123_456_789),
            "2026-11-18T11:06:40.123456789Z"
        );
    }

    #[test]
    fn long_lines_become_partial_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut w = LogWriter::new(Some(path.clone())).expect("open");
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
        let mut w = LogWriter::new(Some(path.clone())).expect("open");
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
