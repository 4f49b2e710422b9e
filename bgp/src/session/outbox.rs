//! A peer's outbound queue: what the RIB decided to advertise and the
//! session has not sent yet.
//!
//! The speaker task pushes and never waits; the session task takes batches
//! when its socket can take them. Entries coalesce per prefix (a prefix
//! announced, changed and withdrawn before the session got to it is sent
//! once, as its latest state), so the queue never holds more than one entry
//! per prefix and a slow peer cannot make memory grow without bound.
//!
//! Markers (End-of-RIB, and the BoRR/EoRR brackets of an enhanced route
//! refresh) keep their place: routes queued before a marker go out before
//! it. A route queued again after a marker moves behind it, so a refresh
//! between BoRR and EoRR really re-sends every route.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::codec::{Family, Prefix};
use crate::rib::AttrRef;

/// A non-route item of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// End-of-RIB for the family (RFC 4724 §2).
    EndOfRib(Family),
    /// Beginning of Route Refresh (RFC 7313).
    BeginRefresh(Family),
    /// End of Route Refresh (RFC 7313).
    EndRefresh(Family),
}

/// An item taken from the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutItem {
    /// Announce (`Some`) or withdraw (`None`).
    Route(Prefix, Option<AttrRef>),
    /// A marker.
    Marker(Marker),
}

#[derive(Debug)]
enum Slot {
    Route(Prefix, u32),
    Marker(Marker),
}

#[derive(Debug, Default)]
struct Inner {
    order: VecDeque<Slot>,
    /// Latest state per prefix, with the epoch of its slot in `order`.
    pending: HashMap<Prefix, (u32, Option<AttrRef>)>,
    /// Bumped by every marker.
    epoch: u32,
}

/// The queue, shared between the speaker (producer) and one session
/// (consumer).
#[derive(Debug, Default)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Outbox {
    /// An empty queue.
    pub fn new() -> Outbox {
        Outbox::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep
        // going with it rather than poisoning every later call.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the latest state of `prefix`.
    pub fn push_route(&self, prefix: Prefix, attrs: Option<AttrRef>) {
        let mut g = self.lock();
        let epoch = g.epoch;
        match g.pending.get_mut(&prefix) {
            Some(slot) if slot.0 == epoch => slot.1 = attrs,
            _ => {
                g.pending.insert(prefix, (epoch, attrs));
                g.order.push_back(Slot::Route(prefix, epoch));
            }
        }
        drop(g);
        self.notify.notify_one();
    }

    /// Queues a marker behind everything queued so far.
    pub fn push_marker(&self, m: Marker) {
        let mut g = self.lock();
        g.order.push_back(Slot::Marker(m));
        g.epoch = g.epoch.wrapping_add(1);
        drop(g);
        self.notify.notify_one();
    }

    /// Takes up to `max` items, in order.
    pub fn take(&self, max: usize) -> Vec<OutItem> {
        let mut g = self.lock();
        let mut out = Vec::with_capacity(max.min(g.order.len()));
        while out.len() < max {
            let Some(slot) = g.order.pop_front() else {
                break;
            };
            match slot {
                Slot::Marker(m) => out.push(OutItem::Marker(m)),
                Slot::Route(p, epoch) => {
                    if g.pending.get(&p).is_some_and(|(e, _)| *e == epoch)
                        && let Some((_, attrs)) = g.pending.remove(&p)
                    {
                        out.push(OutItem::Route(p, attrs));
                    }
                }
            }
        }
        if g.order.is_empty() {
            g.pending = HashMap::new();
        }
        out
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().order.is_empty()
    }

    /// Number of queued slots (an upper bound on items).
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Drops everything (the session went down; the next one gets a full
    /// table).
    pub fn clear(&self) {
        let mut g = self.lock();
        g.order = VecDeque::new();
        g.pending = HashMap::new();
    }

    /// Waits until something is pushed (returns at once if a push happened
    /// since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::RouteAttrs;
    use std::sync::Arc;

    fn p(s: &str) -> Prefix {
        s.parse().expect("prefix")
    }

    fn a() -> AttrRef {
        Arc::new(RouteAttrs {
            attrs: Default::default(),
            next_hop: None,
        })
    }

    #[test]
    fn coalesces_per_prefix_keeping_first_position() {
        let o = Outbox::new();
        o.push_route(p("10.0.0.0/24"), Some(a()));
        o.push_route(p("10.0.1.0/24"), Some(a()));
        o.push_route(p("10.0.0.0/24"), None);
        assert_eq!(
            o.take(10),
            vec![
                OutItem::Route(p("10.0.0.0/24"), None),
                OutItem::Route(p("10.0.1.0/24"), Some(a())),
            ]
        );
        assert!(o.is_empty());
    }

    #[test]
    fn markers_keep_order_and_requeue_routes_behind_them() {
        let o = Outbox::new();
        o.push_route(p("10.0.0.0/24"), Some(a()));
        o.push_marker(Marker::BeginRefresh(Family::IPV4_UNICAST));
        o.push_route(p("10.0.0.0/24"), None);
        o.push_marker(Marker::EndRefresh(Family::IPV4_UNICAST));
        let items = o.take(10);
        assert_eq!(
            items,
            vec![
                OutItem::Marker(Marker::BeginRefresh(Family::IPV4_UNICAST)),
                OutItem::Route(p("10.0.0.0/24"), None),
                OutItem::Marker(Marker::EndRefresh(Family::IPV4_UNICAST)),
            ]
        );
    }

    #[test]
    fn take_respects_the_batch_size_and_clear_empties() {
        let o = Outbox::new();
        for i in 0..5u8 {
            o.push_route(p(&format!("10.0.{i}.0/24")), Some(a()));
        }
        assert_eq!(o.take(2).len(), 2);
        assert_eq!(o.len(), 3);
        o.clear();
        assert!(o.take(10).is_empty());
    }
}
