//! The repository's own map stays true: the crate diagram of `docs/architecture.md` is the
//! dependency graph `cargo metadata` reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The diagram: the lines `crate -> dep dep …` of the first `text` block after "Dependencies
/// point one way".
fn documented(doc: &str) -> Graph {
    let after = doc
        .split_once("Dependencies point one way")
        .expect("the dependency paragraph")
        .1;
    let block = after
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a text block with the crate diagram")
        .0;
    block
        .lines()
        .filter_map(|line| line.split_once("->"))
        .map(|(name, deps)| {
            (
                name.trim().to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            )
        })
        .collect()
}

/// Each workspace crate but the test and benchmark crates, with the workspace crates it
/// depends on (normal dependencies).
fn from_cargo(repo: &Path) -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(repo.join("Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    packages
        .iter()
        .filter(|p| p["name"] != "crius-tests" && p["name"] != "crius-bench")
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(d))
                .map(str::to_owned)
                .collect();
            (p["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_crate_diagram_matches_cargo_metadata() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let doc = std::fs::read_to_string(repo.join("docs/architecture.md")).expect("architecture.md");
    assert_eq!(
        documented(&doc),
        from_cargo(&repo),
        "docs/architecture.md's crate diagram (left) and cargo metadata (right) differ"
    );
}
