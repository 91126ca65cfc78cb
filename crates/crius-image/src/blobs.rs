//! The content-addressed blob store: `blobs/sha256/<hex>`, each blob verified against its
//! digest while it is written, under a temporary name renamed into place only when it matches.

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use crate::ImageError;
use crate::digest::{self, Hasher};

/// How often (bytes) a download logs its progress.
const PROGRESS_EVERY: u64 = 64 << 20;

/// The blob store under a directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// A blob store in `dir` (`<root>/blobs`) writing temporary files into `tmp`; both exist.
    pub fn new(dir: PathBuf, tmp: PathBuf) -> BlobStore {
        BlobStore { dir, tmp }
    }

    /// The directory holding `sha256/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives (whether or not it exists).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = digest::hex_of(digest)?;
        Ok(self.dir.join("sha256").join(hex))
    }

    /// Whether the blob is stored.
    pub fn contains(&self, digest: &str) -> Result<bool, ImageError> {
        Ok(self.path(digest)?.is_file())
    }

    /// Reads a whole (small) blob.
    pub async fn read(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.path(digest)?;
        tokio::fs::read(&path)
            .await
            .map_err(ImageError::io(format!("reading blob {}", path.display())))
    }

    /// Stores `data` as blob `digest` after checking it matches.
    pub async fn write_bytes(&self, digest: &str, data: &[u8]) -> Result<PathBuf, ImageError> {
        let chunk = std::io::Result::Ok(data.to_vec());
        self.write_stream(digest, None, futures_util::stream::iter([chunk]))
            .await
    }

    /// Streams chunks into blob `digest`, hashing every byte; refuses content over
    /// `expected_size` bytes (when known) or with another digest, storing nothing then.
    pub async fn write_stream<S, B>(
        &self,
        digest: &str,
        expected_size: Option<u64>,
        stream: S,
    ) -> Result<PathBuf, ImageError>
    where
        S: Stream<Item = std::io::Result<B>>,
        B: AsRef<[u8]>,
    {
        let hex = digest::hex_of(digest)?;
        let tmp = self.tmp.join(format!("blob-{hex}-{}", unique()));
        self.write_file(&tmp, digest, expected_size, 0, stream, false)
            .await
    }

    /// Where the bytes of an interrupted download of `digest` are kept.
    fn partial_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self
            .tmp
            .join(format!("partial-{}", digest::hex_of(digest)?)))
    }

    /// How many bytes of `digest` an interrupted download left for the next try.
    pub async fn partial_len(&self, digest: &str) -> u64 {
        match self.partial_path(digest) {
            Ok(path) => tokio::fs::metadata(&path)
                .await
                .map(|m| m.len())
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Like [`BlobStore::write_stream`] for a download: `stream` carries the blob from byte
    /// `offset` on (what an earlier try kept is used for the bytes before it). When the
    /// transfer breaks off, the bytes received so far are kept for the next try; content
    /// that is refused is not.
    pub async fn write_download<S, B>(
        &self,
        digest: &str,
        expected_size: Option<u64>,
        offset: u64,
        stream: S,
    ) -> Result<PathBuf, ImageError>
    where
        S: Stream<Item = std::io::Result<B>>,
        B: AsRef<[u8]>,
    {
        let partial = self.partial_path(digest)?;
        self.write_file(&partial, digest, expected_size, offset, stream, true)
            .await
    }

    /// Writes `stream` into `tmp` after its first `offset` bytes, checks the whole, and
    /// renames it into place; on failure removes `tmp` unless `keep_on_transfer_error` and
    /// the transfer itself failed.
    async fn write_file<S, B>(
        &self,
        tmp: &Path,
        digest: &str,
        expected_size: Option<u64>,
        offset: u64,
        stream: S,
        keep_on_transfer_error: bool,
    ) -> Result<PathBuf, ImageError>
    where
        S: Stream<Item = std::io::Result<B>>,
        B: AsRef<[u8]>,
    {
        let dest = self.path(digest)?;
        let written = self
            .write_tmp(tmp, digest, expected_size, offset, stream)
            .await;
        let result = match written {
            Ok(()) => {
                let (from, to) = (tmp.to_owned(), dest.clone());
                // Blocking file system work, off the async workers. The blob reaches the disk
                // when the store syncs before the record naming it is written.
                tokio::task::spawn_blocking(move || {
                    std::fs::rename(&from, &to).map_err(ImageError::io(format!(
                        "renaming blob into {}",
                        to.display()
                    )))
                })
                .await
                .map_err(|e| ImageError::Io {
                    context: "blob store task".into(),
                    source: std::io::Error::other(e.to_string()),
                })
                .and_then(|r| r)
            }
            Err(Stop::Transfer(e)) if keep_on_transfer_error => return Err(e),
            Err(Stop::Transfer(e) | Stop::Refused(e)) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(tmp).await;
        }
        result.map(|()| dest)
    }

    async fn write_tmp<S, B>(
        &self,
        tmp: &Path,
        digest: &str,
        expected_size: Option<u64>,
        offset: u64,
        stream: S,
    ) -> Result<(), Stop>
    where
        S: Stream<Item = std::io::Result<B>>,
        B: AsRef<[u8]>,
    {
        let refused = |e: ImageError| Stop::Refused(e);
        let mut hasher = Hasher::new();
        let mut file = if offset == 0 {
            tokio::fs::File::create(tmp)
                .await
                .map_err(ImageError::io(format!("creating {}", tmp.display())))
                .map_err(refused)?
        } else {
            let kept = self
                .read_kept(tmp, offset, &mut hasher)
                .await
                .map_err(refused)?;
            tracing::info!(%digest, bytes = offset, "resuming a download");
            kept
        };
        let mut written = offset;
        let mut next_log = offset + PROGRESS_EVERY;
        let started = std::time::Instant::now();
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(Stop::Refused(ImageError::DigestMismatch {
                        digest: digest.to_owned(),
                        actual: e.to_string(),
                    }));
                }
                Err(e) => {
                    // What arrived so far stays on disk for the next try.
                    let _ = file.flush().await;
                    return Err(Stop::Transfer(ImageError::Transfer {
                        digest: digest.to_owned(),
                        received: written,
                        total: expected_size,
                        reason: e.to_string(),
                    }));
                }
            };
            let chunk = chunk.as_ref();
            written += chunk.len() as u64;
            if let Some(max) = expected_size
                && written > max
            {
                return Err(Stop::Refused(ImageError::SizeMismatch {
                    digest: digest.to_owned(),
                    expected: max,
                }));
            }
            hasher.update(chunk);
            file.write_all(chunk)
                .await
                .map_err(ImageError::io(format!("writing {}", tmp.display())))
                .map_err(refused)?;
            if written >= next_log {
                next_log += PROGRESS_EVERY;
                tracing::info!(%digest, bytes = written, total = ?expected_size, "downloading");
            }
        }
        file.flush()
            .await
            .map_err(ImageError::io(format!("writing {}", tmp.display())))
            .map_err(refused)?;
        let file = file.into_std().await;
        crate::unpack::start_writeback(&file);
        let actual = hasher.finish();
        if actual != digest {
            return Err(Stop::Refused(ImageError::DigestMismatch {
                digest: digest.to_owned(),
                actual,
            }));
        }
        tracing::debug!(%digest, bytes = written, elapsed = ?started.elapsed(), "blob stored");
        Ok(())
    }

    /// Hashes the first `offset` bytes an earlier try kept in `path` and opens it for
    /// appending after them.
    async fn read_kept(
        &self,
        path: &Path,
        offset: u64,
        hasher: &mut Hasher,
    ) -> Result<tokio::fs::File, ImageError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .await
            .map_err(ImageError::io(format!("opening {}", path.display())))?;
        let mut left = offset;
        let mut buf = vec![0u8; 256 << 10];
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = file
                .read(&mut buf[..want])
                .await
                .map_err(ImageError::io(format!("reading {}", path.display())))?;
            if n == 0 {
                return Err(ImageError::Io {
                    context: format!("reading {}", path.display()),
                    source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                });
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
        file.set_len(offset)
            .await
            .map_err(ImageError::io(format!("truncating {}", path.display())))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(ImageError::io(format!("seeking {}", path.display())))?;
        Ok(file)
    }

    /// Removes blob `digest` if present.
    pub fn remove(&self, digest: &str) -> Result<(), ImageError> {
        let path = self.path(digest)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::io(format!(
                "removing blob {}",
                path.display()
            ))(e)),
            _ => Ok(()),
        }
    }

    /// The digests of every stored blob.
    pub fn list(&self) -> Result<Vec<String>, ImageError> {
        let dir = self.dir.join("sha256");
        let mut out = Vec::new();
        for entry in
            std::fs::read_dir(&dir).map_err(ImageError::io(format!("listing {}", dir.display())))?
        {
            let entry = entry.map_err(ImageError::io(format!("listing {}", dir.display())))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(format!("{}{name}", digest::SHA256_PREFIX));
            }
        }
        Ok(out)
    }
}

/// Why writing a blob stopped.
enum Stop {
    /// The transfer broke off: what arrived may be kept.
    Transfer(ImageError),
    /// The content or the store refused it: nothing is kept.
    Refused(ImageError),
}

/// A name part unique within this process and across restarts.
pub(crate) fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{n}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("mkdir");
        let store = BlobStore::new(dir.path().join("blobs"), dir.path().join("tmp"));
        (dir, store)
    }

    #[tokio::test]
    async fn verified_blob_is_stored() {
        let (dir, store) = store();
        let digest = digest::sha256_of(b"hello");
        store.write_bytes(&digest, b"hello").await.expect("write");
        assert_eq!(store.read(&digest).await.expect("read"), b"hello");
        assert_eq!(store.list().expect("list"), vec![digest]);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn mismatch_stores_nothing() {
        let (dir, store) = store();
        let digest = digest::sha256_of(b"hello");
        let err = store
            .write_bytes(&digest, b"hellO")
            .await
            .expect_err("mismatch");
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&digest).expect("contains"));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
        let err = store
            .write_stream(
                &digest,
                Some(3),
                futures_util::stream::iter([Ok(b"hello".to_vec())]),
            )
            .await
            .expect_err("too big");
        assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");
        assert!(store.path("sha256:../../x").is_err());
    }
}
