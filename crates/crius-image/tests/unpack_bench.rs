//! Unpack throughput against `tar -x` of the same layer (ignored by default: a measurement,
//! not a check). Run: `cargo test -p crius-image --release --test unpack_bench -- --ignored
//! --nocapture`.

use std::io::Write;
use std::time::Instant;

/// A tar of `n` small files in directories of 100, like the test suite's large image.
fn large_tar(n: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut append = |path: &str, data: &[u8], dir: bool| {
        let mut header = tar::Header::new_gnu();
        header.set_path(path).expect("test step");
        header.set_size(data.len() as u64);
        header.set_mode(if dir { 0o755 } else { 0o644 });
        header.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).expect("test step");
    };
    append("large/", b"", true);
    for i in 0..n {
        if i % 100 == 0 {
            append(&format!("large/d{:04}/", i / 100), b"", true);
        }
        append(
            &format!("large/d{:04}/f{i:07}", i / 100),
            format!("{i}\n").as_bytes(),
            false,
        );
    }
    builder.into_inner().expect("test step")
}

#[test]
#[ignore = "a measurement; run explicitly"]
fn unpack_throughput_against_tar() {
    let tar = large_tar(20_000);
    let tmp = tempfile::tempdir().expect("test step");
    for (name, blob) in [
        ("plain", tar.clone()),
        ("gzip", {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&tar).expect("test step");
            gz.finish().expect("test step")
        }),
    ] {
        let file = tmp.path().join(format!("layer.{name}"));
        std::fs::write(&file, &blob).expect("test step");
        let crius_dest = tmp.path().join(format!("crius-{name}"));
        std::fs::create_dir(&crius_dest).expect("test step");
        let started = Instant::now();
        let unpacked =
            crius_image::unpack::unpack_file(&file, &crius_dest, None).expect("test step");
        let crius = started.elapsed();
        let tar_dest = tmp.path().join(format!("tar-{name}"));
        std::fs::create_dir(&tar_dest).expect("test step");
        let started = Instant::now();
        let status = std::process::Command::new("tar")
            .arg(if name == "gzip" { "-xzf" } else { "-xf" })
            .arg(&file)
            .arg("--same-owner")
            .arg("-C")
            .arg(&tar_dest)
            .status()
            .expect("test step");
        let tar_time = started.elapsed();
        assert!(status.success());
        eprintln!(
            "{name}: {} entries, crius {crius:?}, tar -x {tar_time:?}, ratio {:.2}",
            unpacked.entries,
            crius.as_secs_f64() / tar_time.as_secs_f64()
        );
    }
}
