//! OCI test images built offline from files, and pushed to a registry over plain HTTP.
//!
//! An [`Image`] is a list of [`Layer`]s, each built from [`Entry`]s into a tar with a fixed
//! mtime (so digests are reproducible) and compressed as asked ([`Compression`]), plus an OCI
//! image config. [`Image::push`] uploads the config and layer blobs and then the OCI manifest,
//! byte for byte as built, with [`RegistryClient`]; [`push_index`] adds a multi-platform OCI
//! image index. The presets ([`busybox`], [`busybox_with_image_user`],
//! [`multilayer_whiteouts`], [`large`]) are made from Debian's `busybox-static`
//! (`/bin/busybox`), which must be installed.
//!
//! The push uses a small reqwest client rather than the `oci-client` crate: `oci-client` 0.18
//! does not build without one of its TLS features (rustls with a crypto provider, or
//! native-tls), and a plain-HTTP push of prebuilt bytes is only three requests per blob.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registry::{RegistryClient, block_on};

/// The mtime of every tar entry.
pub const MTIME: u64 = 1_700_000_000;
/// The `created` time of every image config (the same instant as [`MTIME`]).
pub const CREATED: &str = "2023-11-14T22:13:20Z";
/// OCI image manifest media type.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer media type.
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip OCI layer media type.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Zstd OCI layer media type.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// The host's static busybox (Debian `busybox-static`), source of the preset images.
pub const BUSYBOX: &str = "/bin/busybox";
/// The PATH of every preset image.
pub const DEFAULT_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// The whiteout file name prefix (`.wh.NAME` hides `NAME` of lower layers).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker: hides everything of lower layers in its directory.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash.iter() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (flate2, default level).
    Gzip,
    /// zstd (level 3).
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_LAYER,
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
        }
    }

    /// Compresses `tar`.
    pub fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::None => tar.to_vec(),
            Compression::Gzip => {
                // GzEncoder writes mtime 0 and no file name: reproducible.
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(tar.len() / 2),
                    flate2::Compression::default(),
                );
                enc.write_all(tar)?;
                enc.finish()?
            }
            Compression::Zstd => zstd::encode_all(tar, 3)?,
        })
    }

    /// Decompresses a blob of this compression back to the tar.
    pub fn decompress(self, blob: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::None => blob.to_vec(),
            Compression::Gzip => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(blob), &mut out)?;
                out
            }
            Compression::Zstd => zstd::decode_all(blob)?,
        })
    }
}

/// What a tar entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink to this target (written verbatim).
    Symlink(Vec<u8>),
    /// A hardlink to this earlier archive name (written verbatim).
    Hardlink(Vec<u8>),
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One tar entry of a layer. The constructors take image paths (`/etc/passwd` or
/// `etc/passwd`), drop leading slashes and give directories a trailing `/`, as image tars
/// have them; [`Entry::raw`] and [`Entry::with_raw_name`] write any bytes as the name instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name bytes written into the tar header (GNU long-name records when over 100
    /// bytes), exactly.
    pub name: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
}

/// `path` as an archive name: no leading `/`, a trailing `/` for directories.
fn archive_name(path: &str, dir: bool) -> Vec<u8> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    let mut name = trimmed.as_bytes().to_vec();
    if dir {
        name.push(b'/');
    }
    name
}

/// Splits `path` into its parent (with a trailing `/`, or empty) and base name.
fn split_parent(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, base)) => (format!("{parent}/"), base.to_owned()),
        None => (String::new(), trimmed.to_owned()),
    }
}

impl Entry {
    fn new(name: Vec<u8>, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            name,
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A regular file owned by 0:0.
    pub fn file(path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry::new(
            archive_name(path, false),
            EntryKind::File(data.into()),
            mode,
        )
    }

    /// A directory owned by 0:0.
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::new(archive_name(path, true), EntryKind::Dir, mode)
    }

    /// A symlink `path -> target` (target verbatim, may be absolute or relative).
    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::new(
            archive_name(path, false),
            EntryKind::Symlink(target.as_bytes().to_vec()),
            0o777,
        )
    }

    /// A hardlink `path` to the earlier entry `target` (an image path, as for `path`).
    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::new(
            archive_name(path, false),
            EntryKind::Hardlink(archive_name(target, false)),
            0o644,
        )
    }

    /// A character device node.
    pub fn char_device(path: &str, major: u32, minor: u32, mode: u32) -> Entry {
        Entry::new(
            archive_name(path, false),
            EntryKind::CharDevice { major, minor },
            mode,
        )
    }

    /// A block device node.
    pub fn block_device(path: &str, major: u32, minor: u32, mode: u32) -> Entry {
        Entry::new(
            archive_name(path, false),
            EntryKind::BlockDevice { major, minor },
            mode,
        )
    }

    /// A named pipe.
    pub fn fifo(path: &str, mode: u32) -> Entry {
        Entry::new(archive_name(path, false), EntryKind::Fifo, mode)
    }

    /// A whiteout deleting `path` of the lower layers: the empty file `DIR/.wh.NAME`.
    pub fn whiteout(path: &str) -> Entry {
        let (parent, base) = split_parent(path);
        Entry::new(
            format!("{parent}{WHITEOUT_PREFIX}{base}").into_bytes(),
            EntryKind::File(Vec::new()),
            0o644,
        )
    }

    /// The opaque marker `DIR/.wh..wh..opq`: `dir` shows only this and upper layers' entries.
    pub fn opaque(dir: &str) -> Entry {
        let mut name = archive_name(dir, true);
        if name == b"/" {
            name.clear();
        }
        name.extend_from_slice(OPAQUE_MARKER.as_bytes());
        Entry::new(name, EntryKind::File(Vec::new()), 0o644)
    }

    /// An entry of `kind` whose header name is `name` byte for byte, unsanitised (`../../x`,
    /// `/etc/x`, anything): for hostile-layer tests.
    pub fn raw(name: impl Into<Vec<u8>>, kind: EntryKind, mode: u32) -> Entry {
        Entry::new(name.into(), kind, mode)
    }

    /// A regular file whose header name is `name` byte for byte (see [`Entry::raw`]).
    pub fn raw_file(name: impl Into<Vec<u8>>, data: impl Into<Vec<u8>>) -> Entry {
        Entry::raw(name, EntryKind::File(data.into()), 0o644)
    }

    /// The same entry owned by `uid:gid`.
    pub fn owned(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// The same entry with permission bits `mode`.
    pub fn with_mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    /// The same entry with its header name replaced by `name`, byte for byte.
    pub fn with_raw_name(mut self, name: impl Into<Vec<u8>>) -> Entry {
        self.name = name.into();
        self
    }
}

/// Size of a tar header's name and linkname fields.
const NAME_FIELD: usize = 100;

/// Appends a GNU long-name (`L`) or long-link (`K`) record carrying `bytes`.
fn append_gnu_long(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    bytes: &[u8],
) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    let magic = b"././@LongLink";
    header.as_old_mut().name[..magic.len()].copy_from_slice(magic);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(kind);
    let mut data = bytes.to_vec();
    data.push(0);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data.as_slice())?;
    Ok(())
}

/// Appends `entry` with its name and link name written verbatim.
fn append_entry(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    let empty: &[u8] = &[];
    let (kind, data, link): (tar::EntryType, &[u8], &[u8]) = match &entry.kind {
        EntryKind::File(data) => (tar::EntryType::Regular, data, empty),
        EntryKind::Dir => (tar::EntryType::Directory, empty, empty),
        EntryKind::Symlink(target) => (tar::EntryType::Symlink, empty, target),
        EntryKind::Hardlink(target) => (tar::EntryType::Link, empty, target),
        EntryKind::CharDevice { .. } => (tar::EntryType::Char, empty, empty),
        EntryKind::BlockDevice { .. } => (tar::EntryType::Block, empty, empty),
        EntryKind::Fifo => (tar::EntryType::Fifo, empty, empty),
    };
    if entry.name.is_empty() {
        bail!("tar entry with an empty name");
    }
    if entry.name.len() > NAME_FIELD {
        append_gnu_long(builder, tar::EntryType::GNULongName, &entry.name)?;
    }
    if link.len() > NAME_FIELD {
        append_gnu_long(builder, tar::EntryType::GNULongLink, link)?;
    }
    let old = header.as_old_mut();
    let n = entry.name.len().min(NAME_FIELD);
    old.name[..n].copy_from_slice(&entry.name[..n]);
    let n = link.len().min(NAME_FIELD);
    old.linkname[..n].copy_from_slice(&link[..n]);
    header.set_entry_type(kind);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(MTIME);
    header.set_size(data.len() as u64);
    if let EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } =
        entry.kind
    {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    header.set_cksum();
    builder.append(&header, data)?;
    Ok(())
}

/// Writes `entries`, in order, as an uncompressed tar.
pub fn tar_of(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        append_entry(&mut builder, entry).with_context(|| {
            format!(
                "writing tar entry {:?}",
                String::from_utf8_lossy(&entry.name)
            )
        })?;
    }
    Ok(builder.into_inner()?)
}

/// A built layer: its uncompressed tar, its compressed blob and their digests.
#[derive(Clone, Debug)]
pub struct Layer {
    compression: Compression,
    tar: Vec<u8>,
    blob: Vec<u8>,
    diff_id: String,
    digest: String,
}

impl Layer {
    /// Builds a layer from `entries` (written in order) compressed with `compression`.
    pub fn new(entries: &[Entry], compression: Compression) -> Result<Layer> {
        Layer::from_tar(tar_of(entries)?, compression)
    }

    /// A layer from a tar made elsewhere (even a broken one), compressed with `compression`.
    pub fn from_tar(tar: Vec<u8>, compression: Compression) -> Result<Layer> {
        let blob = compression.compress(&tar)?;
        Ok(Layer {
            compression,
            diff_id: sha256_digest(&tar),
            digest: sha256_digest(&blob),
            tar,
            blob,
        })
    }

    /// The compression of the blob.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The OCI media type of the blob.
    pub fn media_type(&self) -> &'static str {
        self.compression.media_type()
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> &[u8] {
        &self.tar
    }

    /// The blob as pushed (compressed tar).
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// `sha256:` of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub fn diff_id(&self) -> &str {
        &self.diff_id
    }

    /// `sha256:` of the blob (the manifest's layer digest).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.blob.len() as u64
    }
}

/// One `history` entry of an image config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The `created_by` text.
    pub created_by: String,
    /// Whether the step made no layer.
    pub empty_layer: bool,
}

/// What [`Image::push`] pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    /// `host/repo:tag`, ready for a CRI PullImage.
    pub reference: String,
    /// `sha256:` of the manifest.
    pub manifest_digest: String,
    /// `sha256:` of the config blob (the image id).
    pub config_digest: String,
}

/// What [`push_index`] pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushedIndex {
    /// `host/repo:tag` of the index.
    pub reference: String,
    /// `sha256:` of the index.
    pub index_digest: String,
    /// Each platform's image as pushed (by digest; `reference` is `host/repo@sha256:...`), in
    /// the order given.
    pub manifests: Vec<Pushed>,
}

/// An OCI image: layers (lowest first) and the config fields tests care about. Fields are
/// public; edit them freely before building or pushing.
#[derive(Clone, Debug)]
pub struct Image {
    /// The layers, lowest first.
    pub layers: Vec<Layer>,
    /// `architecture` of the config (`amd64`).
    pub architecture: String,
    /// `variant` of the config, if any.
    pub variant: Option<String>,
    /// `os` of the config (`linux`).
    pub os: String,
    /// `config.Env`.
    pub env: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `config.Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `config.User`.
    pub user: Option<String>,
    /// `config.WorkingDir`.
    pub working_dir: Option<String>,
    /// `config.StopSignal`.
    pub stop_signal: Option<String>,
    /// `config.Labels` (omitted when empty).
    pub labels: BTreeMap<String, String>,
    /// `history` (omitted when empty).
    pub history: Vec<HistoryEntry>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Splits `repo[:tag]` into repository and tag (`latest` when absent).
fn split_repo_tag(repo_and_tag: &str) -> Result<(&str, &str)> {
    let last_slash = repo_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match repo_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &repo_and_tag[..last_slash + i],
            &repo_and_tag[last_slash + i + 1..],
        ),
        None => (repo_and_tag, "latest"),
    };
    if repo.is_empty() || tag.is_empty() || repo.contains('@') {
        bail!("bad repository:tag {repo_and_tag:?}");
    }
    Ok((repo, tag))
}

impl Image {
    /// An image of `layers` for linux/amd64 with `Env` `PATH=`[`DEFAULT_PATH`] and nothing else
    /// set.
    pub fn new(layers: Vec<Layer>) -> Image {
        Image {
            layers,
            architecture: "amd64".into(),
            variant: None,
            os: "linux".into(),
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cmd: None,
            entrypoint: None,
            user: None,
            working_dir: None,
            stop_signal: None,
            labels: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    /// The same image with one more layer on top.
    pub fn with_layer(mut self, layer: Layer) -> Image {
        self.layers.push(layer);
        self
    }

    /// The same image with `config.Cmd`.
    pub fn with_cmd(mut self, cmd: &[&str]) -> Image {
        self.cmd = Some(strings(cmd));
        self
    }

    /// The same image with `config.Entrypoint`.
    pub fn with_entrypoint(mut self, entrypoint: &[&str]) -> Image {
        self.entrypoint = Some(strings(entrypoint));
        self
    }

    /// The same image with `config.User` (`uid`, `uid:gid`, `name`, ...).
    pub fn with_user(mut self, user: &str) -> Image {
        self.user = Some(user.into());
        self
    }

    /// The same image with `config.WorkingDir`.
    pub fn with_working_dir(mut self, dir: &str) -> Image {
        self.working_dir = Some(dir.into());
        self
    }

    /// The same image with `config.StopSignal`.
    pub fn with_stop_signal(mut self, signal: &str) -> Image {
        self.stop_signal = Some(signal.into());
        self
    }

    /// The same image with one more `config.Env` entry (`NAME=value`).
    pub fn with_env(mut self, var: &str) -> Image {
        self.env.push(var.into());
        self
    }

    /// The same image with a label.
    pub fn with_label(mut self, key: &str, value: &str) -> Image {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The config's `created_by` history, one non-empty entry per layer.
    pub fn with_history(mut self) -> Image {
        self.history = (0..self.layers.len())
            .map(|i| HistoryEntry {
                created_by: format!("crius-tests layer {i}"),
                empty_layer: false,
            })
            .collect();
        self
    }

    /// The OCI image config JSON, exactly as pushed.
    pub fn config_json(&self) -> Vec<u8> {
        let mut config = serde_json::Map::new();
        config.insert("Env".into(), json!(self.env));
        if let Some(cmd) = &self.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if let Some(entrypoint) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(entrypoint));
        }
        if let Some(user) = &self.user {
            config.insert("User".into(), json!(user));
        }
        if let Some(dir) = &self.working_dir {
            config.insert("WorkingDir".into(), json!(dir));
        }
        if let Some(signal) = &self.stop_signal {
            config.insert("StopSignal".into(), json!(signal));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        let mut doc = json!({
            "created": CREATED,
            "architecture": self.architecture,
            "os": self.os,
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(Layer::diff_id).collect::<Vec<_>>(),
            },
        });
        if let Some(variant) = &self.variant {
            doc["variant"] = json!(variant);
        }
        if !self.history.is_empty() {
            doc["history"] = Value::Array(
                self.history
                    .iter()
                    .map(|h| {
                        let mut e = json!({"created": CREATED, "created_by": h.created_by});
                        if h.empty_layer {
                            e["empty_layer"] = json!(true);
                        }
                        e
                    })
                    .collect(),
            );
        }
        doc.to_string().into_bytes()
    }

    /// `sha256:` of [`Image::config_json`] (the image id).
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config_json())
    }

    /// The OCI image manifest JSON, exactly as pushed.
    pub fn manifest_json(&self) -> Vec<u8> {
        let config = self.config_json();
        json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_CONFIG,
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": l.media_type(),
                "digest": l.digest(),
                "size": l.size(),
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    /// `sha256:` of [`Image::manifest_json`].
    pub fn manifest_digest(&self) -> String {
        sha256_digest(&self.manifest_json())
    }

    /// Pushes the image to the open registry at `registry_host` (`127.0.0.1:PORT`) as
    /// `repo[:tag]` (tag `latest` when absent). Async: use it from a tokio runtime, or
    /// [`Image::push_blocking`] from plain code.
    pub async fn push(&self, registry_host: &str, repo_and_tag: &str) -> Result<Pushed> {
        self.push_to(&RegistryClient::new(registry_host)?, repo_and_tag)
            .await
    }

    /// [`Image::push`] for synchronous callers (runs on its own runtime in a new thread, so
    /// it also works inside another runtime).
    pub fn push_blocking(&self, registry_host: &str, repo_and_tag: &str) -> Result<Pushed> {
        block_on(self.push(registry_host, repo_and_tag))
    }

    /// Pushes the image with `client` (e.g. [`crate::registry::Registry::client`], which
    /// carries credentials): config and layer blobs, then the manifest by tag.
    pub async fn push_to(&self, client: &RegistryClient, repo_and_tag: &str) -> Result<Pushed> {
        let (repo, tag) = split_repo_tag(repo_and_tag)?;
        let manifest_digest = self.push_blobs_and_manifest(client, repo, tag).await?;
        Ok(Pushed {
            reference: format!("{}/{repo}:{tag}", client.host()),
            manifest_digest,
            config_digest: self.config_digest(),
        })
    }

    /// Pushes the blobs, then the manifest under `reference` (a tag or the manifest's digest);
    /// returns the manifest digest after checking the registry computed the same.
    async fn push_blobs_and_manifest(
        &self,
        client: &RegistryClient,
        repo: &str,
        reference: &str,
    ) -> Result<String> {
        let config = self.config_json();
        client
            .push_blob(repo, &sha256_digest(&config), &config)
            .await
            .context("pushing the config")?;
        for layer in &self.layers {
            client
                .push_blob(repo, layer.digest(), layer.blob())
                .await
                .with_context(|| format!("pushing layer {}", layer.digest()))?;
        }
        let manifest = self.manifest_json();
        let digest = sha256_digest(&manifest);
        let served = client
            .put_manifest(repo, reference, MEDIA_TYPE_MANIFEST, &manifest)
            .await
            .context("pushing the manifest")?;
        if served != digest {
            bail!("registry computed manifest digest {served}, expected {digest}");
        }
        Ok(digest)
    }
}

/// Offline archive forms of an image, as air-gapped nodes receive them.
impl Image {
    /// The files of a classic `docker save` archive of this image named `repo_tags`:
    /// `manifest.json`, `<config hex>.json` and `<n>/layer.tar` (uncompressed), in order.
    pub fn docker_save_files(&self, repo_tags: &[&str]) -> Vec<(String, Vec<u8>)> {
        let config = self.config_json();
        let config_name = format!(
            "{}.json",
            sha256_digest(&config).trim_start_matches("sha256:")
        );
        let layer_names: Vec<String> = (0..self.layers.len())
            .map(|i| format!("layer{i}/layer.tar"))
            .collect();
        let manifest = json!([{
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }]);
        let mut files = vec![
            (
                "manifest.json".to_owned(),
                manifest.to_string().into_bytes(),
            ),
            (config_name, config),
        ];
        for (name, layer) in layer_names.into_iter().zip(&self.layers) {
            files.push((name, layer.tar().to_vec()));
        }
        files
    }

    /// The files of an OCI image layout of this image named `name` (a full reference, put in
    /// the `io.containerd.image.name` annotation; its tag goes in
    /// `org.opencontainers.image.ref.name`): `oci-layout`, `index.json` and the blobs.
    pub fn oci_layout_files(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let blob = |data: &[u8]| {
            (
                format!(
                    "blobs/sha256/{}",
                    sha256_digest(data).trim_start_matches("sha256:")
                ),
                data.to_vec(),
            )
        };
        let manifest = self.manifest_json();
        let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [{
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": sha256_digest(&manifest),
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        });
        let mut files = vec![
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_owned(), index.to_string().into_bytes()),
            blob(&manifest),
            blob(&self.config_json()),
        ];
        files.extend(self.layers.iter().map(|l| blob(l.blob())));
        files
    }
}

/// Writes `files` (relative path, content) under `dir`, creating directories.
pub fn write_files(dir: &std::path::Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    for (name, data) in files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// An uncompressed tarball of `files` (relative path, content), in order.
pub fn tarball_of(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let entries: Vec<Entry> = files
        .iter()
        .map(|(name, data)| Entry::file(name, data.clone(), 0o644))
        .collect();
    tar_of(&entries)
}

/// The OCI image index JSON listing `manifests` as `(os, architecture, variant, image)`.
fn index_json(manifests: &[(String, String, Option<String>, Vec<u8>)]) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": manifests.iter().map(|(os, arch, variant, manifest)| {
            let mut platform = json!({"architecture": arch, "os": os});
            if let Some(variant) = variant {
                platform["variant"] = json!(variant);
            }
            json!({
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": sha256_digest(manifest),
                "size": manifest.len(),
                "platform": platform,
            })
        }).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

/// Pushes a multi-platform image to the open registry at `registry_host` as `repo[:tag]`:
/// each `(os, arch, image)` by digest (its config's `os` / `architecture` set to the platform;
/// `arch` may carry a variant, `arm64/v8`), then an OCI image index of them under the tag.
/// Async, like [`Image::push`].
pub async fn push_index(
    registry_host: &str,
    repo_and_tag: &str,
    platforms: &[(&str, &str, &Image)],
) -> Result<PushedIndex> {
    push_index_to(
        &RegistryClient::new(registry_host)?,
        repo_and_tag,
        platforms,
    )
    .await
}

/// [`push_index`] for synchronous callers.
pub fn push_index_blocking(
    registry_host: &str,
    repo_and_tag: &str,
    platforms: &[(&str, &str, &Image)],
) -> Result<PushedIndex> {
    block_on(push_index(registry_host, repo_and_tag, platforms))
}

/// [`push_index`] with `client` (which may carry credentials).
pub async fn push_index_to(
    client: &RegistryClient,
    repo_and_tag: &str,
    platforms: &[(&str, &str, &Image)],
) -> Result<PushedIndex> {
    let (repo, tag) = split_repo_tag(repo_and_tag)?;
    let mut entries = Vec::new();
    let mut pushed = Vec::new();
    for (os, arch, image) in platforms {
        let (arch, variant) = match arch.split_once('/') {
            Some((a, v)) => (a, Some(v.to_owned())),
            None => (*arch, None),
        };
        let mut image = (*image).clone();
        image.os = (*os).to_owned();
        image.architecture = arch.to_owned();
        image.variant = variant.clone();
        let digest = image.manifest_digest();
        image
            .push_blobs_and_manifest(client, repo, &digest)
            .await
            .with_context(|| format!("pushing the {os}/{arch} image"))?;
        pushed.push(Pushed {
            reference: format!("{}/{repo}@{digest}", client.host()),
            manifest_digest: digest,
            config_digest: image.config_digest(),
        });
        entries.push((
            (*os).to_owned(),
            arch.to_owned(),
            variant,
            image.manifest_json(),
        ));
    }
    let index = index_json(&entries);
    let index_digest = sha256_digest(&index);
    let served = client
        .put_manifest(repo, tag, MEDIA_TYPE_INDEX, &index)
        .await
        .context("pushing the index")?;
    if served != index_digest {
        bail!("registry computed index digest {served}, expected {index_digest}");
    }
    Ok(PushedIndex {
        reference: format!("{}/{repo}:{tag}", client.host()),
        index_digest,
        manifests: pushed,
    })
}

/// The applets of the host's busybox (`busybox --list`), without `busybox` itself.
pub fn busybox_applets() -> Result<Vec<String>> {
    let out = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list (apt-get install busybox-static)"))?;
    if !out.status.success() {
        bail!("{BUSYBOX} --list: {}", out.status);
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_owned)
        .collect();
    if !applets.iter().any(|a| a == "sh") {
        applets.push("sh".into());
    }
    applets.sort();
    applets.dedup();
    Ok(applets)
}

/// `/etc/passwd` of the busybox presets.
pub const BUSYBOX_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
/// `/etc/group` of the busybox presets.
pub const BUSYBOX_GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
/// The extra `/etc/passwd` line of [`busybox_with_image_user`] (from the Kubernetes
/// supplementalGroupsPolicy test).
pub const IMAGE_USER_PASSWD: &str =
    "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n";
/// The extra `/etc/group` lines of [`busybox_with_image_user`]: the user's primary group
/// 1000 and `group-defined-in-image` (50000) with the user as a member.
pub const IMAGE_USER_GROUP: &str =
    "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n";

/// The root filesystem entries of the busybox presets: directories (`/tmp` 1777, `/root`
/// 0700, others 0755), `/bin/busybox` (0755), a symlink `/bin/APPLET -> busybox` per applet,
/// and `/etc/passwd`, `/etc/group` with the given contents; all owned by 0:0.
pub fn busybox_entries(passwd: &str, group: &str) -> Result<Vec<Entry>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (apt-get install busybox-static)"))?;
    let mut entries = vec![
        Entry::dir("bin", 0o755),
        Entry::dir("dev", 0o755),
        Entry::dir("etc", 0o755),
        Entry::dir("home", 0o755),
        Entry::dir("proc", 0o555),
        Entry::dir("root", 0o700),
        Entry::dir("sbin", 0o755),
        Entry::dir("sys", 0o555),
        Entry::dir("tmp", 0o1777),
        Entry::dir("usr", 0o755),
        Entry::dir("usr/bin", 0o755),
        Entry::dir("usr/sbin", 0o755),
        Entry::dir("var", 0o755),
        Entry::file("bin/busybox", busybox, 0o755),
    ];
    for applet in busybox_applets()? {
        entries.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries.push(Entry::file("etc/passwd", passwd, 0o644));
    entries.push(Entry::file("etc/group", group, 0o644));
    Ok(entries)
}

/// A one-layer (gzip) busybox image: see [`busybox_entries`]; `Cmd ["sh"]`,
/// `PATH=`[`DEFAULT_PATH`]; passwd has `root` (0) and `nobody` (65534).
pub fn busybox() -> Result<Image> {
    let layer = Layer::new(
        &busybox_entries(BUSYBOX_PASSWD, BUSYBOX_GROUP)?,
        Compression::Gzip,
    )?;
    Ok(Image::new(vec![layer]).with_cmd(&["sh"]))
}

/// [`busybox`] plus the image-defined user of the Kubernetes supplementalGroupsPolicy test:
/// passwd `user-defined-in-image` (1000:1000, home `/home/user-defined-in-image` owned
/// 1000:1000) and group `group-defined-in-image` (50000) listing that user. `config.User` is
/// not set.
pub fn busybox_with_image_user() -> Result<Image> {
    let mut entries = busybox_entries(
        &format!("{BUSYBOX_PASSWD}{IMAGE_USER_PASSWD}"),
        &format!("{BUSYBOX_GROUP}{IMAGE_USER_GROUP}"),
    )?;
    entries.push(Entry::dir("home/user-defined-in-image", 0o755).owned(1000, 1000));
    let layer = Layer::new(&entries, Compression::Gzip)?;
    Ok(Image::new(vec![layer]).with_cmd(&["sh"]))
}

/// Two layers exercising whiteouts. Lower (gzip): busybox plus `/data/a` ("a\n"),
/// `/data/b` ("b\n"), `/opq/x` ("x\n"), `/opq/y` ("y\n"). Upper (uncompressed): a whiteout
/// `/data/.wh.a`, the opaque marker `/opq/.wh..wh..opq` and a new `/opq/z` ("z\n").
///
/// Expected merged root: `/data` holds only `b`; `/opq` holds only `z`; no `.wh.*` names are
/// visible; busybox works as in [`busybox`].
pub fn multilayer_whiteouts() -> Result<Image> {
    let mut lower = busybox_entries(BUSYBOX_PASSWD, BUSYBOX_GROUP)?;
    lower.extend([
        Entry::dir("data", 0o755),
        Entry::file("data/a", "a\n", 0o644),
        Entry::file("data/b", "b\n", 0o644),
        Entry::dir("opq", 0o755),
        Entry::file("opq/x", "x\n", 0o644),
        Entry::file("opq/y", "y\n", 0o644),
    ]);
    let upper = [
        Entry::dir("data", 0o755),
        Entry::whiteout("data/a"),
        Entry::dir("opq", 0o755),
        Entry::opaque("opq"),
        Entry::file("opq/z", "z\n", 0o644),
    ];
    Ok(Image::new(vec![
        Layer::new(&lower, Compression::Gzip)?,
        Layer::new(&upper, Compression::None)?,
    ])
    .with_cmd(&["sh"]))
}

/// Files per directory in [`large`].
pub const LARGE_FILES_PER_DIR: usize = 100;

/// [`busybox`] plus a second (gzip) layer of `n_files` small files, `/large/dNNNN/fNNNNNNN`
/// ([`LARGE_FILES_PER_DIR`] per directory), each holding its own index and a newline. For
/// unpack and pull benchmarks.
pub fn large(n_files: usize) -> Result<Image> {
    let mut entries = Vec::with_capacity(n_files + n_files / LARGE_FILES_PER_DIR + 2);
    entries.push(Entry::dir("large", 0o755));
    for i in 0..n_files {
        let dir = i / LARGE_FILES_PER_DIR;
        if i % LARGE_FILES_PER_DIR == 0 {
            entries.push(Entry::dir(&format!("large/d{dir:04}"), 0o755));
        }
        entries.push(Entry::file(
            &format!("large/d{dir:04}/f{i:07}"),
            format!("{i}\n"),
            0o644,
        ));
    }
    Ok(busybox()?.with_layer(Layer::new(&entries, Compression::Gzip)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name bytes, entry type, link name bytes, mode, uid, gid, data) of every entry.
    type Read = (
        Vec<u8>,
        tar::EntryType,
        Option<Vec<u8>>,
        u32,
        u64,
        u64,
        Vec<u8>,
    );

    fn read_tar(tar: &[u8]) -> Vec<Read> {
        let mut archive = tar::Archive::new(tar);
        let mut out = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path_bytes().into_owned();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let header = entry.header();
            let (ty, mode, uid, gid) = (
                header.entry_type(),
                header.mode().expect("mode"),
                header.uid().expect("uid"),
                header.gid().expect("gid"),
            );
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("data");
            out.push((name, ty, link, mode, uid, gid, data));
        }
        out
    }

    #[test]
    fn normal_entries_round_trip() {
        let long = format!("deep/{}/file", "d".repeat(150));
        let long_target = format!("/{}", "t".repeat(150));
        let entries = [
            Entry::dir("/etc", 0o755),
            Entry::file("/etc/passwd", "root:x:0:0\n", 0o640).owned(0, 42),
            Entry::symlink("/bin/sh", "busybox"),
            Entry::hardlink("/etc/passwd-", "/etc/passwd"),
            Entry::char_device("/dev/null", 1, 3, 0o666),
            Entry::fifo("/run/fifo", 0o600),
            Entry::dir("tmp/", 0o1777),
            Entry::file(&long, "long", 0o600).owned(100_000, 200_000),
            Entry::symlink("longlink", &long_target),
        ];
        let got = read_tar(&tar_of(&entries).expect("tar"));
        let names: Vec<_> = got
            .iter()
            .map(|e| String::from_utf8_lossy(&e.0).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/passwd",
                "bin/sh",
                "etc/passwd-",
                "dev/null",
                "run/fifo",
                "tmp/",
                long.as_str(),
                "longlink"
            ]
        );
        assert_eq!(got[0].1, tar::EntryType::Directory);
        assert_eq!(
            (got[1].1, got[1].3, got[1].4, got[1].5),
            (tar::EntryType::Regular, 0o640, 0, 42)
        );
        assert_eq!(got[1].6, b"root:x:0:0\n");
        assert_eq!(got[2].1, tar::EntryType::Symlink);
        assert_eq!(got[2].2.as_deref(), Some(&b"busybox"[..]));
        assert_eq!(got[3].1, tar::EntryType::Link);
        assert_eq!(got[3].2.as_deref(), Some(&b"etc/passwd"[..]));
        assert_eq!(got[4].1, tar::EntryType::Char);
        assert_eq!(got[5].1, tar::EntryType::Fifo);
        assert_eq!(got[6].3, 0o1777);
        assert_eq!(
            (got[7].4, got[7].5, &got[7].6[..]),
            (100_000, 200_000, &b"long"[..])
        );
        assert_eq!(got[8].2.as_deref(), Some(long_target.as_bytes()));

        let dev_tar = tar_of(&entries[4..5]).expect("tar");
        let mut archive = tar::Archive::new(&dev_tar[..]);
        let dev = archive.entries().expect("entries").next().expect("one");
        let dev = dev.expect("entry");
        assert_eq!(dev.header().device_major().expect("major"), Some(1));
        assert_eq!(dev.header().device_minor().expect("minor"), Some(3));
        assert_eq!(dev.header().mtime().expect("mtime"), MTIME);
    }

    #[test]
    fn whiteout_and_opaque_names() {
        let entries = [
            Entry::whiteout("/data/a"),
            Entry::whiteout("top"),
            Entry::whiteout("/a/b/c/"),
            Entry::opaque("/opq"),
            Entry::opaque("opq/sub/"),
        ];
        let got = read_tar(&tar_of(&entries).expect("tar"));
        let names: Vec<_> = got
            .iter()
            .map(|e| String::from_utf8_lossy(&e.0).into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "data/.wh.a",
                ".wh.top",
                "a/b/.wh.c",
                "opq/.wh..wh..opq",
                "opq/sub/.wh..wh..opq"
            ]
        );
        assert!(
            got.iter()
                .all(|e| e.1 == tar::EntryType::Regular && e.6.is_empty())
        );
    }

    #[test]
    fn raw_hostile_names_come_out_verbatim() {
        let long_hostile = format!("{}etc/shadow", "../".repeat(50));
        let raw: Vec<&[u8]> = vec![
            b"../../x",
            b"/etc/x",
            b"./a/../../b",
            b"a//b/./c",
            long_hostile.as_bytes(),
            b"\xff\xfe-not-utf8",
        ];
        let mut entries: Vec<Entry> = raw.iter().map(|n| Entry::raw_file(*n, "x")).collect();
        entries.push(Entry::symlink("evil", "/etc").with_raw_name("../evil"));
        entries.push(Entry::raw(
            "/abs-hardlink",
            EntryKind::Hardlink(b"../../../etc/passwd".to_vec()),
            0o644,
        ));
        let got = read_tar(&tar_of(&entries).expect("tar"));
        assert_eq!(got.len(), entries.len());
        for (name, entry) in raw.iter().zip(&got) {
            assert_eq!(entry.0, *name);
            assert_eq!(entry.6, b"x");
        }
        assert_eq!(got[6].0, b"../evil");
        assert_eq!(got[6].2.as_deref(), Some(&b"/etc"[..]));
        assert_eq!(got[7].0, b"/abs-hardlink");
        assert_eq!(got[7].2.as_deref(), Some(&b"../../../etc/passwd"[..]));
    }

    #[test]
    fn layer_digests_are_reproducible_and_match_content() {
        let entries = [
            Entry::dir("a", 0o755),
            Entry::file("a/f", vec![7u8; 10_000], 0o644),
        ];
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let one = Layer::new(&entries, compression).expect("layer");
            let two = Layer::new(&entries, compression).expect("layer");
            assert_eq!(one.digest(), two.digest());
            assert_eq!(one.diff_id(), sha256_digest(one.tar()));
            assert_eq!(one.digest(), sha256_digest(one.blob()));
            assert_eq!(
                compression.decompress(one.blob()).expect("decompress"),
                one.tar()
            );
            assert_eq!(
                one.digest() == one.diff_id(),
                compression == Compression::None
            );
        }
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn config_and_manifest_json() {
        let layer = Layer::new(&[Entry::file("f", "x", 0o644)], Compression::Zstd).expect("l");
        let image = Image::new(vec![layer.clone()])
            .with_cmd(&["sh"])
            .with_entrypoint(&["/bin/tini", "--"])
            .with_user("1000:1000")
            .with_working_dir("/work")
            .with_stop_signal("SIGINT")
            .with_history();
        let config: Value = serde_json::from_slice(&image.config_json()).expect("config");
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"]["Env"],
            json!([format!("PATH={DEFAULT_PATH}")])
        );
        assert_eq!(config["config"]["Cmd"], json!(["sh"]));
        assert_eq!(config["config"]["Entrypoint"], json!(["/bin/tini", "--"]));
        assert_eq!(config["config"]["User"], "1000:1000");
        assert_eq!(config["config"]["WorkingDir"], "/work");
        assert_eq!(config["config"]["StopSignal"], "SIGINT");
        assert_eq!(config["rootfs"]["diff_ids"], json!([layer.diff_id()]));
        assert_eq!(config["history"].as_array().map(Vec::len), Some(1));
        let manifest: Value = serde_json::from_slice(&image.manifest_json()).expect("manifest");
        assert_eq!(manifest["mediaType"], MEDIA_TYPE_MANIFEST);
        assert_eq!(manifest["config"]["digest"], json!(image.config_digest()));
        assert_eq!(manifest["layers"][0]["mediaType"], MEDIA_TYPE_LAYER_ZSTD);
        assert_eq!(manifest["layers"][0]["digest"], json!(layer.digest()));
        assert_eq!(manifest["layers"][0]["size"], json!(layer.size()));
    }

    #[test]
    fn repo_and_tag_parsing() {
        assert_eq!(split_repo_tag("busybox").ok(), Some(("busybox", "latest")));
        assert_eq!(split_repo_tag("a/b:v1").ok(), Some(("a/b", "v1")));
        assert_eq!(split_repo_tag("a:5/b").ok(), Some(("a:5/b", "latest")));
        assert!(split_repo_tag("a:").is_err());
        assert!(split_repo_tag(":x").is_err());
    }
}
