//! GetContainerEvents end to end: a real criusd and busybox containers; the event stream must
//! carry CREATED, STARTED, STOPPED and DELETED in order, with the pod's sandbox status and the
//! container statuses, for a container that is stopped and for one that exits by itself; and a
//! subscriber that never reads must not hold up container operations.

use std::time::Duration;

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use crius_tests::env::{Env, setup};
use hyper_util::rt::TokioIo;
use tonic::Streaming;
use tonic::transport::{Endpoint, Uri};

/// How long an expected event may take before the test gives up (a safety net, not a measure).
const PATIENCE: Duration = Duration::from_secs(60);

const CREATED: i32 = ContainerEventType::ContainerCreatedEvent as i32;
const STARTED: i32 = ContainerEventType::ContainerStartedEvent as i32;
const STOPPED: i32 = ContainerEventType::ContainerStoppedEvent as i32;
const DELETED: i32 = ContainerEventType::ContainerDeletedEvent as i32;

async fn subscribe(env: &mut Env) -> Streaming<ContainerEventResponse> {
    env.daemon
        .runtime
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// Reads events until one for `id` of type `kind` arrives; returns everything read.
async fn until(
    stream: &mut Streaming<ContainerEventResponse>,
    id: &str,
    kind: i32,
) -> Vec<ContainerEventResponse> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap_or_else(|_| panic!("no event {kind} for {id}; saw {}", summary(&seen)))
            .expect("event stream")
            .expect("the event stream ended");
        let done = event.container_id == id && event.container_event_type == kind;
        seen.push(event);
        if done {
            return seen;
        }
    }
}

fn summary(events: &[ContainerEventResponse]) -> String {
    events
        .iter()
        .map(|e| format!("{}:{}", &e.container_id[..8], e.container_event_type))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The event types for `id`, in stream order.
fn kinds(events: &[ContainerEventResponse], id: &str) -> Vec<i32> {
    events
        .iter()
        .filter(|e| e.container_id == id)
        .map(|e| e.container_event_type)
        .collect()
}

async fn stop(env: &mut Env, id: &str) {
    env.daemon
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout: 10,
        })
        .await
        .expect("stop");
}

async fn remove(env: &mut Env, id: &str) {
    env.daemon
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .await
        .expect("remove");
}

#[tokio::test]
async fn events_follow_stopped_and_self_exiting_containers_in_order() {
    let mut env = setup(false).await;
    let mut stream = subscribe(&mut env).await;
    let pod = env.pod("events", false).await;
    let mut seen = until(&mut stream, &pod.0, STARTED).await;

    // Stopped by StopContainer (the shell leaves on SIGTERM).
    let stopped = env
        .run(
            &pod,
            env.container_config("stopped", "trap 'exit 0' TERM; sleep 1000 & wait"),
        )
        .await;
    seen.extend(until(&mut stream, &stopped, STARTED).await);
    stop(&mut env, &stopped).await;
    seen.extend(until(&mut stream, &stopped, STOPPED).await);
    remove(&mut env, &stopped).await;
    seen.extend(until(&mut stream, &stopped, DELETED).await);

    // Exits by itself, with nobody asking about it: only the pod monitor's record says so.
    let exits = env
        .run(&pod, env.container_config("exits", "sleep 1; exit 7"))
        .await;
    let stop_event = until(&mut stream, &exits, STOPPED).await;
    let last = stop_event.last().expect("event").clone();
    seen.extend(stop_event);
    let sandbox = last.pod_sandbox_status.as_ref().expect("sandbox status");
    assert_eq!(sandbox.id, pod.0);
    assert_eq!(
        sandbox.metadata.as_ref().expect("metadata").uid,
        "uid-events",
        "Evented PLEG keys its cache by the pod uid"
    );
    assert_eq!(sandbox.state, PodSandboxState::SandboxReady as i32);
    let status = last
        .containers_statuses
        .iter()
        .find(|s| s.id == exits)
        .expect("the exited container's status");
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 7);
    assert!(status.finished_at > 0 && last.created_at >= status.finished_at);
    remove(&mut env, &exits).await;
    seen.extend(until(&mut stream, &exits, DELETED).await);

    // The pod goes: its sandbox stops and is deleted.
    env.daemon
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("stop pod");
    env.daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .expect("remove pod");
    seen.extend(until(&mut stream, &pod.0, DELETED).await);

    let life = vec![CREATED, STARTED, STOPPED, DELETED];
    assert_eq!(kinds(&seen, &stopped), life, "{}", summary(&seen));
    assert_eq!(kinds(&seen, &exits), life, "{}", summary(&seen));
    assert_eq!(kinds(&seen, &pod.0), life, "{}", summary(&seen));
    // Every event carries the pod; a container's own events list it among the statuses
    // (except DELETED: it is gone).
    for e in &seen {
        assert_eq!(
            e.pod_sandbox_status.as_ref().map(|s| s.id.as_str()),
            Some(pod.0.as_str())
        );
        if e.container_id != pod.0 && e.container_event_type != DELETED {
            assert!(
                e.containers_statuses.iter().any(|s| s.id == e.container_id),
                "event without its container's status: {e:?}"
            );
        }
    }
}

/// A client whose HTTP/2 receive window is tiny: a stream it never reads stalls at once.
async fn stalled_client(env: &Env) -> RuntimeServiceClient<tonic::transport::Channel> {
    let socket = env.daemon.paths.socket.clone();
    let channel = Endpoint::try_from("http://[::]:50051")
        .expect("endpoint")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .expect("connect");
    RuntimeServiceClient::new(channel)
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_hold_up_containers() {
    // A ring of 4 events per subscriber: the idle one overflows within two containers.
    let mut env = crius_tests::env::setup_config(false, "events_buffer = 4\n").await;
    let mut idle = stalled_client(&env).await;
    let _never_read = idle
        .get_container_events(GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let mut reader = subscribe(&mut env).await;
    let pod = env.pod("idle-subscriber", false).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let id = env
            .run(
                &pod,
                env.container_config(&format!("c{n}"), "trap 'exit 0' TERM; sleep 1000 & wait"),
            )
            .await;
        stop(&mut env, &id).await;
        remove(&mut env, &id).await;
        // A subscriber that reads gets everything, in order.
        let seen = until(&mut reader, &id, DELETED).await;
        assert_eq!(
            kinds(&seen, &id),
            vec![CREATED, STARTED, STOPPED, DELETED],
            "{}",
            summary(&seen)
        );
        ids.push(id);
    }
    assert!(
        env.daemon.log().contains("events dropped"),
        "the idle subscriber's losses are logged"
    );
}

#[tokio::test]
async fn a_late_subscriber_gets_the_rest_of_a_life_cycle() {
    let mut env = setup(false).await;
    let pod = env.pod("late", false).await;
    // Created and started while nobody listens.
    let id = env
        .run(
            &pod,
            env.container_config("late", "trap 'exit 0' TERM; sleep 1000 & wait"),
        )
        .await;
    let mut stream = subscribe(&mut env).await;
    stop(&mut env, &id).await;
    remove(&mut env, &id).await;
    let seen = until(&mut stream, &id, DELETED).await;
    assert_eq!(
        kinds(&seen, &id),
        vec![STOPPED, DELETED],
        "{}",
        summary(&seen)
    );
}
