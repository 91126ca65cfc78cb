//! Builds the static C probes the end-to-end tests put into their images (`probes/*.c`, with
//! `gcc -static`), so a test binary carries them wherever it runs: the VM's guest has no
//! compiler. Without gcc and libc6-dev a probe is left empty (with a warning) and the tests
//! that use it fail saying so; the rest of the crate (the demo) builds without them.

use std::path::PathBuf;
use std::process::Command;

/// The probes: source file under `probes/`, binary name in `OUT_DIR`.
const PROBES: &[(&str, &str)] = &[("security.c", "security-probe")];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    for (source, binary) in PROBES {
        let source = PathBuf::from("probes").join(source);
        let binary = out.join(binary);
        println!("cargo::rerun-if-changed={}", source.display());
        let built = Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&binary)
            .arg(&source)
            .output();
        let failure = match built {
            Ok(o) if o.status.success() => continue,
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => format!("cannot run gcc: {e}"),
        };
        println!(
            "cargo::warning=gcc -static {} failed (install gcc and libc6-dev): {}",
            source.display(),
            failure.lines().next().unwrap_or("")
        );
        std::fs::write(&binary, b"").expect("write the empty probe");
    }
}
