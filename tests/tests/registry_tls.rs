//! Registries with their own CA and client certificates, configured as an operator copies them
//! from a containerd node: `registry_config_dir/<host>/hosts.toml`. The registry is Debian's
//! `docker-registry` serving HTTPS with certificates this test makes with `openssl`; the
//! daemon reads the host directory on every pull, so each case rewrites it.

use std::path::{Path, PathBuf};
use std::process::Command;

use cri_api::v1::{ImageSpec, ImageStatusRequest, PullImageRequest};
use crius_tests::harness::{Criusd, Options};
use crius_tests::image::busybox;
use crius_tests::registry::{Registry, TlsServer};

/// A CA with a server certificate for 127.0.0.1 and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes `ca.pem`, `server.pem` (IP 127.0.0.1, serverAuth), `client.pem` (clientAuth),
    /// their keys, and `other-ca.pem`, a CA that signed nothing here.
    fn make() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("crius-pki-")
            .tempdir()
            .expect("tempdir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (apt-get install -y openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=crius test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).expect("ext");
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=crius test {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        Pki { dir }
    }
}

/// Writes `text` as the `hosts.toml` of `host` under `certs_d` (replacing what was there).
fn hosts_toml(certs_d: &Path, host: &str, text: &str) {
    let dir = certs_d.join(host);
    std::fs::create_dir_all(&dir).expect("host dir");
    std::fs::write(dir.join("hosts.toml"), text).expect("hosts.toml");
}

/// A daemon reading host settings from `certs_d` (no insecure registries).
async fn daemon(certs_d: &Path) -> Criusd {
    Criusd::start_with(Options {
        config: format!("registry_config_dir = \"{}\"\n", certs_d.display()),
        ..Options::default()
    })
    .await
    .expect("criusd")
}

/// Pulls `reference`; on success checks the image is listed under it.
async fn pull(daemon: &mut Criusd, reference: &str) -> Result<String, tonic::Status> {
    let image_ref = daemon
        .images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: reference.into(),
                ..ImageSpec::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .image_ref;
    let status = daemon
        .images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: reference.into(),
                ..ImageSpec::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    assert_eq!(
        status.image.map(|i| i.id).as_deref(),
        Some(image_ref.as_str()),
        "{reference} is listed after its pull"
    );
    Ok(image_ref)
}

/// A plain registry to push to, with busybox as `crius/busybox:1`, and its storage served
/// over HTTPS with `tls`.
async fn registries(tls: &TlsServer) -> (Registry, Registry) {
    let plain = Registry::start().expect("registry");
    busybox()
        .expect("image")
        .push(&plain.host(), "crius/busybox:1")
        .await
        .expect("push");
    let secure = Registry::start_tls(plain.storage_dir(), tls).expect("TLS registry");
    (plain, secure)
}

#[tokio::test]
async fn a_registrys_own_ca_is_trusted_only_where_hosts_toml_names_it() {
    let pki = Pki::make();
    let (_plain, secure) = registries(&TlsServer {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: None,
    })
    .await;
    let certs_d = tempfile::tempdir().expect("certs.d");
    let mut daemon = daemon(certs_d.path()).await;
    let host = secure.host();
    let reference = format!("{host}/crius/busybox:1");

    // No host settings: the system's roots do not know the test CA.
    let err = pull(&mut daemon, &reference).await.expect_err("unknown CA");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("UnknownIssuer"), "{err}");
    assert!(err.message().contains("registry_config_dir"), "{err}");

    // Another CA is no better.
    hosts_toml(
        certs_d.path(),
        &host,
        &format!("ca = \"{}\"\n", pki.path("other-ca.pem").display()),
    );
    let err = pull(&mut daemon, &reference).await.expect_err("wrong CA");
    assert!(err.message().contains("UnknownIssuer"), "{err}");

    // The CA as containerd's certs.d names it: the `host_port_` directory, a relative path.
    std::fs::remove_dir_all(certs_d.path().join(&host)).expect("rm");
    let (ip, port) = host.split_once(':').expect("host:port");
    let dir = certs_d.path().join(format!("{ip}_{port}_"));
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::copy(pki.path("ca.pem"), dir.join("ca.crt")).expect("copy");
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"https://{host}\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"ca.crt\"\n"),
    )
    .expect("hosts.toml");
    pull(&mut daemon, &reference)
        .await
        .expect("pull with the CA");
    std::fs::remove_dir_all(&dir).expect("rm");

    // A Docker-style directory (no hosts.toml, a *.crt file) works too.
    let dir = certs_d.path().join(&host);
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::copy(pki.path("ca.pem"), dir.join("registry-ca.crt")).expect("copy");
    pull(&mut daemon, &reference)
        .await
        .expect("pull with *.crt");
    std::fs::remove_dir_all(&dir).expect("rm");

    // skip_verify trusts any certificate.
    hosts_toml(certs_d.path(), &host, "skip_verify = true\n");
    pull(&mut daemon, &reference)
        .await
        .expect("pull with skip_verify");

    // A mirror: an upstream name that resolves nowhere, served by the TLS registry.
    hosts_toml(
        certs_d.path(),
        "mirrored.invalid",
        &format!(
            "server = \"https://mirrored.invalid\"\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{}\"\n",
            pki.path("ca.pem").display()
        ),
    );
    pull(&mut daemon, "mirrored.invalid/crius/busybox:1")
        .await
        .expect("pull through the mirror");

    // A pull-only mirror cannot resolve a tag, and the server is unreachable: refused, with
    // the server's failure and the mirror's capabilities in view.
    hosts_toml(
        certs_d.path(),
        "pull-only.invalid",
        &format!(
            "capabilities = [\"pull\"]\n\n[host.\"https://{host}\"]\n  capabilities = [\"pull\"]\n  ca = \"{}\"\n",
            pki.path("ca.pem").display()
        ),
    );
    let err = pull(&mut daemon, "pull-only.invalid/crius/busybox:1")
        .await
        .expect_err("no host resolves tags");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("resolve"), "{err}");

    // A CA file that is missing is named.
    hosts_toml(certs_d.path(), &host, "ca = \"/nonexistent/ca.pem\"\n");
    let err = pull(&mut daemon, &reference)
        .await
        .expect_err("missing CA file");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("/nonexistent/ca.pem"), "{err}");
}

#[tokio::test]
async fn a_registry_that_requires_a_client_certificate_gets_the_configured_one() {
    let pki = Pki::make();
    let (_plain, secure) = registries(&TlsServer {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: Some(pki.path("ca.pem")),
    })
    .await;
    let certs_d = tempfile::tempdir().expect("certs.d");
    let mut daemon = daemon(certs_d.path()).await;
    let host = secure.host();
    let reference = format!("{host}/crius/busybox:1");
    let ca = pki.path("ca.pem").display().to_string();

    // The CA alone: the registry refuses the handshake.
    hosts_toml(certs_d.path(), &host, &format!("ca = \"{ca}\"\n"));
    let err = pull(&mut daemon, &reference)
        .await
        .expect_err("no client certificate");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    // The CA and a [cert, key] pair.
    let with_pair = |key: &str| {
        format!(
            "ca = \"{ca}\"\nclient = [[\"{}\", \"{}\"]]\n",
            pki.path("client.pem").display(),
            pki.path(key).display()
        )
    };
    hosts_toml(certs_d.path(), &host, &with_pair("client.key"));
    pull(&mut daemon, &reference)
        .await
        .expect("pull with the client pair");

    // One file holding certificate and key.
    let bundle = pki.path("client-bundle.pem");
    let mut both = std::fs::read(pki.path("client.pem")).expect("cert");
    both.extend(std::fs::read(pki.path("client.key")).expect("key"));
    std::fs::write(&bundle, both).expect("bundle");
    hosts_toml(
        certs_d.path(),
        &host,
        &format!("ca = \"{ca}\"\nclient = \"{}\"\n", bundle.display()),
    );
    pull(&mut daemon, &reference)
        .await
        .expect("pull with the bundle");

    // A key that does not parse is named.
    std::fs::write(pki.path("broken.key"), "not a key").expect("write");
    hosts_toml(certs_d.path(), &host, &with_pair("broken.key"));
    let err = pull(&mut daemon, &reference).await.expect_err("broken key");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("client.pem"), "{err}");
}
