//! Cluster-wide IPAM garbage collection (`margay_ipam::GarbageCollector`:
//! leaked addresses, empty blocks, stale affinities and handles). It must run
//! in one place only, so every agent takes part in an election over the Lease
//! `<namespace>/margay-ipam-gc` and only its holder runs passes. Writes to the
//! Lease are compare-and-swaps on its resourceVersion, so two agents never
//! both believe they won; a leader that cannot renew stops collecting, and a
//! new leader starts its grace periods afresh (it errs on keeping addresses).

use crate::calc::lease::{self, LeaseState, LeaseStep};
use crate::metrics::Metrics;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use margay_ipam::store::kube::KubeStore;
use margay_ipam::{GarbageCollector, GcSettings, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Lease's name.
pub const LEASE_NAME: &str = "margay-ipam-gc";

#[derive(Debug, Clone)]
pub struct IpamGcConfig {
    pub lease_namespace: String,
    /// How long a leader's claim lasts without renewal.
    pub lease_duration: Duration,
    /// Time between two collection passes of the leader.
    pub interval: Duration,
    /// Bound on each API call of a pass.
    pub call_timeout: Duration,
}

/// Runs the election and, while leading, the collector; never returns.
pub async fn run(client: Client, node: String, cfg: IpamGcConfig, metrics: Metrics) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &cfg.lease_namespace);
    let store = KubeStore::new(client).with_call_timeout(cfg.call_timeout);
    let mut collector: Option<GarbageCollector<KubeStore>> = None;
    let mut last_pass: Option<Instant> = None;
    // Renew well inside the lease, so one slow round does not lose it.
    let tick = (cfg.lease_duration / 3).max(Duration::from_millis(200));
    loop {
        let leading =
            match tokio::time::timeout(cfg.call_timeout, elect(&leases, &node, &cfg)).await {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "IPAM GC election round failed");
                    false
                }
                Err(_) => false,
            };
        metrics.ipam_gc_leader.set(i64::from(leading));
        if !leading {
            if collector.take().is_some() {
                tracing::info!("no longer the IPAM garbage collector");
            }
            last_pass = None;
        } else {
            let c = collector.get_or_insert_with(|| {
                tracing::info!("now the cluster's IPAM garbage collector");
                GarbageCollector::new(store.clone(), Arc::new(SystemClock), GcSettings::default())
            });
            if last_pass.is_none_or(|t| t.elapsed() >= cfg.interval) {
                last_pass = Some(Instant::now());
                match c.run_pass().await {
                    Ok(report) => {
                        metrics
                            .ipam_gc_passes
                            .get_or_create(&Metrics::op_result("pass", "ok"))
                            .inc();
                        let released: usize =
                            report.leaks_released.iter().map(|(_, ips)| ips.len()).sum();
                        metrics.ipam_gc_reclamations.inc_by(released as u64);
                        if report.did_work() {
                            tracing::info!(leaks = ?report.leaks_released, blocks = ?report.blocks_released, affinities = ?report.affinities_deleted, handles = ?report.handles_deleted, "IPAM garbage collected");
                        }
                        for p in &report.problems {
                            tracing::warn!(problem = %p, "IPAM GC");
                        }
                    }
                    Err(e) => {
                        metrics
                            .ipam_gc_passes
                            .get_or_create(&Metrics::op_result("pass", "error"))
                            .inc();
                        tracing::warn!(error = %e, "IPAM GC pass failed");
                    }
                }
            }
        }
        tokio::time::sleep(tick).await;
    }
}

/// One election round: `Ok(true)` when this node holds the Lease afterwards.
async fn elect(leases: &Api<Lease>, me: &str, cfg: &IpamGcConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let current = leases.get_opt(LEASE_NAME).await?;
    let state = current.as_ref().map(|l| {
        let spec = l.spec.clone().unwrap_or_default();
        LeaseState {
            holder: spec.holder_identity,
            renewed_at: spec.renew_time.map(|t| t.0),
            duration: Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            ),
        }
    });
    let secs = i32::try_from(cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let write = match lease::step(state.as_ref(), me, now) {
        LeaseStep::Follow { .. } => return Ok(false),
        LeaseStep::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.to_string()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        step @ (LeaseStep::Renew | LeaseStep::TakeOver) => {
            // `current` is Some here: Create covers None. The replace carries
            // its resourceVersion, so it fails if anyone wrote in between.
            let mut lease = current.unwrap_or_default();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if step == LeaseStep::TakeOver {
                spec.holder_identity = Some(me.to_string());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(MicroTime(now));
            leases
                .replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match write {
        Ok(()) => Ok(true),
        // Someone else wrote first (409): not ours this round.
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Ok(false),
        Err(e) => Err(e),
    }
}
