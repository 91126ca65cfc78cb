//! Image names: parsing and normalising references the way containerd does
//! (`busybox` → `docker.io/library/busybox:latest`).

use std::fmt;

use crate::digest;

/// The registry of names without a registry part.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag of names with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// Why an image reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {}: {reason}", shown(reference))]
pub struct InvalidReference {
    /// The refused text.
    pub reference: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The longest reference accepted.
pub const REFERENCE_MAX: usize = 4096;

/// A reference as shown in an error: quoted and escaped, cut after 128 bytes so a huge request
/// does not make a huge message (gRPC carries it in a header).
pub fn shown(value: &str) -> String {
    crius_proto::shown_cut(value, 128)
}

/// A normalised image reference: registry, repository, and a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// `docker.io`, `registry.k8s.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/busybox`, `pause`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// `sha256:...` when pulled by digest.
    pub digest: Option<String>,
}

impl ImageName {
    /// Parses and normalises `reference`.
    pub fn parse(reference: &str) -> Result<ImageName, InvalidReference> {
        let invalid = |reason: &str| InvalidReference {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        if reference.is_empty() {
            return Err(invalid("empty"));
        }
        if reference.len() > REFERENCE_MAX {
            return Err(invalid(&format!(
                "is {} bytes, more than {REFERENCE_MAX}",
                reference.len()
            )));
        }
        if reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("contains whitespace or control characters"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, d)) => {
                digest::hex_of(d).map_err(|_| {
                    invalid(&format!(
                        "digest {} is not sha256: and 64 lowercase hex digits",
                        shown(d)
                    ))
                })?;
                (rest, Some(d.to_owned()))
            }
            None => (reference, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_owned()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(invalid(&format!(
                "tag {tag:?} must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -"
            )));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_owned(),
            _ => registry,
        };
        if !valid_registry(&registry) {
            return Err(invalid(&format!(
                "registry {registry:?} is not a lowercase host or host:port"
            )));
        }
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_repository(&repository) {
            return Err(invalid(&format!(
                "repository {repository:?} must be lowercase path components of \
                 [a-z0-9] separated by . _ __ or -"
            )));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag,
        };
        Ok(ImageName {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` without tag or digest.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when there is a tag.
    pub fn repo_tag(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.repo()))
    }

    /// `registry/repository@digest` for any manifest `digest`.
    pub fn repo_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repo())
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((h, p)) if !registry.ends_with(']') => (h, Some(p)),
        _ => (registry, None),
    };
    let host_ok = if host.starts_with('[') {
        host.ends_with(']')
            && host[1..host.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':')
    } else {
        host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|component| {
            !component.is_empty()
                && component
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && component.starts_with(|c: char| c.is_ascii_alphanumeric())
                && component.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageName::parse(s).expect(s).to_string()
    }

    #[test]
    fn normalises_like_containerd() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(norm("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b:latest");
        assert_eq!(norm("localhost/x:y"), "localhost/x:y");
        let d = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("127.0.0.1:5000/a:t@{d}")),
            format!("127.0.0.1:5000/a:t@{d}")
        );
        let name = ImageName::parse("127.0.0.1:5000/a").expect("parse");
        assert_eq!(name.repo_tag().as_deref(), Some("127.0.0.1:5000/a:latest"));
        assert_eq!(name.repo_digest(&d), format!("127.0.0.1:5000/a@{d}"));
    }

    #[test]
    fn refuses_bad_references() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox@sha256:abc",
            "a b",
            "repo:tag/x",
            "../etc",
            "busybox:-x",
            "docker.io/",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn refuses_hostile_references_with_short_messages() {
        let big = "a".repeat(64 * 1024);
        let hex = "a".repeat(64);
        for bad in [
            " ".to_owned(),
            "busybox latest".into(),
            "busybox\0".into(),
            "busybox\n:1".into(),
            "REG.IO/x".into(),
            format!("busybox@sha256:{}", "a".repeat(63)),
            format!("busybox@sha256:{}", "a".repeat(65)),
            format!("busybox@sha256:{}", "A".repeat(64)),
            format!("busybox@md5:{}", "a".repeat(32)),
            format!("busybox@sha256:{big}"),
            "busybox@".into(),
            "..".into(),
            "127.0.0.1:5000/../x".into(),
            "127.0.0.1:5000/a/../../b".into(),
            "127.0.0.1:5000//a".into(),
            "127.0.0.1:5000/a/".into(),
            format!("busybox:{}", "t".repeat(129)),
            "http://127.0.0.1:5000/a".into(),
            "127.0.0.1:99999/a".into(),
            format!("sha256:{hex}/x"),
            "@".into(),
            ":".into(),
            big.clone(),
            format!("127.0.0.1:5000/{big}"),
        ] {
            let err = ImageName::parse(&bad).err();
            let message = err.map(|e| e.to_string());
            assert!(message.is_some(), "{bad:?} was accepted");
            let message = message.unwrap_or_default();
            assert!(message.len() < 512, "a {} byte message", message.len());
            assert!(message.starts_with("invalid image reference"), "{message}");
        }
    }

    #[test]
    fn shown_cuts_long_references() {
        assert_eq!(shown("a b"), "\"a b\"");
        let cut = shown(&"é".repeat(100));
        assert!(cut.ends_with("... (200 bytes)"), "{cut}");
    }
}
