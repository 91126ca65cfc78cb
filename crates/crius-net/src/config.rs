//! Network configuration: finding, parsing and validating CNI network config lists.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::version::CniVersion;

/// File extensions recognised in the CNI config directory.
pub const CONF_EXTENSIONS: [&str; 3] = ["conf", "conflist", "json"];

/// The default network crius installs when asked (`integration/cni/10-crius.conflist`):
/// a `crius0` bridge acting as gateway with masquerading, host-local addresses from
/// 10.87.0.0/16 and the `portmap` plugin for CRI port mappings.
///
/// The loopback interface is not in this list: crius brings `lo` up with a separate
/// invocation of the `loopback` plugin (see [`loopback_config`]). A conflist is a
/// chain for one interface (`CNI_IFNAME`, `eth0`), and `loopback` ignores the interface name,
/// the prevResult and the IPAM of the chain, so mixing it in would be both odd and fragile.
pub const DEFAULT_CONFLIST: &str = include_str!("../../../integration/cni/10-crius.conflist");

/// The file name the default network is installed under.
pub const DEFAULT_CONFLIST_NAME: &str = "10-crius.conflist";

/// A network configuration list: one named network, a chain of plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network name (`name`).
    pub name: String,
    /// The CNI version all plugins of the list are run with (`cniVersion`).
    pub cni_version: CniVersion,
    /// `disableCheck`: CHECK is skipped for this network.
    pub disable_check: bool,
    /// The plugin configurations, in order; each has a string `type`.
    pub plugins: Vec<Map<String, Value>>,
    /// Where the list came from (a file path, or a description).
    pub origin: String,
}

impl NetworkConfigList {
    /// Parses a `.conflist` document.
    pub fn from_list_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let value = parse_object(bytes, origin)?;
        Self::from_list_value(value, origin)
    }

    /// Parses a single-plugin `.conf` document and wraps it as a one-element list.
    pub fn from_conf_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let mut conf = parse_object(bytes, origin)?;
        let name = conf.get("name").cloned();
        let version = conf.get("cniVersion").cloned();
        let disable_check = conf.remove("disableCheck");
        let mut list = Map::new();
        if let Some(name) = name {
            list.insert("name".into(), name);
        }
        if let Some(version) = version {
            list.insert("cniVersion".into(), version);
        }
        if let Some(disable_check) = disable_check {
            list.insert("disableCheck".into(), disable_check);
        }
        list.insert("plugins".into(), Value::Array(vec![Value::Object(conf)]));
        Self::from_list_value(list, origin)
    }

    /// Parses a document by its file name: `.conflist` is a list; `.conf` and `.json` are a
    /// single plugin unless the document has a `plugins` array.
    pub fn from_file_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let is_list = path.extension().is_some_and(|e| e == "conflist")
            || serde_json::from_slice::<Value>(bytes)
                .ok()
                .is_some_and(|v| v.get("plugins").is_some_and(Value::is_array));
        if is_list {
            Self::from_list_bytes(bytes, &origin)
        } else {
            Self::from_conf_bytes(bytes, &origin)
        }
    }

    /// Reads and parses one config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| invalid(&path.display().to_string(), e))?;
        Self::from_file_bytes(&bytes, path)
    }

    /// Validates a parsed list object.
    fn from_list_value(mut list: Map<String, Value>, origin: &str) -> Result<Self> {
        let name = match list.remove("name") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(invalid(origin, "\"name\" is not a string")),
            None => return Err(invalid(origin, "missing \"name\"")),
        };
        validate_name(&name).map_err(|r| invalid(origin, r))?;
        let cni_version = match list.remove("cniVersion") {
            Some(Value::String(v)) => {
                CniVersion::parse_supported(&v).map_err(|r| invalid(origin, r))?
            }
            Some(_) => return Err(invalid(origin, "\"cniVersion\" is not a string")),
            None => return Err(invalid(origin, "missing \"cniVersion\"")),
        };
        let disable_check = match list.remove("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => b,
            // The string forms are accepted too: hand-written configs use them.
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
            Some(_) => return Err(invalid(origin, "\"disableCheck\" is not a boolean")),
        };
        let plugins = match list.remove("plugins") {
            Some(Value::Array(plugins)) => plugins,
            Some(_) => return Err(invalid(origin, "\"plugins\" is not an array")),
            None => return Err(invalid(origin, "missing \"plugins\"")),
        };
        if plugins.is_empty() {
            return Err(invalid(origin, "\"plugins\" is empty"));
        }
        let plugins = plugins
            .into_iter()
            .enumerate()
            .map(|(i, p)| match p {
                Value::Object(p) => match p.get("type") {
                    Some(Value::String(t)) if valid_plugin_type(t) => Ok(p),
                    Some(Value::String(t)) => Err(invalid(
                        origin,
                        format!("plugin {i}: invalid \"type\" {t:?}"),
                    )),
                    _ => Err(invalid(
                        origin,
                        format!("plugin {i}: missing string \"type\""),
                    )),
                },
                _ => Err(invalid(origin, format!("plugin {i} is not an object"))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            name,
            cni_version,
            disable_check,
            plugins,
            origin: origin.to_string(),
        })
    }

    /// The list as a JSON document (the form cached next to a result).
    pub fn to_value(&self) -> Value {
        let mut list = Map::new();
        list.insert("cniVersion".into(), self.cni_version.to_string().into());
        list.insert("name".into(), self.name.clone().into());
        if self.disable_check {
            list.insert("disableCheck".into(), true.into());
        }
        list.insert(
            "plugins".into(),
            Value::Array(self.plugins.iter().cloned().map(Value::Object).collect()),
        );
        Value::Object(list)
    }

    /// The `type` of each plugin, in order.
    pub fn plugin_types(&self) -> impl Iterator<Item = &str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
    }
}

/// The built-in configuration crius runs for the pod's `lo` interface.
pub fn loopback_config() -> NetworkConfigList {
    let mut plugin = Map::new();
    plugin.insert("type".into(), "loopback".into());
    NetworkConfigList {
        name: "cni-loopback".into(),
        cni_version: CniVersion::V1_0_0,
        disable_check: false,
        plugins: vec![plugin],
        origin: "built-in loopback config".into(),
    }
}

/// Loads the network crius uses: the first file in `dir`, in lexical order of file names,
/// with a `.conflist`, `.conf` or `.json` extension that parses as a valid network.
///
/// Files that cannot be used are skipped; if none is usable the error names each of them
/// with the reason.
pub fn load_conf_dir(dir: &Path) -> Result<NetworkConfigList> {
    let mut files = conf_files(dir)?;
    files.sort();
    let mut skipped = Vec::new();
    for path in files {
        match NetworkConfigList::from_file(&path) {
            Ok(list) => return Ok(list),
            Err(e) => {
                tracing::warn!(error = %e, "skipping CNI config file");
                skipped.push(e.to_string());
            }
        }
    }
    Err(Error::NoConfig {
        dir: dir.to_path_buf(),
        skipped,
    })
}

/// See [`crate::install_default_conflist`].
pub(crate) fn install_default(dir: &Path) -> Result<Option<PathBuf>> {
    match load_conf_dir(dir) {
        Ok(_) => return Ok(None),
        Err(Error::NoConfig { .. }) => {}
        Err(e) => return Err(e),
    }
    let path = dir.join(DEFAULT_CONFLIST_NAME);
    let tmp = dir.join(format!(".{DEFAULT_CONFLIST_NAME}.tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, DEFAULT_CONFLIST.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Install {
            path: path.clone(),
            source,
        }
    })?;
    Ok(Some(path))
}

/// The config files in `dir` (unsorted). A missing directory has none.
fn conf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::ReadDir {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONF_EXTENSIONS.contains(&e));
        // Follow symlinks: config management often links files into the directory.
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

fn parse_object(bytes: &[u8], origin: &str) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(origin, "not a JSON object")),
        Err(e) => Err(invalid(origin, e)),
    }
}

fn invalid(origin: &str, reason: impl ToString) -> Error {
    Error::InvalidConfig {
        origin: origin.to_string(),
        reason: reason.to_string(),
    }
}

/// A network name outside the characters the CNI spec allows.
#[derive(Debug, thiserror::Error)]
#[error("network name {name:?} must be alphanumerics, '_', '.', '-', starting alphanumeric")]
struct InvalidName {
    name: String,
}

/// Network names end up in file names and iptables comments: keep them to the characters
/// the CNI spec allows.
fn validate_name(name: &str) -> std::result::Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            name: name.to_owned(),
        })
    }
}

/// A plugin type is a file name in a bin dir: no separators, no `..`.
fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/') && !t.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_conflist_is_valid() {
        let list = NetworkConfigList::from_list_bytes(DEFAULT_CONFLIST.as_bytes(), "default")
            .expect("default conflist parses");
        assert_eq!(list.name, "crius");
        assert_eq!(list.cni_version, CniVersion::V1_0_0);
        assert_eq!(
            list.plugin_types().collect::<Vec<_>>(),
            ["bridge", "portmap"]
        );
        assert_eq!(list.plugins[0]["bridge"], "crius0");
        assert_eq!(list.plugins[1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn conf_is_wrapped_as_list() {
        let conf = br#"{"cniVersion":"0.4.0","name":"n1","type":"bridge","disableCheck":true,
                        "ipam":{"type":"host-local"}}"#;
        let list = NetworkConfigList::from_conf_bytes(conf, "x").unwrap();
        assert_eq!(list.name, "n1");
        assert_eq!(list.cni_version.to_string(), "0.4.0");
        assert!(list.disable_check);
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0]["type"], "bridge");
        assert_eq!(list.plugins[0]["ipam"]["type"], "host-local");
        assert!(!list.plugins[0].contains_key("disableCheck"));
    }

    #[test]
    fn invalid_configs_are_explained() {
        let cases: [(&[u8], &str); 8] = [
            (b"{", "EOF"),
            (b"[]", "not a JSON object"),
            (
                br#"{"cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
                "missing \"name\"",
            ),
            (
                br#"{"name":"n","plugins":[{"type":"a"}]}"#,
                "missing \"cniVersion\"",
            ),
            (
                br#"{"name":"n","cniVersion":"0.2.0","plugins":[{"type":"a"}]}"#,
                "0.2.0",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0","plugins":[]}"#,
                "is empty",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0","plugins":[{}]}"#,
                "plugin 0: missing",
            ),
            (
                br#"{"name":"n","cniVersion":"1.0.0","plugins":[{"type":"../x"}]}"#,
                "invalid \"type\"",
            ),
        ];
        for (doc, want) in cases {
            let err = NetworkConfigList::from_list_bytes(doc, "f.conflist")
                .expect_err("must be rejected")
                .to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(err.contains("f.conflist"), "{err:?} should name the file");
        }
        let err = NetworkConfigList::from_list_bytes(
            br#"{"name":"a/b","cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#,
            "f",
        )
        .unwrap_err();
        assert!(err.to_string().contains("network name"), "{err}");
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn first_file_in_lexical_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        let list = |n: &str| {
            format!(r#"{{"cniVersion":"1.0.0","name":"{n}","plugins":[{{"type":"bridge"}}]}}"#)
        };
        write(dir.path(), "20-b.conflist", &list("b"));
        write(dir.path(), "30-c.json", &list("c"));
        write(dir.path(), "10-a.txt", &list("ignored-extension"));
        write(
            dir.path(),
            "15-single.conf",
            r#"{"cniVersion":"0.3.1","name":"single","type":"ptp"}"#,
        );
        let got = load_conf_dir(dir.path()).unwrap();
        assert_eq!(got.name, "single");
        assert_eq!(got.plugin_types().collect::<Vec<_>>(), ["ptp"]);
        std::fs::remove_file(dir.path().join("15-single.conf")).unwrap();
        assert_eq!(load_conf_dir(dir.path()).unwrap().name, "b");
        // A .json with a plugins array is a list.
        std::fs::remove_file(dir.path().join("20-b.conflist")).unwrap();
        assert_eq!(load_conf_dir(dir.path()).unwrap().name, "c");
    }

    #[test]
    fn broken_files_are_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "00-broken.conflist", "{not json");
        let err = load_conf_dir(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("no CNI network config in "), "{err}");
        assert!(err.contains("00-broken.conflist"), "{err}");
        write(
            dir.path(),
            "99-good.conflist",
            r#"{"cniVersion":"1.0.0","name":"good","plugins":[{"type":"bridge"}]}"#,
        );
        assert_eq!(load_conf_dir(dir.path()).unwrap().name, "good");
    }

    #[test]
    fn empty_or_missing_dir_is_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_conf_dir(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("no CNI network config in {}", dir.path().display())
        );
        let missing = dir.path().join("nope");
        assert!(matches!(
            load_conf_dir(&missing),
            Err(Error::NoConfig { .. })
        ));
    }

    #[test]
    fn default_is_installed_only_into_a_dir_without_config() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        let written = install_default(&conf).unwrap().expect("written");
        assert_eq!(written, conf.join(DEFAULT_CONFLIST_NAME));
        assert_eq!(std::fs::read_to_string(&written).unwrap(), DEFAULT_CONFLIST);
        assert_eq!(load_conf_dir(&conf).unwrap().name, "crius");
        assert_eq!(install_default(&conf).unwrap(), None);
        let names: Vec<_> = std::fs::read_dir(&conf)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [DEFAULT_CONFLIST_NAME]);
    }

    #[test]
    fn to_value_round_trips() {
        let list = NetworkConfigList::from_list_bytes(DEFAULT_CONFLIST.as_bytes(), "d").unwrap();
        let bytes = serde_json::to_vec(&list.to_value()).unwrap();
        let again = NetworkConfigList::from_list_bytes(&bytes, "d").unwrap();
        assert_eq!(list, again);
    }
}
