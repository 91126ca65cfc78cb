//! Single-use, expiring tokens naming cached streaming requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::RequestError;

/// Random bytes in a token (128 bits).
const TOKEN_BYTES: usize = 16;
/// Length of a token in the URL.
pub(crate) const TOKEN_LEN: usize = 22;

/// Requests waiting for their client, by token.
pub(crate) struct TokenStore<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
    ttl: Duration,
    max: usize,
}

impl<T> TokenStore<T> {
    /// A store whose tokens live `ttl` and of which at most `max` wait at once.
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `value` and returns its fresh token.
    pub(crate) fn insert(&self, value: T) -> Result<String, RequestError> {
        let now = Instant::now();
        let mut entries = self.lock();
        entries.retain(|_, (deadline, _)| *deadline > now);
        if entries.len() >= self.max {
            return Err(RequestError::TooManyInFlight(self.max));
        }
        loop {
            let token = random_token()?;
            if !entries.contains_key(&token) {
                entries.insert(token.clone(), (now + self.ttl, value));
                return Ok(token);
            }
        }
    }

    /// True when `token` names a live request accepted by `pred` (the request stays stored).
    pub(crate) fn peek(&self, token: &str, pred: impl FnOnce(&T) -> bool) -> bool {
        let now = Instant::now();
        match self.lock().get(token) {
            Some((deadline, value)) => *deadline > now && pred(value),
            None => false,
        }
    }

    /// Removes and returns the live request named by `token`; it can never be used again.
    pub(crate) fn consume(&self, token: &str) -> Option<T> {
        let now = Instant::now();
        let (deadline, value) = self.lock().remove(token)?;
        (deadline > now).then_some(value)
    }
}

/// 128 random bits from the kernel, URL-safe base64 without padding.
fn random_token() -> Result<String, RequestError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|source| RequestError::NoRandomness { source })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// True when `s` has the shape of a token (checked before any lookup).
pub(crate) fn well_formed(s: &str) -> bool {
    s.len() == TOKEN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_unique_and_expire() {
        let store = TokenStore::new(Duration::from_millis(50), 3);
        let a = store.insert(1).expect("insert");
        let b = store.insert(2).expect("insert");
        assert_ne!(a, b);
        assert!(well_formed(&a));
        assert!(store.peek(&a, |v| *v == 1));
        assert_eq!(store.consume(&a), Some(1));
        assert_eq!(store.consume(&a), None);
        store.insert(3).expect("insert");
        store.insert(4).expect("insert");
        assert_eq!(store.insert(5), Err(RequestError::TooManyInFlight(3)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(store.consume(&b), None);
        store.insert(6).expect("expired entries make room");
    }
}
