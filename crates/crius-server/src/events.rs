//! GetContainerEvents: CONTAINER_CREATED / STARTED / STOPPED / DELETED events for containers and
//! pod sandboxes, each carrying the pod's sandbox status and the statuses of all its containers
//! (what kubelet's Evented PLEG puts in its pod cache).
//!
//! RPC handlers report what they did; exits nobody asked for (a container whose process ends by
//! itself, a sandbox that dies) come from crius-runtime's watch of the monitors' state files
//! (`Pods::watch_states`): each new `state.json` makes crius look at that pod's containers again.
//!
//! Events go to subscribers through a bounded broadcast ring: a subscriber that does not keep up
//! loses its oldest events (counted and logged), and nothing that emits ever waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cri_api::v1::{ContainerEventResponse, ContainerEventType, ContainerStatus};
use crius_runtime::{ContainerStateKind, Pods};
use tokio::sync::broadcast;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::BoxStream;

/// The fan-out of events to subscribers: bounded, never blocking the sender.
#[derive(Debug)]
pub(crate) struct Hub {
    sender: broadcast::Sender<ContainerEventResponse>,
    capacity: usize,
    dropped: AtomicU64,
}

impl Hub {
    /// A hub keeping at most `capacity` events for a subscriber that falls behind.
    pub(crate) fn new(capacity: usize) -> Hub {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        Hub {
            sender,
            capacity,
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether anyone listens: without subscribers no event is built at all.
    fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Sends an event to every subscriber (none is fine). When the ring is full, the oldest
    /// event is dropped for whoever has not read it yet: counted, and logged at 1, 2, 4, …
    fn send(&self, event: ContainerEventResponse) {
        if self.sender.receiver_count() > 0 && self.sender.len() >= self.capacity {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if total.is_power_of_two() {
                tracing::warn!(
                    total,
                    "a GetContainerEvents subscriber fell behind: events dropped for it"
                );
            }
        }
        // An error only means there is no subscriber.
        let _ = self.sender.send(event);
    }

    /// Events subscribers lost because they fell behind, since the daemon started.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A stream of the events sent from now on.
    pub(crate) fn subscribe(&self) -> BoxStream<ContainerEventResponse> {
        let stream = BroadcastStream::new(self.sender.subscribe()).filter_map(|item| match item {
            Ok(event) => Some(Ok(event)),
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::debug!(
                    lost = n,
                    "a GetContainerEvents subscriber skips lost events"
                );
                None
            }
        });
        Box::pin(stream)
    }
}

/// The container events of this daemon.
#[derive(Debug)]
pub(crate) struct Events {
    pods: Arc<Pods>,
    hub: Hub,
    /// Where each container and sandbox is in its life cycle, as last reported: events
    /// follow the life cycle order, whoever notices a change first.
    last: Mutex<HashMap<String, Last>>,
}

/// The last event of a container or sandbox, and its pod.
#[derive(Debug, Clone)]
struct Last {
    kind: ContainerEventType,
    pod: String,
}

/// What a removal reports once it succeeded: events built while the statuses could still be
/// read, and the ids to forget.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    events: Vec<ContainerEventResponse>,
    /// A removed container.
    container: Option<String>,
    /// A removed pod: it and all its containers.
    pod: Option<String>,
}

/// Whether `next` follows `last` in a life cycle (created, started, stopped, deleted).
fn follows(last: Option<ContainerEventType>, next: ContainerEventType) -> bool {
    use ContainerEventType as T;
    match next {
        T::ContainerCreatedEvent => last.is_none(),
        T::ContainerStartedEvent => last == Some(T::ContainerCreatedEvent),
        T::ContainerStoppedEvent => last == Some(T::ContainerStartedEvent),
        T::ContainerDeletedEvent => last != Some(T::ContainerDeletedEvent),
    }
}

impl Events {
    /// The events of `pods`; what exists now counts as already reported.
    pub(crate) fn new(pods: Arc<Pods>, capacity: usize) -> Events {
        use ContainerEventType as T;
        let mut last = HashMap::new();
        if let Ok(list) = pods.list() {
            for p in list {
                let kind = if p.ready {
                    T::ContainerStartedEvent
                } else {
                    T::ContainerStoppedEvent
                };
                let pod = p.record.id.clone();
                last.insert(p.record.id.clone(), Last { kind, pod });
            }
        }
        if let Ok(list) = pods.list_containers() {
            for c in list {
                let kind = match c.state {
                    ContainerStateKind::Created => T::ContainerCreatedEvent,
                    ContainerStateKind::Running => T::ContainerStartedEvent,
                    ContainerStateKind::Exited | ContainerStateKind::Unknown => {
                        T::ContainerStoppedEvent
                    }
                };
                let pod = c.record.pod_id.clone();
                last.insert(c.record.id.clone(), Last { kind, pod });
            }
        }
        Events {
            pods,
            hub: Hub::new(capacity),
            last: Mutex::new(last),
        }
    }

    /// A stream of the events from now on.
    pub(crate) fn subscribe(&self) -> BoxStream<ContainerEventResponse> {
        self.hub.subscribe()
    }

    /// Events subscribers lost because they fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.hub.dropped()
    }

    /// The sandbox status of pod `pod_id` and the statuses of its containers (all of them, or
    /// all but `without`).
    fn pod_statuses(
        &self,
        pod_id: &str,
        without: Option<&str>,
    ) -> Option<(cri_api::v1::PodSandboxStatus, Vec<ContainerStatus>)> {
        let pod = self.pods.get(pod_id).ok()?;
        let containers = self
            .pods
            .list_containers()
            .unwrap_or_default()
            .iter()
            .filter(|c| c.record.pod_id == pod.record.id && Some(c.record.id.as_str()) != without)
            .map(crate::containers::status_of)
            .collect();
        Some((crate::pods::sandbox_status(&pod), containers))
    }

    fn event(
        &self,
        id: &str,
        kind: ContainerEventType,
        pod_id: &str,
        without: Option<&str>,
    ) -> Option<ContainerEventResponse> {
        let (sandbox, statuses) = self.pod_statuses(pod_id, without)?;
        Some(ContainerEventResponse {
            container_id: id.to_owned(),
            container_event_type: kind.into(),
            created_at: crius_runtime::now_ns(),
            pod_sandbox_status: Some(sandbox),
            containers_statuses: statuses,
        })
    }

    /// Sends `kind` for `id` (a container of pod `pod_id`, or the pod itself) unless it would
    /// break the life cycle order or was already sent.
    fn emit(&self, id: &str, pod_id: &str, kind: ContainerEventType) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if !follows(last.get(id).map(|l| l.kind), kind) {
            return;
        }
        if self.hub.has_subscribers() {
            let Some(event) = self.event(id, kind, pod_id, None) else {
                return;
            };
            self.hub.send(event);
        }
        let pod = pod_id.to_owned();
        last.insert(id.to_owned(), Last { kind, pod });
    }

    /// A container was created (`id` is its full id).
    pub(crate) fn container_created(&self, id: &str) {
        if let Ok(c) = self.pods.get_container(id) {
            self.emit(
                &c.record.id,
                &c.record.pod_id,
                ContainerEventType::ContainerCreatedEvent,
            );
        }
    }

    /// A container was started; if it already ended, its stop follows.
    pub(crate) fn container_started(&self, id: &str) {
        if let Ok(c) = self.pods.get_container(id) {
            self.emit(
                &c.record.id,
                &c.record.pod_id,
                ContainerEventType::ContainerStartedEvent,
            );
            self.check_pod(&c.record.pod_id);
        }
    }

    /// StopContainer returned: the container has ended, unless it was never started.
    pub(crate) fn container_stopped(&self, id: &str) {
        if let Ok(c) = self.pods.get_container(id) {
            self.check_pod(&c.record.pod_id);
        }
    }

    /// Builds the DELETED event of container `id` before it is removed.
    pub(crate) fn before_container_removal(&self, id: &str) -> Pending {
        let Ok(c) = self.pods.get_container(id) else {
            return Pending::default();
        };
        // An end nobody reported yet comes first.
        self.check_pod(&c.record.pod_id);
        let event = if self.hub.has_subscribers() {
            self.event(
                &c.record.id,
                ContainerEventType::ContainerDeletedEvent,
                &c.record.pod_id,
                Some(&c.record.id),
            )
        } else {
            None
        };
        Pending {
            events: event.into_iter().collect(),
            container: Some(c.record.id.clone()),
            pod: None,
        }
    }

    /// A pod sandbox was created and runs.
    pub(crate) fn sandbox_started(&self, id: &str) {
        self.emit(id, id, ContainerEventType::ContainerCreatedEvent);
        self.emit(id, id, ContainerEventType::ContainerStartedEvent);
    }

    /// StopPodSandbox returned: the sandbox and its containers have ended.
    pub(crate) fn sandbox_stopped(&self, id: &str) {
        if let Ok(p) = self.pods.get(id) {
            self.check_pod(&p.record.id);
            self.emit(
                &p.record.id,
                &p.record.id,
                ContainerEventType::ContainerStoppedEvent,
            );
        }
    }

    /// Builds the DELETED events of pod `id` and its containers before the pod is removed.
    pub(crate) fn before_sandbox_removal(&self, id: &str) -> Pending {
        let Ok(pod) = self.pods.get(id) else {
            return Pending::default();
        };
        let forget = Pending {
            pod: Some(pod.record.id.clone()),
            ..Pending::default()
        };
        if !self.hub.has_subscribers() {
            return forget;
        }
        self.check_pod(&pod.record.id);
        let Some((sandbox, statuses)) = self.pod_statuses(&pod.record.id, None) else {
            return forget;
        };
        let at = crius_runtime::now_ns();
        let deleted = |container_id: &str, statuses: Vec<ContainerStatus>| ContainerEventResponse {
            container_id: container_id.to_owned(),
            container_event_type: ContainerEventType::ContainerDeletedEvent.into(),
            created_at: at,
            pod_sandbox_status: Some(sandbox.clone()),
            containers_statuses: statuses,
        };
        let mut events: Vec<ContainerEventResponse> = statuses
            .iter()
            .map(|s| {
                deleted(
                    &s.id,
                    statuses.iter().filter(|o| o.id != s.id).cloned().collect(),
                )
            })
            .collect();
        events.push(deleted(&sandbox.id, Vec::new()));
        Pending { events, ..forget }
    }

    /// Sends the events built before a removal that succeeded.
    pub(crate) fn removed(&self, pending: Pending) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for event in pending.events {
            self.hub.send(event);
        }
        if let Some(id) = pending.container {
            last.remove(&id);
        }
        if let Some(pod) = pending.pod {
            last.retain(|_, l| l.pod != pod);
        }
    }

    /// Looks at the containers of pod `pod_id` (full id) and reports those that ended.
    pub(crate) fn check_pod(&self, pod_id: &str) {
        // Without subscribers the life cycle is tracked by the calls alone: listing every
        // container on each state change would cost for nothing.
        if !self.hub.has_subscribers() {
            return;
        }
        let Ok(list) = self.pods.list_containers() else {
            return;
        };
        for c in list.iter().filter(|c| c.record.pod_id == pod_id) {
            if matches!(
                c.state,
                ContainerStateKind::Exited | ContainerStateKind::Unknown
            ) {
                self.emit(
                    &c.record.id,
                    pod_id,
                    ContainerEventType::ContainerStoppedEvent,
                );
            }
        }
        if let Ok(p) = self.pods.get(pod_id)
            && !p.ready
            && p.record.id == pod_id
        {
            self.emit(pod_id, pod_id, ContainerEventType::ContainerStoppedEvent);
        }
    }

    /// Looks at a pod's containers again whenever its monitor records a change (exits nobody
    /// asked for: a container whose process ends by itself, a sandbox that dies).
    pub(crate) fn watch(self: &Arc<Self>) {
        let events = self.clone();
        self.pods
            .watch_states(move |pod_id| events.check_pod(pod_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> ContainerEventResponse {
        ContainerEventResponse {
            container_id: n.to_string(),
            created_at: n,
            ..ContainerEventResponse::default()
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_old_events_and_never_blocks() {
        let hub = Hub::new(4);
        let mut slow = hub.subscribe();
        // Far more than the ring holds; sending never waits for the subscriber.
        for n in 0..100 {
            hub.send(event(n));
        }
        assert_eq!(hub.dropped(), 96);
        // Without a sender the stream ends after what it still holds.
        drop(hub);
        let mut got = Vec::new();
        while let Some(item) = slow.next().await {
            got.push(item.map(|e| e.created_at).unwrap_or(-1));
        }
        assert_eq!(got, vec![96, 97, 98, 99]);
    }

    #[test]
    fn life_cycle_order() {
        use ContainerEventType as T;
        assert!(follows(None, T::ContainerCreatedEvent));
        assert!(!follows(None, T::ContainerStoppedEvent));
        assert!(follows(
            Some(T::ContainerCreatedEvent),
            T::ContainerStartedEvent
        ));
        assert!(!follows(
            Some(T::ContainerStartedEvent),
            T::ContainerStartedEvent
        ));
        assert!(follows(
            Some(T::ContainerStartedEvent),
            T::ContainerStoppedEvent
        ));
        assert!(!follows(
            Some(T::ContainerStoppedEvent),
            T::ContainerStoppedEvent
        ));
        assert!(follows(
            Some(T::ContainerCreatedEvent),
            T::ContainerDeletedEvent
        ));
    }
}
