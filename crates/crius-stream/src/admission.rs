//! Admission of connections before they present a token.
//!
//! Anyone who can reach the streaming port can open connections, but only a client holding a
//! token from a CRI call can start a session. A connection is therefore in its handshake
//! from accept until its request names a live token; handshakes share a small pool of their
//! own, and admitting one into a full pool evicts the oldest. The connection task also
//! closes a handshake at its deadline. A connection that authenticated leaves the pool, so a
//! flood of connections that never present a token neither blocks the accept loop nor delays
//! the sessions of clients that do: it only churns among itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The handshakes in progress, oldest first; at most `capacity`.
pub(crate) struct Handshakes {
    capacity: usize,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// Admission number → the handshake's eviction signal; the first entry is the oldest.
    by_age: BTreeMap<u64, Arc<Notify>>,
}

/// One connection's handshake, from accept until it authenticates or closes. Dropping it
/// gives its place in the pool back.
pub(crate) struct Handshake {
    id: u64,
    pool: Arc<Handshakes>,
    evicted: Arc<Notify>,
    authenticated: AtomicBool,
}

/// The result of admitting a connection.
pub(crate) struct Admission {
    /// The new connection's handshake.
    pub(crate) handshake: Arc<Handshake>,
    /// True when the oldest handshake was evicted to make room.
    pub(crate) evicted_oldest: bool,
}

impl Handshakes {
    /// A pool of at most `capacity` handshakes (at least one).
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            waiting: Mutex::new(Waiting::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection, evicting the oldest handshake if the pool is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        let evicted = Arc::new(Notify::new());
        let mut waiting = self.lock();
        let mut evicted_oldest = false;
        while waiting.by_age.len() >= self.capacity {
            let Some((_, oldest)) = waiting.by_age.pop_first() else {
                break;
            };
            // Stored as a permit if the connection's task is not waiting yet.
            oldest.notify_one();
            evicted_oldest = true;
        }
        let id = waiting.next_id;
        waiting.next_id += 1;
        waiting.by_age.insert(id, evicted.clone());
        drop(waiting);
        Admission {
            handshake: Arc::new(Handshake {
                id,
                pool: self.clone(),
                evicted,
                authenticated: AtomicBool::new(false),
            }),
            evicted_oldest,
        }
    }

    /// Handshakes in progress.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().by_age.len()
    }
}

impl Handshake {
    /// Takes the connection out of the pool because its request named a live token: it can
    /// no longer be evicted and its deadline no longer applies. False when it was already
    /// evicted (the connection is being closed).
    pub(crate) fn authenticate(&self) -> bool {
        let left = self.pool.lock().by_age.remove(&self.id).is_some();
        if left {
            self.authenticated.store(true, Ordering::Release);
        }
        left
    }

    /// True once [`Handshake::authenticate`] succeeded.
    pub(crate) fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    /// Resolves when the handshake is evicted to make room for a newer one.
    pub(crate) async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.pool.lock().by_age.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn evicted(h: &Handshake) -> bool {
        h.evicted().now_or_never().is_some()
    }

    #[test]
    fn a_full_pool_evicts_its_oldest_handshakes_first() {
        let pool = Handshakes::new(2);
        let a = pool.admit();
        let b = pool.admit();
        assert!(!a.evicted_oldest && !b.evicted_oldest);
        assert_eq!(pool.len(), 2);
        let c = pool.admit();
        assert!(c.evicted_oldest);
        assert!(evicted(&a.handshake));
        assert!(!evicted(&b.handshake));
        assert_eq!(pool.len(), 2);
        let d = pool.admit();
        assert!(evicted(&b.handshake));
        assert!(!evicted(&c.handshake) && !evicted(&d.handshake));
        // An evicted handshake cannot authenticate any more.
        assert!(!a.handshake.authenticate());
        assert!(!a.handshake.is_authenticated());
    }

    #[test]
    fn authenticated_handshakes_leave_the_pool_and_are_never_evicted() {
        let pool = Handshakes::new(2);
        let a = pool.admit();
        let b = pool.admit();
        assert!(a.handshake.authenticate());
        assert!(a.handshake.is_authenticated());
        assert_eq!(pool.len(), 1);
        let c = pool.admit();
        assert!(!c.evicted_oldest, "there was room");
        let d = pool.admit();
        assert!(d.evicted_oldest);
        assert!(!evicted(&a.handshake));
        assert!(evicted(&b.handshake));
        assert!(!evicted(&c.handshake));
    }

    #[test]
    fn closed_connections_give_their_place_back() {
        let pool = Handshakes::new(2);
        let a = pool.admit();
        let b = pool.admit();
        drop(a);
        assert_eq!(pool.len(), 1);
        let c = pool.admit();
        assert!(!c.evicted_oldest);
        assert!(!evicted(&b.handshake));
        drop((b, c));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn a_pool_holds_at_least_one() {
        let pool = Handshakes::new(0);
        let a = pool.admit();
        assert!(!a.evicted_oldest);
        assert!(pool.admit().evicted_oldest);
        assert!(evicted(&a.handshake));
    }
}
