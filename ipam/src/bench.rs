//! Measurements behind the IPAM benchmark (`benches/`): allocation rate per
//! node and API calls per allocation, through any store (the API emulator in
//! the benchmark), and the comparators measured the same way in the same run.
//! No timing is asserted anywhere; the runner reports ratios.

use crate::allocator::{AllocateRequest, Allocator};
use crate::clock::Clock;
use crate::error::IpamError;
use crate::store::IpamStore;
use crate::store::instrumented::{Counts, InstrumentedStore};
use margay_api::{IPAMConfiguration, IPAMConfigurationSpec, IPAMHandle, IPAMHandleSpec};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one measured phase did.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub nodes: usize,
    pub operations: u64,
    pub elapsed: Duration,
    /// Operations per second per node (all nodes run at once).
    pub per_node_per_sec: f64,
    pub writes_per_op: f64,
    pub reads_per_op: f64,
    /// Writes that lost a compare-and-swap race, per operation.
    pub lost_races_per_op: f64,
}

fn throughput(
    nodes: usize,
    operations: u64,
    elapsed: Duration,
    before: Counts,
    after: Counts,
) -> Throughput {
    let ops = operations.max(1) as f64;
    Throughput {
        nodes,
        operations,
        elapsed,
        per_node_per_sec: operations as f64 / nodes.max(1) as f64 / elapsed.as_secs_f64().max(1e-9),
        writes_per_op: (after.writes - before.writes) as f64 / ops,
        reads_per_op: (after.reads - before.reads) as f64 / ops,
        lost_races_per_op: (after.lost_races - before.lost_races) as f64 / ops,
    }
}

async fn run_nodes<S, F, Fut>(
    store: &Arc<InstrumentedStore<S>>,
    nodes: &[String],
    per_node: usize,
    f: F,
) -> Result<Throughput, IpamError>
where
    S: IpamStore + 'static,
    F: Fn(String, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), IpamError>> + Send + 'static,
{
    let before = store.counts();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for node in nodes {
        tasks.spawn(f(node.clone(), per_node));
    }
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(r) => r?,
            Err(e) => {
                return Err(IpamError::InvalidRequest(format!(
                    "benchmark task failed: {e}"
                )));
            }
        }
    }
    let elapsed = start.elapsed();
    Ok(throughput(
        nodes.len(),
        (nodes.len() * per_node) as u64,
        elapsed,
        before,
        store.counts(),
    ))
}

/// The common case: every node allocates `per_node` addresses (IPv4) inside
/// a block it already holds, all nodes at once; then releases them (not
/// measured). `per_node` must fit in one block of the pool in use.
pub async fn allocations_in_own_blocks<S: IpamStore + 'static>(
    store: Arc<InstrumentedStore<S>>,
    clock: Arc<dyn Clock>,
    nodes: &[String],
    per_node: usize,
) -> Result<Throughput, IpamError> {
    let alloc = Allocator::new(store.clone(), clock);
    // Warm up: each node claims its block.
    for node in nodes {
        let h = format!("warmup-{node}");
        alloc
            .allocate(&AllocateRequest::pod_v4(&h, node, "bench", &h))
            .await?;
        alloc.release_handle(&h, Some(node)).await?;
    }
    let a = alloc.clone();
    let t = run_nodes(&store, nodes, per_node, move |node, n| {
        let a = a.clone();
        async move {
            for i in 0..n {
                let h = format!("bench-{node}-{i}");
                a.allocate(&AllocateRequest::pod_v4(&h, &node, "bench", &h))
                    .await?;
            }
            Ok(())
        }
    })
    .await?;
    for node in nodes {
        for i in 0..per_node {
            alloc
                .release_handle(&format!("bench-{node}-{i}"), Some(node))
                .await?;
        }
    }
    Ok(t)
}

/// The borrowing path, which writes an `IPAMHandle` next to the block on every
/// allocation, as Calico does on every allocation: `nodes` (which must hold no
/// block) may not claim blocks (`autoAllocateBlocks: false`), so they take
/// addresses from `lender`'s block, which must have room for all of them.
pub async fn borrowed_allocations<S: IpamStore + 'static>(
    store: Arc<InstrumentedStore<S>>,
    clock: Arc<dyn Clock>,
    lender: &str,
    nodes: &[String],
    per_node: usize,
) -> Result<Throughput, IpamError> {
    let alloc = Allocator::new(store.clone(), clock);
    let h = format!("warmup-{lender}");
    alloc
        .allocate(&AllocateRequest::pod_v4(&h, lender, "bench", &h))
        .await?;
    let previous: Option<IPAMConfiguration> = store.get(crate::IPAM_CONFIG_NAME).await?;
    set_config(
        &store,
        IPAMConfigurationSpec {
            auto_allocate_blocks: Some(false),
            ..Default::default()
        },
    )
    .await?;
    let a = alloc.clone();
    let result = run_nodes(&store, nodes, per_node, move |node, n| {
        let a = a.clone();
        async move {
            for i in 0..n {
                let h = format!("borrow-{node}-{i}");
                a.allocate(&AllocateRequest::pod_v4(&h, &node, "bench", &h))
                    .await?;
            }
            Ok(())
        }
    })
    .await;
    set_config(&store, previous.map(|c| c.spec).unwrap_or_default()).await?;
    for node in nodes {
        for i in 0..per_node {
            alloc
                .release_handle(&format!("borrow-{node}-{i}"), Some(node))
                .await?;
        }
    }
    alloc.release_handle(&h, Some(lender)).await?;
    result
}

/// The floor any allocation pays: one read and one compare-and-swap write of
/// one small object per operation, with the same concurrency.
pub async fn read_and_cas_floor<S: IpamStore + 'static>(
    store: Arc<InstrumentedStore<S>>,
    nodes: &[String],
    per_node: usize,
) -> Result<Throughput, IpamError> {
    for node in nodes {
        let name = format!("bench-floor-{node}");
        if store.get::<IPAMHandle>(&name).await?.is_none() {
            store
                .create(&IPAMHandle::new(
                    &name,
                    IPAMHandleSpec {
                        handle_id: name.clone(),
                        node: node.clone(),
                        blocks: BTreeMap::new(),
                    },
                ))
                .await?;
        }
    }
    let s = store.clone();
    let t = run_nodes(&store, nodes, per_node, move |node, n| {
        let s = s.clone();
        async move {
            let name = format!("bench-floor-{node}");
            for i in 0..n {
                let Some(mut h) = s.get::<IPAMHandle>(&name).await? else {
                    return Err(IpamError::InvalidRequest(format!("{name} vanished")));
                };
                h.spec.blocks.insert("n".into(), i as u32);
                s.replace(&h).await?;
            }
            Ok(())
        }
    })
    .await?;
    for node in nodes {
        let name = format!("bench-floor-{node}");
        if let Some(h) = store.get::<IPAMHandle>(&name).await? {
            let rv = h.metadata.resource_version.unwrap_or_default();
            store.delete::<IPAMHandle>(&name, &rv).await?;
        }
    }
    Ok(t)
}

async fn set_config<S: IpamStore>(store: &S, spec: IPAMConfigurationSpec) -> Result<(), IpamError> {
    match store
        .get::<IPAMConfiguration>(crate::IPAM_CONFIG_NAME)
        .await?
    {
        Some(mut c) => {
            c.spec = spec;
            store.replace(&c).await?;
        }
        None => {
            store
                .create(&IPAMConfiguration::new(crate::IPAM_CONFIG_NAME, spec))
                .await?;
        }
    }
    Ok(())
}
