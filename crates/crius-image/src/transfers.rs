//! Pulls in flight. Identical pulls (same reference, same credentials) share one transfer;
//! a transfer runs in its own task and stops when the last caller waiting for it goes away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use crate::{ImageError, ImageRecord};

/// What a finished transfer gives every caller.
type Outcome = Option<Result<ImageRecord, Arc<ImageError>>>;

/// The pulls in flight, by key.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    flights: Mutex<HashMap<String, Flight>>,
}

/// One transfer and the callers waiting for it.
#[derive(Debug)]
struct Flight {
    /// Tells this flight from a later one of the same key.
    id: u64,
    /// Callers waiting.
    waiters: usize,
    /// Where the outcome appears.
    outcome: tokio::sync::watch::Receiver<Outcome>,
    /// Stops the transfer.
    abort: tokio::task::AbortHandle,
}

/// A caller's place in a flight: leaving before the outcome may stop the transfer.
struct Waiter<'a> {
    transfers: &'a Transfers,
    key: &'a str,
    id: u64,
    done: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut flights = self.transfers.lock();
        let Some(flight) = flights.get_mut(self.key).filter(|f| f.id == self.id) else {
            return;
        };
        flight.waiters -= 1;
        if flight.waiters == 0 {
            tracing::info!(pull = %self.key.split('\0').next().unwrap_or_default(),
                "pull cancelled: no caller waits for it any more");
            flight.abort.abort();
            flights.remove(self.key);
        }
    }
}

impl Transfers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many transfers are in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Waits for the transfer of `key`, starting it with `start` when none is in flight.
    pub(crate) async fn join<F>(
        self: &Arc<Self>,
        key: &str,
        start: impl FnOnce() -> F,
    ) -> Result<ImageRecord, ImageError>
    where
        F: Future<Output = Result<ImageRecord, ImageError>> + Send + 'static,
    {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (mut outcome, id) = {
            let mut flights = self.lock();
            match flights.get_mut(key) {
                Some(flight) => {
                    flight.waiters += 1;
                    tracing::debug!("joining a pull in flight");
                    (flight.outcome.clone(), flight.id)
                }
                None => {
                    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                    let (sender, outcome) = tokio::sync::watch::channel(None);
                    let work = start();
                    let this = self.clone();
                    let owned_key = key.to_owned();
                    let task = tokio::spawn(async move {
                        let result = work.await.map_err(Arc::new);
                        {
                            let mut flights = this.lock();
                            if flights.get(&owned_key).is_some_and(|f| f.id == id) {
                                flights.remove(&owned_key);
                            }
                        }
                        let _ = sender.send(Some(result));
                    });
                    flights.insert(
                        key.to_owned(),
                        Flight {
                            id,
                            waiters: 1,
                            outcome: outcome.clone(),
                            abort: task.abort_handle(),
                        },
                    );
                    (outcome, id)
                }
            }
        };
        let mut waiter = Waiter {
            transfers: self,
            key,
            id,
            done: false,
        };
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        waiter.done = true;
        match result {
            Some(Ok(record)) => Ok(record),
            Some(Err(e)) => Err(ImageError::Shared(e)),
            None => Err(ImageError::Io {
                context: "pull task".into(),
                source: std::io::Error::other("the pull ended without an outcome"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            manifest_digest: String::new(),
            manifest_media_type: String::new(),
            layers: Vec::new(),
            size: 0,
            config: crate::ImageConfig::default(),
            created_ns: 0,
        }
    }

    #[tokio::test]
    async fn identical_pulls_share_one_transfer() {
        let transfers = Arc::new(Transfers::default());
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (open, gate) = tokio::sync::watch::channel(false);
        let start = || {
            started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok(record("sha256:1"))
            }
        };
        let (a, b, ()) = tokio::join!(
            transfers.join("k", start),
            transfers.join("k", start),
            async {
                tokio::task::yield_now().await;
                let _ = open.send(true);
            }
        );
        assert_eq!(a.expect("a").id, "sha256:1");
        assert_eq!(b.expect("b").id, "sha256:1");
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(transfers.len(), 0);
    }

    #[tokio::test]
    async fn a_transfer_stops_when_its_last_caller_leaves() {
        let transfers = Arc::new(Transfers::default());
        let (dropped, mut seen) = tokio::sync::mpsc::channel::<()>(1);
        let start = || async move {
            // Stands for a download: ends only when aborted, and says so when dropped.
            struct Tell(tokio::sync::mpsc::Sender<()>);
            impl Drop for Tell {
                fn drop(&mut self) {
                    let _ = self.0.try_send(());
                }
            }
            let _tell = Tell(dropped);
            std::future::pending::<()>().await;
            Ok(record("never"))
        };
        let first = transfers.join("k", start);
        let second = transfers.join("k", || async { Ok(record("unused")) });
        // Both callers give up; the first leaving does not stop it, the second does.
        let left = tokio::time::timeout(std::time::Duration::from_millis(50), async {
            tokio::join!(first, second)
        })
        .await;
        assert!(left.is_err(), "nobody finished");
        tokio::time::timeout(std::time::Duration::from_secs(5), seen.recv())
            .await
            .expect("the transfer was stopped");
        assert_eq!(transfers.len(), 0);
        let failed = transfers
            .join("k", || async {
                Err(ImageError::NotFound {
                    reference: "bad".into(),
                })
            })
            .await
            .expect_err("fails");
        assert_eq!(
            failed.to_string(),
            "image \"bad\" not found in the image store"
        );
    }
}
