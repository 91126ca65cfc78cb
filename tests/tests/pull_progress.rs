//! Pulls that stall or lose their callers. A registry that holds a layer back halfway (the
//! gated registry of the test crate) stands for a stalled transfer: the pull fails after
//! `pull_progress_timeout` and keeps the half it received, which the next pull asks for by
//! range only. Callers of the same pull share one transfer, which stops when the last of
//! them hangs up and not before.

use std::time::{Duration, Instant};

use cri_api::v1::{ImageSpec, PullImageRequest};
use crius_tests::harness::{Criusd, Options};
use crius_tests::image::busybox;
use crius_tests::registry::GatedRegistry;

fn request(reference: &str) -> PullImageRequest {
    PullImageRequest {
        image: Some(ImageSpec {
            image: reference.into(),
            ..ImageSpec::default()
        }),
        auth: None,
        sandbox_config: None,
    }
}

/// Waits up to `limit` for `done`.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

#[tokio::test]
async fn a_stalled_pull_fails_after_the_progress_timeout_and_the_next_one_resumes() {
    let image = busybox().expect("image");
    let layer = image.layers[0].digest().to_owned();
    let size = image.layers[0].blob().len();
    let registry = GatedRegistry::start(&image, "crius/stall", "1", &layer).expect("registry");
    let mut daemon = Criusd::start_with(Options {
        config: format!(
            "insecure_registries = [\"{}\"]\npull_progress_timeout = \"2s\"\n",
            registry.host()
        ),
        ..Options::default()
    })
    .await
    .expect("criusd");
    let reference = format!("{}/crius/stall:1", registry.host());

    let started = Instant::now();
    let err = daemon
        .images
        .pull_image(request(&reference))
        .await
        .expect_err("the stalled pull fails");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("pull_progress_timeout"), "{err}");
    assert!(
        err.message()
            .contains(&format!("after {} of {size} bytes", size / 2)),
        "the half received is counted: {err}"
    );
    assert!(took < Duration::from_secs(30), "failed after {took:?}");
    assert_eq!(registry.gated_requests(), [""], "one plain GET so far");

    // The gate stays shut: only a request for the rest can succeed.
    daemon
        .images
        .pull_image(request(&reference))
        .await
        .expect("the next pull resumes");
    assert_eq!(
        registry.gated_requests(),
        ["".to_owned(), format!("bytes={}-", size / 2)],
        "the second pull asked only for the bytes it lacked"
    );
}

#[tokio::test]
async fn a_pull_stops_when_its_last_caller_hangs_up_and_not_before() {
    let image = busybox().expect("image");
    let layer = image.layers[0].digest().to_owned();
    let size = image.layers[0].blob().len();
    let registry = GatedRegistry::start(&image, "crius/shared", "1", &layer).expect("registry");
    let daemon = Criusd::start_with(Options {
        config: format!(
            "insecure_registries = [\"{}\"]\npull_progress_timeout = \"0\"\n",
            registry.host()
        ),
        ..Options::default()
    })
    .await
    .expect("criusd");
    let reference = format!("{}/crius/shared:1", registry.host());

    // Two callers of the same pull; the first has a deadline, the second hangs up later.
    let mut first_client = daemon.images.clone();
    let mut with_deadline = tonic::Request::new(request(&reference));
    with_deadline.set_timeout(Duration::from_secs(2));
    let first = tokio::spawn(async move { first_client.pull_image(with_deadline).await });
    let started = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || registry.gated_requests().len()
            == 1)
        .await,
        "the layer download began"
    );
    let mut second_client = daemon.images.clone();
    let second_reference = reference.clone();
    let second =
        tokio::spawn(async move { second_client.pull_image(request(&second_reference)).await });

    // The first caller's deadline passes: the second still waits, so the transfer goes on.
    let first = first.await.expect("join").expect_err("deadline");
    assert!(
        matches!(
            first.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{first}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(registry.abandoned(), 0, "the transfer outlived one caller");
    assert_eq!(registry.gated_requests().len(), 1, "one transfer for both");

    // The second hangs up: now nobody waits and the transfer stops.
    second.abort();
    assert!(second.await.is_err(), "aborted");
    assert!(
        wait_until(Duration::from_secs(10), || registry.abandoned() == 1).await,
        "the transfer stopped once its last caller left"
    );

    // What it received is kept: a new pull asks for the rest only.
    let mut client = daemon.images.clone();
    client
        .pull_image(request(&reference))
        .await
        .expect("pull after the cancel");
    assert_eq!(
        registry.gated_requests(),
        ["".to_owned(), format!("bytes={}-", size / 2)]
    );
}

#[tokio::test]
async fn a_layer_is_unpacked_while_it_downloads() {
    let image = busybox().expect("image");
    let layer = image.layers[0].digest().to_owned();
    let registry = GatedRegistry::start(&image, "crius/stream", "1", &layer).expect("registry");
    let daemon = Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{}\"]\n", registry.host()),
        ..Options::default()
    })
    .await
    .expect("criusd");
    let reference = format!("{}/crius/stream:1", registry.host());
    let mut client = daemon.images.clone();
    let pull = tokio::spawn(async move { client.pull_image(request(&reference)).await });

    // Half the layer has arrived and the rest is held back: its first entries are already
    // in the layer's unpack directory.
    let tmp = daemon.paths.root.join("image-tmp");
    let unpacked = || {
        std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("layer-"))
            .any(|e| std::fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_some()))
    };
    assert!(
        wait_until(Duration::from_secs(20), unpacked).await,
        "entries appear before the download ends"
    );
    assert!(!pull.is_finished(), "the download is still held");
    registry.open_gate();
    pull.await
        .expect("join")
        .expect("the pull ends once the rest arrives");
}

/// A flood of pulls that all stall: more layer downloads wait halfway than criusd has threads
/// for blocking work (64). Every unpack holds such a thread while it waits for its download,
/// and a download needs one to write its blob, so unbounded unpacks would take them all and
/// no pull could ever finish. Once the registry lets the rest go, every pull completes and
/// the daemon answers.
#[tokio::test]
async fn a_flood_of_stalled_pulls_finishes_once_the_registry_answers() {
    use crius_tests::image::{Compression, Entry, Image, Layer};
    const PULLS: usize = 96;
    let images: Vec<Image> = (0..PULLS)
        .map(|i| {
            // Distinct content: every image has its own layer (no download is shared).
            let data = format!("image {i}\n").repeat(4096);
            let layer =
                Layer::new(&[Entry::file("data", data, 0o644)], Compression::Gzip).expect("layer");
            Image::new(vec![layer])
        })
        .collect();
    let repos: Vec<String> = (0..PULLS).map(|i| format!("crius/flood{i}")).collect();
    let served: Vec<(&Image, &str, &str)> = images
        .iter()
        .zip(&repos)
        .map(|(image, repo)| (image, repo.as_str(), "1"))
        .collect();
    let registry = GatedRegistry::start_all_gated(&served).expect("registry");
    let daemon = Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{}\"]\n", registry.host()),
        ..Options::default()
    })
    .await
    .expect("criusd");
    let mut pulls = tokio::task::JoinSet::new();
    for repo in &repos {
        let mut client = daemon.images.clone();
        let reference = format!("{}/{repo}:1", registry.host());
        pulls.spawn(async move { client.pull_image(request(&reference)).await });
    }
    // Downloads have started and are held halfway.
    assert!(
        wait_until(Duration::from_secs(60), || !registry
            .gated_requests()
            .is_empty())
        .await,
        "no download reached the registry"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = registry.gated_requests().len();
    registry.open_gate();
    let all = async {
        let mut done = 0;
        while let Some(joined) = pulls.join_next().await {
            joined.expect("join").expect("every pull succeeds");
            done += 1;
        }
        done
    };
    let done = tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("every pull ends once the registry answers (none hangs)");
    assert_eq!(done, PULLS);
    let mut client = daemon.images.clone();
    let listed = client
        .list_images(cri_api::v1::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(listed.len(), PULLS, "every image is recorded");
    eprintln!("{held} downloads were held at once before the registry answered");
}
