//! Many nodes allocating and releasing at once against one store, with
//! conflicts injected and allocations killed mid-flight; then everything is
//! released, some nodes are deleted, and the GC must leave a clean state.
//! Used against the in-memory store and against the API emulator.

#![allow(dead_code)] // each test binary reads a different subset of the results

use margay_ipam::store::instrumented::InstrumentedStore;
use margay_ipam::{
    AllocateRequest, Allocator, GarbageCollector, GcSettings, IpamError, IpamStore, ManualClock,
    audit,
};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the test tells the cluster about pods (the GC looks them up).
pub trait PodRegistry: Send + Sync + 'static {
    fn started(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        ips: &[IpAddr],
    ) -> impl Future<Output = ()> + Send;
    fn deleted(&self, ns: &str, name: &str) -> impl Future<Output = ()> + Send;
    fn delete_node(&self, node: &str) -> impl Future<Output = ()> + Send;
}

#[derive(Debug, Clone)]
pub struct StressConfig {
    pub nodes: usize,
    /// Allocate + release operations in total, over all nodes.
    pub ops: u64,
    pub max_live_per_node: usize,
    /// Every this many operations a node's allocation is aborted at a random
    /// point (as if the node died mid-request).
    pub kill_every: u64,
    /// Nodes deleted (with their pods) at the end, before the GC runs.
    pub delete_nodes: usize,
    pub seed: u64,
}

#[derive(Debug, Default)]
pub struct StressResult {
    pub allocations: u64,
    pub releases: u64,
    pub kills: u64,
    pub exhausted: u64,
    pub duplicates: Vec<String>,
    pub failures: Vec<String>,
    /// GC passes until two in a row changed nothing.
    pub gc_passes: u32,
    pub final_audit: Option<margay_ipam::Audit>,
}

struct Shared {
    ops_done: AtomicU64,
    allocations: AtomicU64,
    releases: AtomicU64,
    kills: AtomicU64,
    exhausted: AtomicU64,
    /// Address -> handle, for every address a node believes it holds.
    held: Mutex<HashMap<IpAddr, String>>,
    duplicates: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

pub fn node_name(i: usize) -> String {
    format!("stress-node-{i}")
}

pub async fn run_stress<S, P>(
    store: Arc<InstrumentedStore<S>>,
    clock: Arc<ManualClock>,
    pods: Arc<P>,
    cfg: StressConfig,
) -> StressResult
where
    S: IpamStore + 'static,
    P: PodRegistry,
{
    let shared = Arc::new(Shared {
        ops_done: AtomicU64::new(0),
        allocations: AtomicU64::new(0),
        releases: AtomicU64::new(0),
        kills: AtomicU64::new(0),
        exhausted: AtomicU64::new(0),
        held: Mutex::new(HashMap::new()),
        duplicates: Mutex::new(Vec::new()),
        failures: Mutex::new(Vec::new()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..cfg.nodes {
        let store = store.clone();
        let clock = clock.clone();
        let pods = pods.clone();
        let shared = shared.clone();
        let cfg = cfg.clone();
        tasks.spawn(async move {
            let node = node_name(n);
            let alloc = Allocator::new(store, clock);
            let mut rng = cfg.seed ^ (n as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut live: Vec<(String, Vec<IpAddr>)> = Vec::new();
            let mut serial = 0u64;
            loop {
                let op = shared.ops_done.fetch_add(1, Ordering::SeqCst);
                if op >= cfg.ops {
                    break;
                }
                let r = xorshift(&mut rng);
                let allocate =
                    live.is_empty() || (live.len() < cfg.max_live_per_node && r.is_multiple_of(2));
                if allocate {
                    serial += 1;
                    let handle = format!("{node}-c{serial}");
                    let req = AllocateRequest::pod_v4(&handle, &node, "stress", &handle);
                    if cfg.kill_every > 0 && op.is_multiple_of(cfg.kill_every) {
                        // Run the allocation as its own task and kill it after a
                        // random number of scheduling points. Whatever it wrote
                        // stays; nobody learns its address or starts its pod.
                        let a = alloc.clone();
                        let h = tokio::spawn(async move { a.allocate(&req).await });
                        for _ in 0..(xorshift(&mut rng) % 24) {
                            tokio::task::yield_now().await;
                        }
                        h.abort();
                        shared.kills.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match alloc.allocate(&req).await {
                        Ok(got) => {
                            let ips: Vec<IpAddr> = got.addresses().collect();
                            {
                                let mut held =
                                    shared.held.lock().unwrap_or_else(|p| p.into_inner());
                                for ip in &ips {
                                    if let Some(other) = held.insert(*ip, handle.clone()) {
                                        shared
                                            .duplicates
                                            .lock()
                                            .unwrap_or_else(|p| p.into_inner())
                                            .push(format!(
                                                "{ip} given to {handle} while {other} holds it"
                                            ));
                                    }
                                }
                            }
                            pods.started("stress", &handle, &node, &ips).await;
                            shared.allocations.fetch_add(1, Ordering::Relaxed);
                            live.push((handle, ips));
                        }
                        Err(IpamError::Exhausted { .. }) => {
                            shared.exhausted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => shared
                            .failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("allocate {handle}: {e}")),
                    }
                } else {
                    let (handle, ips) = live.swap_remove((r as usize / 2) % live.len());
                    {
                        // Forget first: until release returns the addresses are
                        // still allocated, so nobody else can get them meanwhile.
                        let mut held = shared.held.lock().unwrap_or_else(|p| p.into_inner());
                        for ip in &ips {
                            held.remove(ip);
                        }
                    }
                    pods.deleted("stress", &handle).await;
                    match alloc.release_handle(&handle, Some(&node)).await {
                        Ok(got) if got.len() == ips.len() => {
                            shared.releases.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(got) => shared
                            .failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("release {handle}: got {got:?}, held {ips:?}")),
                        Err(e) => shared
                            .failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("release {handle}: {e}")),
                    }
                }
            }
            (node, live)
        });
    }
    let mut remaining = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(x) => remaining.push(x),
            Err(e) => shared
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("node task failed: {e}")),
        }
    }

    // Wind down without faults: live nodes release what they hold, the last
    // `delete_nodes` nodes are deleted with their pods instead.
    store.inject_conflicts(0.0, 1);
    remaining.sort_by(|a, b| a.0.cmp(&b.0));
    let doomed: Vec<String> = (cfg.nodes - cfg.delete_nodes..cfg.nodes)
        .map(node_name)
        .collect();
    let alloc = Allocator::new(store.clone(), clock.clone());
    for (node, live) in remaining {
        for (handle, _) in live {
            pods.deleted("stress", &handle).await;
            if !doomed.contains(&node)
                && let Err(e) = alloc.release_handle(&handle, Some(&node)).await
            {
                shared
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("final release {handle}: {e}"));
            }
        }
    }
    for node in &doomed {
        pods.delete_node(node).await;
    }

    // Garbage-collect until two passes in a row change nothing.
    let mut gc = GarbageCollector::new(store.clone(), clock.clone(), GcSettings::default());
    let mut quiet = 0;
    let mut passes = 0;
    while quiet < 2 && passes < 30 {
        clock.advance(3600);
        passes += 1;
        match gc.run_pass().await {
            Ok(r) => {
                if !r.problems.is_empty() {
                    shared
                        .failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(r.problems.clone());
                }
                quiet = if r.did_work() { 0 } else { quiet + 1 };
            }
            Err(e) => {
                shared
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!("gc: {e}"));
                break;
            }
        }
    }
    let final_audit = match audit(&store).await {
        Ok(a) => Some(a),
        Err(e) => {
            shared
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("audit: {e}"));
            None
        }
    };
    let take =
        |m: &Mutex<Vec<String>>| std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()));
    StressResult {
        allocations: shared.allocations.load(Ordering::Relaxed),
        releases: shared.releases.load(Ordering::Relaxed),
        kills: shared.kills.load(Ordering::Relaxed),
        exhausted: shared.exhausted.load(Ordering::Relaxed),
        duplicates: take(&shared.duplicates),
        failures: take(&shared.failures),
        gc_passes: passes,
        final_audit,
    }
}

/// The checks every stress run must pass.
pub fn assert_stress_ok(r: &StressResult, cfg: &StressConfig) {
    assert!(
        r.duplicates.is_empty(),
        "duplicate addresses: {:?}",
        r.duplicates
    );
    assert!(r.failures.is_empty(), "failures: {:#?}", r.failures);
    let a = r.final_audit.as_ref().expect("audit ran");
    assert!(a.is_clean(), "after GC: {a:?}");
    assert_eq!(a.allocations, 0, "leaked addresses after GC: {a:?}");
    assert!(
        a.blocks <= cfg.nodes - cfg.delete_nodes,
        "more blocks than live nodes: {a:?}"
    );
    assert!(r.allocations > 0 && r.releases > 0 && r.kills > 0, "{r:?}");
    assert!(r.gc_passes < 30, "the GC did not settle: {r:?}");
}
