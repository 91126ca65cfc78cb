//! Seccomp profiles in the format node profiles (OCI and Docker JSON) and crius' own default
//! are written in: criusd reads a node's profile into this model and checks it at
//! CreateContainer; the monitor turns it into the container's OCI filter.

use serde::{Deserialize, Deserializer, Serialize};

/// `null` as the default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A seccomp profile. Keys it does not name (`comment`, …) are ignored, `null` is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The action of a system call no rule names.
    pub default_action: String,
    /// The errno of `defaultAction` `SCMP_ACT_ERRNO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Architectures (`SCMP_ARCH_*`) the filter covers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub architectures: Vec<String>,
    /// Docker's per-machine architecture lists.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arch_map: Vec<ArchMap>,
    /// Filter flags (`SECCOMP_FILTER_FLAG_*`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub flags: Vec<String>,
    /// A seccomp agent's socket (refused by crius).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_path: Option<String>,
    /// The rules, in order.
    #[serde(default, deserialize_with = "nullable")]
    pub syscalls: Vec<Rule>,
}

/// The architectures Docker adds on a machine of `architecture`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    /// The machine's architecture.
    pub architecture: String,
    /// The ones it also runs.
    #[serde(default, deserialize_with = "nullable")]
    pub sub_architectures: Vec<String>,
}

/// One rule: system calls and what happens when they are made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The system calls.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names: Vec<String>,
    /// One more system call (the older single-name form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The action.
    pub action: String,
    /// The errno of `SCMP_ACT_ERRNO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<Arg>,
    /// Docker's conditions for the rule to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Filter>,
    /// Docker's conditions for the rule not to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Filter>,
}

impl Rule {
    /// Every system call the rule names.
    pub fn all_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().chain(&self.name).map(String::as_str)
    }
}

/// A condition on one argument of a system call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// The argument, 0 to 5.
    pub index: u32,
    /// The value compared with (the mask of `SCMP_CMP_MASKED_EQ`).
    #[serde(default)]
    pub value: u64,
    /// The second value (the datum of `SCMP_CMP_MASKED_EQ`).
    #[serde(default)]
    pub value_two: u64,
    /// The comparison (`SCMP_CMP_*`).
    pub op: String,
}

/// Docker's `includes` / `excludes` of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Capabilities (`CAP_*`) the container holds: all of them (includes), any (excludes).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub caps: Vec<String>,
    /// Machine architectures in Go's names (`amd64`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arches: Vec<String>,
    /// The lowest kernel (`major.minor`) the rule applies on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_profiles_read_with_nulls_and_unknown_keys() {
        let text = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":null}],
            "syscalls":[{"names":["a","b"],"action":"SCMP_ACT_ALLOW","args":null,
              "comment":"", "includes":{}, "excludes":{"caps":["CAP_SYS_ADMIN"]}},
              {"name":"c","action":"SCMP_ACT_ERRNO","errnoRet":28,
               "args":[{"index":0,"value":1,"valueTwo":0,"op":"SCMP_CMP_EQ"}]}]}"#;
        let p: Profile = serde_json::from_str(text).expect("profile");
        assert_eq!(p.default_errno_ret, Some(1));
        assert_eq!(p.arch_map[0].sub_architectures, Vec::<String>::new());
        assert_eq!(p.syscalls[0].all_names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.syscalls[0].includes, Some(Filter::default()));
        assert_eq!(p.syscalls[1].all_names().collect::<Vec<_>>(), ["c"]);
        assert_eq!(p.syscalls[1].args[0].value, 1);
        let again: Profile =
            serde_json::from_str(&serde_json::to_string(&p).expect("json")).expect("back");
        assert_eq!(again, p);
    }
}
