//! Offline import for air-gapped nodes: OCI image layout directories, OCI archives (a layout
//! in a tar) and `docker save` archives (`manifest.json` with `Config`, `RepoTags`, `Layers`),
//! as directories or tarballs (plain, gzip or zstd).
//!
//! A tarball is extracted into the store's temporary directory first, refusing absolute
//! paths, `..` components, devices and links that leave the archive; links inside it become
//! hard links, so nothing read later can follow a path out of the extracted tree.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::blobs::unique;
use crate::digest::{self, Hasher};
use crate::manifest::{self, ConfigFile, Descriptor};
use crate::record::ImageRecord;
use crate::reference::ImageName;
use crate::store::{Origin, read_document};
use crate::unpack::{self, Compression};
use crate::{ImageError, ImageStore};

/// The file a `docker save` archive lists its images in.
pub const DOCKER_MANIFEST_FILE: &str = "manifest.json";
/// Where the store remembers what it imported from `import_dir` (under its root).
pub const IMPORTS_FILE: &str = "image-imports.json";

/// Most symlinks followed to resolve one link of an archive.
const MAX_LINK_DEPTH: usize = 16;

/// One image of a `docker save` `manifest.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    /// The config file, relative to the archive root.
    config: String,
    /// `name:tag` names.
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    /// The layer tars, bottom first, relative to the archive root.
    layers: Vec<String>,
}

/// What an `import_dir` file was when it was imported, and the images it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Imported {
    size: u64,
    mtime_ns: i128,
    ids: Vec<String>,
}

impl ImageStore {
    /// Imports the images of `path`: an OCI image layout directory, a directory holding an
    /// unpacked `docker save` archive, or a tarball of either (plain, gzip or zstd). Tags
    /// come from `RepoTags` (docker) or the index annotations (OCI). Every blob is verified;
    /// importing the same archive again changes nothing.
    pub async fn import_path(
        self: &Arc<Self>,
        path: &Path,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let meta = std::fs::metadata(path)
            .map_err(ImageError::io(format!("reading {}", path.display())))?;
        if meta.is_dir() {
            return self.import_tree(path, &path.display().to_string()).await;
        }
        let tmp = self.tmp_dir().join(format!("import-{}", unique()));
        let archive = path.to_owned();
        let dest = tmp.clone();
        let extracted = tokio::task::spawn_blocking(move || extract_archive(&archive, &dest))
            .await
            .map_err(|e| ImageError::Io {
                context: "import task".into(),
                source: std::io::Error::other(e.to_string()),
            })
            .and_then(|r| r);
        let result = match extracted {
            Ok(()) => self.import_tree(&tmp, &path.display().to_string()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = unpack::remove_tree(&tmp) {
            tracing::warn!(path = %tmp.display(), error = %e, "cannot remove an extracted archive");
        }
        result
    }

    /// Imports every entry of `dir` (files and directories, in name order) that changed since
    /// it was last imported or whose images are gone. Returns each entry with its outcome;
    /// a failure of one entry does not stop the others.
    pub async fn import_directory(
        self: &Arc<Self>,
        dir: &Path,
    ) -> Result<Vec<(PathBuf, Result<Vec<ImageRecord>, ImageError>)>, ImageError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(ImageError::io(format!("listing {}", dir.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        paths.sort();
        let record_path = self.root().join(IMPORTS_FILE);
        let mut done: BTreeMap<String, Imported> = std::fs::read(&record_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let this = self.clone();
        let present: std::collections::HashSet<String> =
            tokio::task::spawn_blocking(move || this.list())
                .await
                .map_err(|e| ImageError::Io {
                    context: "image store task".into(),
                    source: std::io::Error::other(e.to_string()),
                })??
                .into_iter()
                .map(|r| r.id)
                .collect();
        let mut out = Vec::new();
        for path in paths {
            let key = path.display().to_string();
            let stamp = stamp_of(&path);
            if let (Some((size, mtime_ns)), Some(before)) = (stamp, done.get(&key))
                && before.size == size
                && before.mtime_ns == mtime_ns
                && !before.ids.is_empty()
                && before.ids.iter().all(|id| present.contains(id))
            {
                tracing::debug!(path = %key, "already imported");
                continue;
            }
            let result = self.import_path(&path).await;
            match (&result, stamp) {
                (Ok(records), Some((size, mtime_ns))) => {
                    done.insert(
                        key,
                        Imported {
                            size,
                            mtime_ns,
                            ids: records.iter().map(|r| r.id.clone()).collect(),
                        },
                    );
                }
                _ => {
                    done.remove(&key);
                }
            }
            out.push((path, result));
        }
        let json = serde_json::to_vec_pretty(&done).unwrap_or_default();
        let tmp = self.tmp_dir().join(format!("imports-{}", unique()));
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &record_path))
            .map_err(ImageError::io(format!("writing {}", record_path.display())))?;
        Ok(out)
    }

    /// Imports an extracted archive or a directory given as is.
    async fn import_tree(
        self: &Arc<Self>,
        dir: &Path,
        display: &str,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        if dir.join(DOCKER_MANIFEST_FILE).is_file() {
            let result = self.import_docker_save(dir, display).await;
            if result.is_err() {
                self.sweep_after_failure().await;
            }
            result
        } else if dir.join(crate::layout::OCI_LAYOUT_FILE).is_file() {
            self.import_oci_layout(dir, None).await
        } else {
            Err(ImageError::BadImage {
                reference: display.to_owned(),
                reason: format!(
                    "neither an OCI image layout (no {}) nor a docker save archive (no {DOCKER_MANIFEST_FILE})",
                    crate::layout::OCI_LAYOUT_FILE
                ),
            })
        }
    }

    /// Imports the images a `docker save` archive's `manifest.json` lists.
    async fn import_docker_save(
        &self,
        dir: &Path,
        display: &str,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let bad = |reason: String| ImageError::BadImage {
            reference: display.to_owned(),
            reason,
        };
        let listing = read_document(&dir.join(DOCKER_MANIFEST_FILE), display).await?;
        let entries: Vec<DockerSaveEntry> = serde_json::from_slice(&listing)
            .map_err(|e| bad(format!("{DOCKER_MANIFEST_FILE} does not parse: {e}")))?;
        if entries.is_empty() {
            return Err(bad(format!("{DOCKER_MANIFEST_FILE} lists no image")));
        }
        let mut out = Vec::new();
        for entry in entries {
            let config_path = inside(dir, &entry.config).map_err(|e| bad(e.to_string()))?;
            let config_bytes = read_document(&config_path, display).await?;
            let config_digest = digest::sha256_of(&config_bytes);
            serde_json::from_slice::<ConfigFile>(&config_bytes)
                .map_err(|e| bad(format!("image config {} does not parse: {e}", entry.config)))?;
            let mut files = HashMap::new();
            files.insert(config_digest.clone(), config_path);
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let path = inside(dir, layer).map_err(|e| bad(e.to_string()))?;
                let hashed = path.clone();
                let (digest, size, compression) =
                    tokio::task::spawn_blocking(move || hash_file(&hashed))
                        .await
                        .map_err(|e| ImageError::Io {
                            context: "import task".into(),
                            source: std::io::Error::other(e.to_string()),
                        })?
                        .map_err(ImageError::io(format!("reading {}", path.display())))?;
                layers.push(Descriptor {
                    media_type: match compression {
                        Compression::None => "application/vnd.oci.image.layer.v1.tar",
                        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                    }
                    .to_owned(),
                    digest,
                    size: i64::try_from(size).unwrap_or(i64::MAX),
                    platform: None,
                    urls: None,
                });
                files.insert(layers[layers.len() - 1].digest.clone(), path);
            }
            let config = Descriptor {
                media_type: manifest::OCI_CONFIG.to_owned(),
                digest: config_digest,
                size: i64::try_from(config_bytes.len()).unwrap_or(i64::MAX),
                platform: None,
                urls: None,
            };
            // The archive has no registry manifest: crius writes the OCI manifest it implies.
            let manifest_body = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": manifest::OCI_MANIFEST,
                "config": config,
                "layers": layers,
            }))
            .map_err(|e| bad(format!("cannot write the manifest: {e}")))?;
            let manifest_digest = digest::sha256_of(&manifest_body);
            let mut tags = Vec::new();
            for tag in entry.repo_tags.iter().flatten() {
                match ImageName::parse(tag) {
                    Ok(name) => tags.extend(name.repo_tag()),
                    Err(e) => {
                        return Err(bad(format!(
                            "RepoTags entry {tag:?} is not an image name: {e}"
                        )));
                    }
                }
            }
            let record = self
                .store_image(
                    Origin::Files(&files),
                    display.to_owned(),
                    &manifest_body,
                    &manifest_digest,
                    config,
                    layers,
                    tags,
                    Vec::new(),
                )
                .await?;
            let source = display;
            tracing::info!(id = %record.id, tags = ?record.repo_tags, from = source, "image imported");
            out.push(record);
        }
        Ok(out)
    }
}

/// Size and modification time of `path`, to see whether it changed.
fn stamp_of(path: &Path) -> Option<(u64, i128)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.len(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    ))
}

/// Why a path a `docker save` archive lists is not used.
#[derive(Debug, thiserror::Error)]
enum ArchivePathError {
    /// The path is absolute, has a `..` component or a NUL byte, or is empty.
    #[error("refused path {path:?} in the archive: {reason}")]
    Refused { path: String, reason: &'static str },
    /// A component is not UTF-8.
    #[error("path {path:?} is not UTF-8")]
    NotUtf8 { path: String },
    /// The archive's directory could not be resolved.
    #[error("{}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The path could not be resolved.
    #[error("{path:?} in the archive: {source}")]
    Resolve {
        path: String,
        source: std::io::Error,
    },
    /// The path resolves (through a symlink) outside the archive.
    #[error("refused path {path:?} in the archive: it resolves outside the archive")]
    Outside { path: String },
    /// The path is not a regular file.
    #[error("{path:?} in the archive is not a regular file")]
    NotFile { path: String },
}

/// `relative` beneath `dir`, refusing paths that leave it (also through a symlink).
fn inside(dir: &Path, relative: &str) -> Result<PathBuf, ArchivePathError> {
    let refused = |reason| ArchivePathError::Refused {
        path: relative.to_owned(),
        reason,
    };
    let comps = unpack::clean_path(relative.as_bytes()).map_err(refused)?;
    if comps.is_empty() {
        return Err(refused("empty"));
    }
    let mut path = dir.to_owned();
    for c in comps {
        path.push(std::ffi::OsStr::new(std::str::from_utf8(c).map_err(
            |_| ArchivePathError::NotUtf8 {
                path: relative.to_owned(),
            },
        )?));
    }
    let base = dir.canonicalize().map_err(|source| ArchivePathError::Dir {
        dir: dir.to_owned(),
        source,
    })?;
    let real = path
        .canonicalize()
        .map_err(|source| ArchivePathError::Resolve {
            path: relative.to_owned(),
            source,
        })?;
    if !real.starts_with(&base) {
        return Err(ArchivePathError::Outside {
            path: relative.to_owned(),
        });
    }
    if !real.is_file() {
        return Err(ArchivePathError::NotFile {
            path: relative.to_owned(),
        });
    }
    Ok(real)
}

/// Digest, size and compression of a file.
fn hash_file(path: &Path) -> std::io::Result<(String, u64, Compression)> {
    let mut reader = BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let compression = Compression::sniff(reader.fill_buf()?);
    let mut hasher = Hasher::new();
    let mut size = 0u64;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        hasher.update(buf);
        let n = buf.len();
        size += n as u64;
        reader.consume(n);
    }
    Ok((hasher.finish(), size, compression))
}

/// Why an archive entry was refused.
fn refused(path: &[u8], reason: &str) -> ImageError {
    ImageError::BadImage {
        reference: "archive".into(),
        reason: format!(
            "refused archive entry {:?}: {reason}",
            String::from_utf8_lossy(path)
        ),
    }
}

/// Extracts the tarball `archive` (plain, gzip or zstd) into the new directory `dest`:
/// directories and regular files only, links inside the archive as hard links.
fn extract_archive(archive: &Path, dest: &Path) -> Result<(), ImageError> {
    let io = |what: String| ImageError::io(what);
    let file =
        std::fs::File::open(archive).map_err(io(format!("opening {}", archive.display())))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader
        .fill_buf()
        .map_err(io(format!("reading {}", archive.display())))?;
    let decoded: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(
            zstd::Decoder::with_buffer(reader)
                .map_err(io(format!("reading {}", archive.display())))?,
        ),
    };
    std::fs::create_dir_all(dest).map_err(io(format!("creating {}", dest.display())))?;
    let not_tar = |e: std::io::Error| ImageError::BadImage {
        reference: archive.display().to_string(),
        reason: format!("not a readable tar archive: {e}"),
    };
    // Links are made once every file exists: (link path, target path), archive-relative.
    let mut links: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let mut symlinks: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    let mut tar = tar::Archive::new(decoded);
    for entry in tar.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let raw = entry.path_bytes().into_owned();
        let comps = components(&raw).map_err(|reason| refused(&raw, reason))?;
        if comps.is_empty() {
            continue;
        }
        let path = comps.iter().fold(dest.to_owned(), |p, c| p.join(c));
        let kind = entry.header().entry_type();
        let parent = path.parent().unwrap_or(dest);
        match kind {
            tar::EntryType::Directory => std::fs::create_dir_all(&path)
                .map_err(io(format!("creating {}", path.display())))?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("creating {}", parent.display())))?;
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io(format!("creating {}", path.display())))?;
                std::io::copy(&mut entry, &mut out)
                    .map_err(io(format!("writing {}", path.display())))?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                if target.first() == Some(&b'/') {
                    return Err(refused(
                        &raw,
                        "a symlink to an absolute path leaves the archive",
                    ));
                }
                let mut resolved: Vec<String> = comps[..comps.len() - 1].to_vec();
                for part in target.split(|b| *b == b'/') {
                    match part {
                        b"" | b"." => {}
                        b".." => {
                            if resolved.pop().is_none() {
                                return Err(refused(&raw, "a symlink leaves the archive"));
                            }
                        }
                        p => resolved.push(
                            std::str::from_utf8(p)
                                .map_err(|_| refused(&raw, "a link target is not UTF-8"))?
                                .to_owned(),
                        ),
                    }
                }
                symlinks.insert(comps.clone(), resolved.clone());
                links.push((comps.clone(), resolved));
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target = components(&target).map_err(|reason| refused(&raw, reason))?;
                links.push((comps.clone(), target));
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(refused(
                    &raw,
                    &format!("{other:?} entries have no place in an image archive"),
                ));
            }
        }
    }
    for (link, target) in links {
        let mut target = target;
        let mut depth = 0;
        while let Some(next) = symlinks.get(&target) {
            depth += 1;
            if depth > MAX_LINK_DEPTH {
                return Err(refused(
                    link.join("/").as_bytes(),
                    "too many levels of links",
                ));
            }
            target = next.clone();
        }
        let from = target.iter().fold(dest.to_owned(), |p, c| p.join(c));
        let to = link.iter().fold(dest.to_owned(), |p, c| p.join(c));
        let meta = std::fs::symlink_metadata(&from).map_err(|_| {
            refused(
                link.join("/").as_bytes(),
                "its target is not a file of the archive",
            )
        })?;
        if meta.is_dir() {
            // A link to a directory is not needed by either archive format.
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::hard_link(&from, &to).map_err(io(format!("linking {}", to.display())))?;
    }
    Ok(())
}

/// An archive path as UTF-8 components, refusing absolute paths and `..`.
fn components(raw: &[u8]) -> Result<Vec<String>, &'static str> {
    unpack::clean_path(raw)?
        .into_iter()
        .map(|c| {
            std::str::from_utf8(c)
                .map(str::to_owned)
                .map_err(|_| "path is not UTF-8")
        })
        .collect()
}
