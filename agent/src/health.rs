//! Liveness and readiness, served on `/livez` and `/readyz`.
//!
//! Ready: the datastore caches have synced, endpoint records are loaded and
//! the first dataplane pass (with its mark and sweep) has run. Live: the
//! dataplane loop has turned within [`LIVENESS_WINDOW`].

use crate::http::Answer;
use hyper::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the dataplane loop may go without turning before the agent is not live.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    ready: AtomicBool,
    /// Milliseconds since `start` of the dataplane loop's last turn.
    heartbeat_ms: AtomicU64,
    reason: std::sync::Mutex<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub fn new() -> Health {
        Health {
            inner: Arc::new(Inner {
                start: Instant::now(),
                ready: AtomicBool::new(false),
                heartbeat_ms: AtomicU64::new(0),
                reason: std::sync::Mutex::new("starting".into()),
            }),
        }
    }

    pub fn set_ready(&self, ready: bool, reason: &str) {
        self.inner.ready.store(ready, Ordering::SeqCst);
        if let Ok(mut r) = self.inner.reason.lock() {
            *r = reason.to_string();
        }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    pub fn reason(&self) -> String {
        self.inner
            .reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub fn heartbeat(&self) {
        let ms = self.inner.start.elapsed().as_millis() as u64;
        self.inner.heartbeat_ms.store(ms, Ordering::SeqCst);
    }

    pub fn is_live(&self) -> bool {
        let now = self.inner.start.elapsed().as_millis() as u64;
        let last = self.inner.heartbeat_ms.load(Ordering::SeqCst);
        now.saturating_sub(last) < LIVENESS_WINDOW.as_millis() as u64
    }

    pub fn answer(&self, path: &str) -> Answer {
        match path {
            "/livez" | "/liveness" if self.is_live() => Answer::text(StatusCode::OK, "ok\n"),
            "/livez" | "/liveness" => {
                Answer::text(StatusCode::SERVICE_UNAVAILABLE, "dataplane loop stalled\n")
            }
            "/readyz" | "/readiness" if self.is_ready() => Answer::text(StatusCode::OK, "ok\n"),
            "/readyz" | "/readiness" => Answer::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", self.reason()),
            ),
            _ => Answer::text(StatusCode::NOT_FOUND, "try /livez or /readyz\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_and_liveness_answers() {
        let h = Health::new();
        h.heartbeat();
        assert_eq!(h.answer("/livez").status, StatusCode::OK);
        let a = h.answer("/readyz");
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(a.body.contains("starting"));
        h.set_ready(true, "synced");
        assert_eq!(h.answer("/readyz").status, StatusCode::OK);
        assert_eq!(h.answer("/nope").status, StatusCode::NOT_FOUND);
    }
}
