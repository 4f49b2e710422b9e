//! `ipam-allocation`: how fast nodes get pod addresses through the Kubernetes
//! API (the lab's API emulator, in process), and how many API writes each
//! allocation costs. Ten nodes allocate at once, each in a block it holds.
//!
//! Comparators, measured the same way in the same run:
//! - the floor any allocation pays: one GET and one compare-and-swap PUT of a
//!   small object per operation, with the same concurrency;
//! - writes per allocation of the borrowing path, which writes an `IPAMHandle`
//!   and the block, as Calico does on every allocation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use margay_api::{IPPool, IPPoolSpec};
use margay_ipam::bench::{allocations_in_own_blocks, borrowed_allocations, read_and_cas_floor};
use margay_ipam::store::instrumented::InstrumentedStore;
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{IpamStore, SystemClock};
use margay_lab::apiserver::TestApiServer;

use crate::figure::{Better, Figure, Goal, Measure, median};
use crate::{Benchmark, Context};

const NODES: usize = 10;

pub fn benchmark() -> Benchmark {
    Benchmark {
        name: "ipam-allocation",
        about: "pod address allocations per node per second through the API emulator, and API writes per allocation",
        run,
    }
}

fn run(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(measure(ctx))
}

async fn measure(ctx: &Context) -> anyhow::Result<Vec<Figure>> {
    let server = TestApiServer::start()
        .await
        .context("starting the API emulator")?;
    let client = server.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in margay_api::crds::all_crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .context("installing CRDs")?;
    }
    let nodes: Vec<String> = (0..NODES).map(|i| format!("bench-node-{i}")).collect();
    let borrowers: Vec<String> = (0..2).map(|i| format!("bench-borrower-{i}")).collect();
    let node_api: Api<Node> = Api::all(client.clone());
    for name in nodes.iter().chain(&borrowers) {
        let mut node = Node::default();
        node.metadata.name = Some(name.clone());
        node_api
            .create(&PostParams::default(), &node)
            .await
            .context("creating nodes")?;
    }
    let store = Arc::new(InstrumentedStore::new(KubeStore::new(client.clone())));
    let mut pool = IPPoolSpec::new("10.240.0.0/16");
    pool.block_size = Some(24);
    store
        .create(&IPPool::new("bench", pool))
        .await
        .context("creating the pool")?;

    let (rounds, per_node) = if ctx.quick { (1, 10) } else { (3, 100) };
    let clock = Arc::new(SystemClock);
    let mut figures = Vec::new();
    for latency_ms in [0u64, 2] {
        server.set_latency(Duration::from_millis(latency_ms));
        let (mut alloc_rate, mut floor_rate) = (Vec::new(), Vec::new());
        let mut writes = Vec::new();
        // Alternate subject and comparator so drift in machine load hits both.
        for _ in 0..rounds {
            let own =
                allocations_in_own_blocks(store.clone(), clock.clone(), &nodes, per_node).await?;
            let floor = read_and_cas_floor(store.clone(), &nodes, per_node).await?;
            alloc_rate.push(own.per_node_per_sec);
            floor_rate.push(floor.per_node_per_sec);
            writes.push(own.writes_per_op);
        }
        let latency = if latency_ms == 0 {
            "no added latency".to_string()
        } else {
            format!("{latency_ms} ms API latency")
        };
        figures.push(Figure::new(
            format!("allocations per node per second, {NODES} nodes at once, {latency}"),
            Measure::new(
                "allocate (1 write, 6 reads)",
                median(&mut alloc_rate),
                "ops/s",
            ),
            Measure::new("GET + CAS PUT floor", median(&mut floor_rate), "ops/s"),
            Better::Higher,
        ));
        if latency_ms == 0 {
            let borrowed = borrowed_allocations(
                store.clone(),
                clock.clone(),
                &nodes[0],
                &borrowers,
                per_node / 2,
            )
            .await?;
            figures.push(
                Figure::new(
                    "API writes per allocation (common case)",
                    Measure::new("own block", median(&mut writes), "writes"),
                    Measure::new(
                        "borrowed: IPAMHandle + block, as Calico always",
                        borrowed.writes_per_op,
                        "writes",
                    ),
                    Better::Lower,
                )
                .with_goal(Goal::Absolute(1.0)),
            );
        }
    }
    Ok(figures)
}
