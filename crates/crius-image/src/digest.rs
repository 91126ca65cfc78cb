//! sha256 digests: parsing, computing while streaming, chain ids.

use sha2::{Digest as _, Sha256};

/// The only digest algorithm crius accepts.
pub const SHA256_PREFIX: &str = "sha256:";

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {digest:?}: expected sha256: followed by 64 lowercase hex digits")]
pub struct InvalidDigest {
    /// The refused text.
    pub digest: String,
}

/// Checks that `digest` is `sha256:` + 64 lowercase hex digits and returns its hex part.
pub fn hex_of(digest: &str) -> Result<&str, InvalidDigest> {
    match digest.strip_prefix(SHA256_PREFIX) {
        Some(hex) if is_hex64(hex) => Ok(hex),
        _ => Err(InvalidDigest {
            digest: digest.to_owned(),
        }),
    }
}

/// Whether `s` is exactly 64 lowercase hex digits.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `sha256:<hex>` of `data`.
pub fn sha256_of(data: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(data)))
}

/// Computes a sha256 digest over data fed in pieces.
#[derive(Debug, Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher::default()
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest, `sha256:<hex>`.
    pub fn finish(self) -> String {
        format!("{SHA256_PREFIX}{}", hex::encode(self.0.finalize()))
    }
}

/// A reader that hashes everything read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: std::io::Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Hasher::new(),
            count: 0,
        }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads the rest of the stream, then returns its digest and total length.
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The chain ids of layers with these diff ids, bottom to top: the first is its diff id, each
/// next is the digest of `"<previous chain id> <diff id>"`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(prev) => sha256_of(format!("{prev} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_checks() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(hex_of(&good), Ok("a".repeat(64).as_str()));
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha512:{}", "a".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}/..", "a".repeat(61)),
            "a".repeat(64),
        ] {
            assert!(hex_of(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = sha256_of(b"a");
        let b = sha256_of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], sha256_of(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn hashing_reader_hashes_everything() {
        let data = vec![7u8; 100_000];
        let mut reader = HashingReader::new(&data[..]);
        let mut head = [0u8; 10];
        std::io::Read::read_exact(&mut reader, &mut head).expect("read");
        let (digest, len) = reader.finish().expect("finish");
        assert_eq!(digest, sha256_of(&data));
        assert_eq!(len, 100_000);
    }
}
