//! An in-memory store with the API server's write semantics (create fails on
//! an existing name, replace and delete are compare-and-swap on
//! `resourceVersion`), for unit and property tests. Objects are kept as JSON,
//! so every read and write goes through the same serde round trip as on the
//! wire.

use super::{IpamStore, NodeInfo, PodInfo, StoreError, StoreResult, StoredKind, describe};
use margay_api::names::NODE_LABEL;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
struct Inner {
    /// (kind, name) -> object.
    objects: BTreeMap<(String, String), Value>,
    next_rv: u64,
    nodes: BTreeMap<String, NodeInfo>,
    pods: BTreeMap<(String, String), PodInfo>,
}

/// See the module documentation.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    writes: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (every mutation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Successful writes (create, replace, delete) so far.
    pub fn write_count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub fn put_node(&self, name: &str, labels: &[(&str, &str)]) {
        self.lock().nodes.insert(
            name.to_string(),
            NodeInfo {
                name: name.to_string(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
    }

    pub fn delete_node(&self, name: &str) {
        self.lock().nodes.remove(name);
    }

    pub fn put_pod(&self, pod: PodInfo) {
        self.lock()
            .pods
            .insert((pod.namespace.clone(), pod.name.clone()), pod);
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.lock()
            .pods
            .remove(&(namespace.to_string(), name.to_string()));
    }

    fn bump(&self, inner: &mut Inner) -> String {
        inner.next_rv += 1;
        self.writes.fetch_add(1, Ordering::Relaxed);
        inner.next_rv.to_string()
    }
}

fn decode<K: StoredKind>(v: &Value) -> StoreResult<K> {
    serde_json::from_value(v.clone()).map_err(|e| StoreError::Invalid {
        kind: K::kind(&()).to_string(),
        name: String::new(),
        message: e.to_string(),
    })
}

fn encode<K: StoredKind>(obj: &K) -> StoreResult<Value> {
    let mut v = serde_json::to_value(obj).map_err(|e| StoreError::Invalid {
        kind: K::kind(&()).to_string(),
        name: obj.meta().name.clone().unwrap_or_default(),
        message: e.to_string(),
    })?;
    // What the API server fills in.
    if let Some(map) = v.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::String(K::api_version(&()).to_string()),
        );
        map.insert("kind".into(), Value::String(K::kind(&()).to_string()));
    }
    Ok(v)
}

fn name_of<K: StoredKind>(obj: &K) -> StoreResult<String> {
    obj.meta().name.clone().ok_or_else(|| StoreError::Invalid {
        kind: K::kind(&()).to_string(),
        name: String::new(),
        message: "metadata.name is required".into(),
    })
}

impl IpamStore for MemoryStore {
    async fn get<K: StoredKind>(&self, name: &str) -> StoreResult<Option<K>> {
        let key = (K::kind(&()).to_string(), name.to_string());
        let v = self.lock().objects.get(&key).cloned();
        v.map(|v| decode(&v)).transpose()
    }

    async fn list<K: StoredKind>(&self, node_label: Option<&str>) -> StoreResult<Vec<K>> {
        let kind = K::kind(&()).to_string();
        let values: Vec<Value> = self
            .lock()
            .objects
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect();
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            let obj: K = decode(&v)?;
            if let Some(want) = node_label {
                let has = obj
                    .meta()
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(NODE_LABEL))
                    .is_some_and(|v| v == want);
                if !has {
                    continue;
                }
            }
            out.push(obj);
        }
        Ok(out)
    }

    async fn create<K: StoredKind>(&self, obj: &K) -> StoreResult<K> {
        let name = name_of(obj)?;
        let mut obj = obj.clone();
        let mut inner = self.lock();
        let key = (K::kind(&()).to_string(), name.clone());
        if inner.objects.contains_key(&key) {
            let (kind, name) = describe::<K>(&name);
            return Err(StoreError::AlreadyExists { kind, name });
        }
        let rv = self.bump(&mut inner);
        let meta = obj.meta_mut();
        meta.resource_version = Some(rv.clone());
        meta.uid = Some(format!("uid-{rv}"));
        let v = encode(&obj)?;
        inner.objects.insert(key, v);
        Ok(obj)
    }

    async fn replace<K: StoredKind>(&self, obj: &K) -> StoreResult<K> {
        let name = name_of(obj)?;
        let Some(want_rv) = obj.meta().resource_version.clone() else {
            let (kind, name) = describe::<K>(&name);
            return Err(StoreError::Invalid {
                kind,
                name,
                message: "replace needs metadata.resourceVersion (compare-and-swap)".into(),
            });
        };
        let mut obj = obj.clone();
        let mut inner = self.lock();
        let key = (K::kind(&()).to_string(), name.clone());
        let current_rv = match inner.objects.get(&key) {
            None => {
                let (kind, name) = describe::<K>(&name);
                return Err(StoreError::NotFound { kind, name });
            }
            Some(v) => v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        if current_rv != want_rv {
            let (kind, name) = describe::<K>(&name);
            return Err(StoreError::Conflict { kind, name });
        }
        let rv = self.bump(&mut inner);
        obj.meta_mut().resource_version = Some(rv);
        let v = encode(&obj)?;
        inner.objects.insert(key, v);
        Ok(obj)
    }

    async fn delete<K: StoredKind>(&self, name: &str, resource_version: &str) -> StoreResult<()> {
        let mut inner = self.lock();
        let key = (K::kind(&()).to_string(), name.to_string());
        let current_rv = match inner.objects.get(&key) {
            None => {
                let (kind, name) = describe::<K>(name);
                return Err(StoreError::NotFound { kind, name });
            }
            Some(v) => v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        if current_rv != resource_version {
            let (kind, name) = describe::<K>(name);
            return Err(StoreError::Conflict { kind, name });
        }
        inner.objects.remove(&key);
        self.bump(&mut inner);
        Ok(())
    }

    async fn get_node(&self, name: &str) -> StoreResult<Option<NodeInfo>> {
        Ok(self.lock().nodes.get(name).cloned())
    }

    async fn list_nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        Ok(self.lock().nodes.values().cloned().collect())
    }

    async fn get_pod(&self, namespace: &str, name: &str) -> StoreResult<Option<PodInfo>> {
        Ok(self
            .lock()
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn list_pods(&self) -> StoreResult<Vec<PodInfo>> {
        Ok(self.lock().pods.values().cloned().collect())
    }
}
