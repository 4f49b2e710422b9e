//! Shared fixtures for the IPAM tests: a cluster in a MemoryStore.
#![allow(dead_code)] // each test binary uses a different subset

use margay_api::{IPAMConfiguration, IPAMConfigurationSpec, IPPool, IPPoolSpec};
use margay_ipam::store::memory::MemoryStore;
use margay_ipam::{Allocator, IpamStore, ManualClock, PodInfo};
use std::net::IpAddr;
use std::sync::Arc;

pub const T0: i64 = 1_700_000_000;

pub struct Cluster {
    pub store: Arc<MemoryStore>,
    pub clock: Arc<ManualClock>,
}

impl Cluster {
    pub fn new(nodes: &[&str]) -> Cluster {
        let store = Arc::new(MemoryStore::new());
        for n in nodes {
            store.put_node(n, &[]);
        }
        Cluster {
            store,
            clock: Arc::new(ManualClock::new(T0)),
        }
    }

    pub fn allocator(&self) -> Allocator<Arc<MemoryStore>> {
        Allocator::new(self.store.clone(), self.clock.clone())
    }

    pub async fn add_pool(&self, name: &str, cidr: &str, block_size: Option<u8>) {
        let mut spec = IPPoolSpec::new(cidr);
        spec.block_size = block_size;
        self.put_pool(name, spec).await;
    }

    pub async fn put_pool(&self, name: &str, spec: IPPoolSpec) {
        let existing: Option<IPPool> = self.store.get(name).await.expect("get pool");
        match existing {
            Some(mut p) => {
                p.spec = spec;
                self.store.replace(&p).await.expect("replace pool");
            }
            None => {
                self.store
                    .create(&IPPool::new(name, spec))
                    .await
                    .expect("create pool");
            }
        }
    }

    pub async fn set_config(&self, spec: IPAMConfigurationSpec) {
        let existing: Option<IPAMConfiguration> =
            self.store.get("default").await.expect("get config");
        match existing {
            Some(mut c) => {
                c.spec = spec;
                self.store.replace(&c).await.expect("replace config");
            }
            None => {
                self.store
                    .create(&IPAMConfiguration::new("default", spec))
                    .await
                    .expect("create config");
            }
        }
    }

    pub fn put_pod(&self, ns: &str, name: &str, node: &str, ips: &[IpAddr]) {
        self.store.put_pod(PodInfo {
            namespace: ns.into(),
            name: name.into(),
            node: Some(node.into()),
            ips: ips.to_vec(),
        });
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Every invariant except "leaked" (tests that do not model pods).
pub fn assert_sound(a: &margay_ipam::Audit) {
    let mut b = a.clone();
    b.leaked.clear();
    assert!(b.is_clean(), "{a:?}");
}
