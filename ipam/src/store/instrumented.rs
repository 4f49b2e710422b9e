//! A wrapper around any store that counts calls and injects faults: refused
//! writes (409 Conflict without touching the store), added latency, and a
//! "crash" after a number of writes (every later call fails, as if the
//! process died between two writes). Used by the concurrency tests and the
//! benchmark (writes per allocation).

use super::{IpamStore, NodeInfo, PodInfo, StoreError, StoreResult, StoredKind, describe};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Call counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub reads: u64,
    /// Writes that reached the inner store and succeeded.
    pub writes: u64,
    /// Writes the inner store refused (conflict, exists, not found).
    pub lost_races: u64,
    /// Writes refused by the injector.
    pub injected_conflicts: u64,
}

pub struct InstrumentedStore<S> {
    inner: S,
    reads: AtomicU64,
    writes: AtomicU64,
    lost: AtomicU64,
    injected: AtomicU64,
    /// Conflicts injected per million writes.
    conflict_ppm: AtomicU64,
    latency_us: AtomicU64,
    /// Writes still allowed before the simulated crash; negative = never.
    writes_until_crash: AtomicI64,
    crashed: AtomicBool,
    yield_each_call: AtomicBool,
    rng: Mutex<u64>,
}

impl<S: IpamStore> InstrumentedStore<S> {
    pub fn new(inner: S) -> InstrumentedStore<S> {
        InstrumentedStore {
            inner,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            conflict_ppm: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            writes_until_crash: AtomicI64::new(-1),
            crashed: AtomicBool::new(false),
            yield_each_call: AtomicBool::new(false),
            rng: Mutex::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Refuse this fraction (0.0..=1.0) of writes with a conflict, deterministically
    /// from `seed`.
    pub fn inject_conflicts(&self, fraction: f64, seed: u64) {
        self.conflict_ppm
            .store((fraction.clamp(0.0, 1.0) * 1e6) as u64, Ordering::SeqCst);
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = seed | 1;
    }

    /// Delay every call by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Yield to the scheduler before every call, so that concurrent tasks
    /// interleave between any two store operations (like a network round trip
    /// would make them) without adding wall-clock time.
    pub fn set_yield(&self, on: bool) {
        self.yield_each_call.store(on, Ordering::SeqCst);
    }

    /// Let `writes` more writes through, then fail every call with
    /// `Unavailable` (the process "died" right after that write).
    pub fn crash_after_writes(&self, writes: u64) {
        self.writes_until_crash
            .store(writes as i64, Ordering::SeqCst);
    }

    pub fn has_crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            lost_races: self.lost.load(Ordering::Relaxed),
            injected_conflicts: self.injected.load(Ordering::Relaxed),
        }
    }

    fn next_random_ppm(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64*
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % 1_000_000
    }

    async fn before(&self) -> StoreResult<()> {
        if self.yield_each_call.load(Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
        let us = self.latency_us.load(Ordering::Relaxed);
        if us > 0 {
            tokio::time::sleep(Duration::from_micros(us)).await;
        }
        if self.crashed.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected crash".into()));
        }
        Ok(())
    }

    async fn read<T>(&self, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        self.before().await?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        f.await
    }

    /// Gate a write: crash accounting and conflict injection.
    async fn write<K: StoredKind, T>(
        &self,
        name: &str,
        f: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        self.before().await?;
        let ppm = self.conflict_ppm.load(Ordering::Relaxed);
        if ppm > 0 && self.next_random_ppm() < ppm {
            self.injected.fetch_add(1, Ordering::Relaxed);
            let (kind, name) = describe::<K>(name);
            return Err(StoreError::Conflict { kind, name });
        }
        let left = self.writes_until_crash.load(Ordering::SeqCst);
        if left == 0 {
            self.crashed.store(true, Ordering::SeqCst);
            return Err(StoreError::Unavailable("injected crash".into()));
        }
        let r = f.await;
        match &r {
            Ok(_) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
                if left > 0 {
                    self.writes_until_crash.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.is_race() || matches!(e, StoreError::AlreadyExists { .. }) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {}
        }
        r
    }
}

impl<S: IpamStore> IpamStore for InstrumentedStore<S> {
    async fn get<K: StoredKind>(&self, name: &str) -> StoreResult<Option<K>> {
        self.read(self.inner.get(name)).await
    }
    async fn list<K: StoredKind>(&self, node_label: Option<&str>) -> StoreResult<Vec<K>> {
        self.read(self.inner.list(node_label)).await
    }
    async fn create<K: StoredKind>(&self, obj: &K) -> StoreResult<K> {
        let name = obj.meta().name.clone().unwrap_or_default();
        self.write::<K, _>(&name, self.inner.create(obj)).await
    }
    async fn replace<K: StoredKind>(&self, obj: &K) -> StoreResult<K> {
        let name = obj.meta().name.clone().unwrap_or_default();
        self.write::<K, _>(&name, self.inner.replace(obj)).await
    }
    async fn delete<K: StoredKind>(&self, name: &str, resource_version: &str) -> StoreResult<()> {
        self.write::<K, _>(name, self.inner.delete::<K>(name, resource_version))
            .await
    }
    async fn get_node(&self, name: &str) -> StoreResult<Option<NodeInfo>> {
        self.read(self.inner.get_node(name)).await
    }
    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        self.read(self.inner.list_nodes()).await
    }
    async fn get_pod(&self, namespace: &str, name: &str) -> StoreResult<Option<PodInfo>> {
        self.read(self.inner.get_pod(namespace, name)).await
    }
    async fn list_pods(&self) -> StoreResult<Vec<PodInfo>> {
        self.read(self.inner.list_pods()).await
    }
}
