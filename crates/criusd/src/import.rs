//! `criusd import`: loads image archives into the image store of a root no criusd is using
//! (air-gapped nodes): OCI image layouts, OCI archives and `docker save` tarballs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use crius_server::config::{Config, DEFAULT_CONFIG_FILE};

use crate::lock;

/// The flags of `criusd import`.
#[derive(Debug, Parser)]
#[command(
    name = "criusd import",
    about = "Import OCI image layouts, OCI archives and docker save tarballs into the image store"
)]
struct ImportCli {
    /// Configuration file (TOML), for `root` and the image caps. Without this flag
    /// /etc/crius/config.toml is read if present.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The root whose image store receives the images (criusd's --root).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directories or tarballs to import.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

/// Runs `criusd import ARGS...` (`args` without the program name and `import`).
pub fn main(args: &[std::ffi::OsString]) -> ExitCode {
    let cli = match ImportCli::try_parse_from(
        std::iter::once(std::ffi::OsString::from("criusd import")).chain(args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("criusd import: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(cli: &ImportCli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path, true)?,
        None => Config::load(Path::new(DEFAULT_CONFIG_FILE), false)?,
    };
    if let Some(root) = &cli.root {
        config.root = std::path::absolute(root)
            .with_context(|| format!("cannot resolve {}", root.display()))?;
    }
    config.validate(None)?;
    Ok(config)
}

/// Imports every path; true when all succeeded.
fn run(cli: &ImportCli) -> anyhow::Result<bool> {
    let config = config(cli)?;
    let root = &config.root;
    crate::make_private_dir(root)?;
    let lock_path = root.join("criusd.lock");
    let _lock = lock::Lock::acquire(&lock_path, "root").map_err(|e| {
        if e.is::<lock::AlreadyRunning>() {
            e.context(format!(
                "criusd import needs {} to itself; put the files in the running daemon's \
                 import_dir and restart it, or stop it and import again",
                root.display()
            ))
        } else {
            e
        }
    })?;
    let db = crius_server::open_metadata(root)?;
    let store =
        crius_image::ImageStore::open(root, Arc::new(db), crius_image::RegistryOptions::default())
            .map(Arc::new)
            .context("cannot open the image store")?;
    store.set_limits(crius_image::Limits {
        max_layer_bytes: config.max_layer_bytes,
        max_layer_entries: config.max_layer_entries,
        max_layers: config.max_image_layers,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut all_ok = true;
    for path in &cli.paths {
        match runtime.block_on(store.import_path(path)) {
            Ok(records) => {
                for record in records {
                    let tags = if record.repo_tags.is_empty() {
                        "<no tag>".to_owned()
                    } else {
                        record.repo_tags.join(", ")
                    };
                    println!("imported {}: {} {tags}", path.display(), record.id);
                }
            }
            Err(e) => {
                eprintln!("criusd import: {}: {e}", path.display());
                all_ok = false;
            }
        }
    }
    Ok(all_ok)
}
