//! Watch streams: which changes a watcher sees (selectors applied to the old and
//! the new object, so an object leaving the selection is a DELETED), event
//! framing (one JSON object per line, chunked), bookmarks and timeouts.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use super::resources::{ResourceDef, ResourceKey};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, ChangeKind, WatchStart, at_version};
use super::table;

/// Which objects a watcher (or list) selects.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    pub key: ResourceKey,
    pub namespace: Option<String>,
    pub label: LabelSelector,
    pub field: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.label.matches_object(obj) && self.field.matches(obj)
    }

    /// The event type this watcher gets for `c`, if any.
    pub fn classify(&self, c: &Change) -> Option<&'static str> {
        if c.key != self.key || self.namespace.as_ref().is_some_and(|ns| ns != &c.namespace) {
            return None;
        }
        let now = self.matches(&c.object);
        match c.kind {
            ChangeKind::Added => now.then_some("ADDED"),
            ChangeKind::Deleted => now.then_some("DELETED"),
            ChangeKind::Modified => {
                let before = c.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some("MODIFIED"),
                    (false, true) => Some("ADDED"),
                    (true, false) => Some("DELETED"),
                    (false, false) => None,
                }
            }
        }
    }
}

/// How event objects are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// `meta.k8s.io/v1` Table rows, as `kubectl get -w` asks for.
    Table {
        include_object: table::IncludeObject,
    },
    /// `PartialObjectMetadata`, as metadata watchers ask for.
    Metadata,
}

#[derive(Debug, Clone)]
pub struct WatchParams {
    pub def: ResourceDef,
    pub filter: WatchFilter,
    pub format: Format,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial ADDED events with a bookmark.
    pub initial_events_end: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
}

fn frame(event_type: &str, object_json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object_json.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(event_type.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(object_json);
    b.put_slice(b"}\n");
    b.freeze()
}

/// The single ERROR event a watch from a too-old version gets (code 410).
pub fn error_frame(err: &ApiError) -> Bytes {
    frame(
        "ERROR",
        &serde_json::to_vec(&err.to_status()).unwrap_or_default(),
    )
}

fn render(p: &WatchParams, event_type: &str, c: &Change) -> Bytes {
    match p.format {
        Format::Json => {
            if c.object.get("apiVersion").and_then(Value::as_str)
                == Some(p.def.api_version().as_str())
            {
                frame(event_type, &c.json)
            } else {
                frame(
                    event_type,
                    &serde_json::to_vec(&at_version(&p.def, &c.object)).unwrap_or_default(),
                )
            }
        }
        Format::Metadata => frame(
            event_type,
            &serde_json::to_vec(&table::partial(&c.object)).unwrap_or_default(),
        ),
        Format::Table { include_object } => {
            let obj = at_version(&p.def, &c.object);
            let t = table::table(
                &p.def,
                std::slice::from_ref(&obj),
                json!({"resourceVersion": c.rv.to_string()}),
                include_object,
            );
            frame(event_type, &serde_json::to_vec(&t).unwrap_or_default())
        }
    }
}

fn bookmark(p: &WatchParams, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = match p.format {
        Format::Metadata => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
        }
        _ => json!({"kind": p.def.kind, "apiVersion": p.def.api_version(), "metadata": meta}),
    };
    frame("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
}

/// Streams one watch into `out` until the client goes away, the timeout passes,
/// the watcher falls too far behind, or `stop` changes (server stop / refuse).
pub async fn run(
    p: WatchParams,
    start: WatchStart,
    mut changes: broadcast::Receiver<Arc<Change>>,
    out: mpsc::Sender<Bytes>,
    mut stop: watch::Receiver<u64>,
) {
    for c in &start.initial {
        let t = if start.synthetic {
            p.filter.matches(&c.object).then_some("ADDED")
        } else {
            p.filter.classify(c)
        };
        if let Some(t) = t
            && out.send(render(&p, t, c)).await.is_err()
        {
            return;
        }
    }
    let mut last_rv = start.rv;
    if p.initial_events_end && p.bookmarks && out.send(bookmark(&p, last_rv, true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(p.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + p.bookmark_interval,
        p.bookmark_interval,
    );
    loop {
        tokio::select! {
            r = changes.recv() => match r {
                Ok(c) => {
                    last_rv = c.rv;
                    if let Some(t) = p.filter.classify(&c)
                        && out.send(render(&p, t, &c)).await.is_err() {
                            return;
                        }
                }
                // A watcher that cannot keep up is closed, as the real server
                // does; the client re-watches from its last version.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticker.tick(), if p.bookmarks => {
                if out.send(bookmark(&p, last_rv, false)).await.is_err() {
                    return;
                }
            }
            _ = &mut deadline => return,
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: ChangeKind, old: Option<Value>, new: Value) -> Change {
        Change {
            rv: 5,
            key: ResourceKey::new("", "pods"),
            namespace: "default".into(),
            name: "p".into(),
            kind,
            json: Bytes::from(serde_json::to_vec(&new).unwrap()),
            object: Arc::new(new),
            old: old.map(Arc::new),
        }
    }

    fn pod(app: &str) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": app}}})
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let f = WatchFilter {
            key: ResourceKey::new("", "pods"),
            namespace: Some("default".into()),
            label: LabelSelector::parse("app=web").unwrap(),
            field: FieldSelector::default(),
        };
        assert_eq!(
            f.classify(&change(ChangeKind::Modified, Some(pod("web")), pod("db"))),
            Some("DELETED")
        );
        assert_eq!(
            f.classify(&change(ChangeKind::Modified, Some(pod("db")), pod("web"))),
            Some("ADDED")
        );
        assert_eq!(
            f.classify(&change(ChangeKind::Modified, Some(pod("web")), pod("web"))),
            Some("MODIFIED")
        );
        assert_eq!(
            f.classify(&change(ChangeKind::Modified, Some(pod("db")), pod("db"))),
            None
        );
        assert_eq!(
            f.classify(&change(ChangeKind::Deleted, Some(pod("web")), pod("web"))),
            Some("DELETED")
        );
        let other_ns = WatchFilter {
            namespace: Some("x".into()),
            ..f
        };
        assert_eq!(
            other_ns.classify(&change(ChangeKind::Added, None, pod("web"))),
            None
        );
    }

    #[test]
    fn frames_are_one_json_object_per_line() {
        let f = frame("ADDED", br#"{"a":1}"#);
        assert_eq!(&f[..], b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n");
        let v: Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["object"]["a"], 1);
    }
}
