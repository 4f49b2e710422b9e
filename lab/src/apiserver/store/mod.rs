//! The object store: every object as JSON keyed by (group, resource), namespace
//! and name; one cluster-wide `resourceVersion` counter; a bounded history of
//! changes that watches resume from (older versions get 410 Gone); and the
//! in-line work of the controllers the API needs to be usable (namespace and CRD
//! finalization). Pure: no I/O, the caller publishes the returned changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

mod delete;
mod services;
#[cfg(test)]
mod tests;
mod write;

use services::keep_allocated_service_fields;

use super::resources::{Registry, ResourceDef, ResourceKey};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult};

/// What happened to an object at one resourceVersion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed change, as retained for watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub key: ResourceKey,
    pub namespace: String,
    pub name: String,
    pub kind: ChangeKind,
    /// The new state; for `Deleted` the last state, stamped with the deletion's version.
    pub object: Arc<Value>,
    /// The state before (None for `Added`).
    pub old: Option<Arc<Value>>,
    /// `object` serialized once, shared by every watcher.
    pub json: Bytes,
}

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub label: LabelSelector,
    pub field: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// The result of a write: the object to answer with, and what to publish.
#[derive(Debug)]
pub struct WriteOutcome {
    pub object: Value,
    pub changes: Vec<Arc<Change>>,
    pub warnings: Vec<String>,
}

/// Where a watch starts: the events to send first, and the version after which
/// live changes follow.
pub struct WatchStart {
    pub initial: Vec<Arc<Change>>,
    /// True when `initial` are synthetic ADDED events for current state.
    pub synthetic: bool,
    pub rv: u64,
}

pub enum Subresource {
    Main,
    Status,
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

pub struct Store {
    rv: u64,
    objects: HashMap<ResourceKey, Objects>,
    history: VecDeque<Arc<Change>>,
    history_cap: usize,
    /// Watches may start at any version >= this one (all later changes are retained).
    oldest_watchable: u64,
    registry: Registry,
}

fn crd_key() -> ResourceKey {
    ResourceKey::new("apiextensions.k8s.io", "customresourcedefinitions")
}

fn ns_key() -> ResourceKey {
    ResourceKey::new("", "namespaces")
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn new_uid() -> String {
    let mut b = [0u8; 16];
    for x in &mut b {
        *x = fastrand::u8(..);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finalizers(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The object as served at `def`'s version (conversion strategy None: only
/// `apiVersion` changes).
pub fn at_version(def: &ResourceDef, obj: &Value) -> Value {
    let want = def.api_version();
    if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
        return obj.clone();
    }
    let mut o = obj.clone();
    o["apiVersion"] = Value::String(want);
    o
}

/// Everything but metadata and status: what bumps `generation` when it changes.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

/// The persisted form of a store.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct State {
    #[serde(rename = "resourceVersion")]
    pub resource_version: u64,
    pub objects: Vec<StoredObject>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct StoredObject {
    pub group: String,
    pub resource: String,
    pub object: Value,
}

/// A store's objects at one resourceVersion, sharing them with the store
/// ([`Store::state_snapshot`]); serializes exactly as [`State`].
pub struct StateSnapshot {
    resource_version: u64,
    objects: Vec<(ResourceKey, Arc<Value>)>,
}

impl serde::Serialize for StateSnapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Obj<'a> {
            group: &'a str,
            resource: &'a str,
            object: &'a Value,
        }
        #[derive(serde::Serialize)]
        struct St<'a> {
            #[serde(rename = "resourceVersion")]
            resource_version: u64,
            objects: Vec<Obj<'a>>,
        }
        St {
            resource_version: self.resource_version,
            objects: self
                .objects
                .iter()
                .map(|(k, o)| Obj {
                    group: &k.group,
                    resource: &k.resource,
                    object: o,
                })
                .collect(),
        }
        .serialize(s)
    }
}

impl Store {
    /// A fresh store holding the namespaces a new cluster has.
    pub fn new(history_cap: usize) -> Self {
        let mut s = Self::empty(history_cap);
        let def = s.registry.get("", "v1", "namespaces").cloned();
        if let Some(def) = def {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                // Creation of these fixed, valid names cannot fail on an empty store.
                let _ = s.create(&def, None, body, &WriteOptions::default());
            }
        }
        s.history.clear();
        s.oldest_watchable = s.rv;
        s
    }

    fn empty(history_cap: usize) -> Self {
        Self {
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_cap,
            oldest_watchable: 0,
            registry: Registry::build(std::iter::empty()),
        }
    }

    /// Restores a persisted store; the watch history starts empty, so watches
    /// from versions before the restart get 410 Gone, as after a real restart.
    pub fn from_state(state: State, history_cap: usize) -> Self {
        let mut s = Self::empty(history_cap);
        s.rv = state.resource_version;
        for o in state.objects {
            let key = ResourceKey::new(&o.group, &o.resource);
            let id = (
                meta_str(&o.object, "namespace").to_string(),
                meta_str(&o.object, "name").to_string(),
            );
            s.objects
                .entry(key)
                .or_default()
                .insert(id, Arc::new(o.object));
        }
        s.oldest_watchable = s.rv;
        s.rebuild_registry();
        s
    }

    /// The objects as shared references, in the state file's order: cheap
    /// (pointer copies), so it can be taken under the store lock and
    /// serialized after the lock is released. Objects are immutable once
    /// stored (a change replaces the `Arc`), so the snapshot cannot change.
    pub fn state_snapshot(&self) -> StateSnapshot {
        let mut objects = Vec::new();
        let mut keys: Vec<&ResourceKey> = self.objects.keys().collect();
        keys.sort();
        for key in keys {
            for obj in self.objects[key].values() {
                objects.push((key.clone(), obj.clone()));
            }
        }
        StateSnapshot {
            resource_version: self.rv,
            objects,
        }
    }

    pub fn to_state(&self) -> State {
        let mut objects = Vec::new();
        let mut keys: Vec<&ResourceKey> = self.objects.keys().collect();
        keys.sort();
        for key in keys {
            for obj in self.objects[key].values() {
                objects.push(StoredObject {
                    group: key.group.clone(),
                    resource: key.resource.clone(),
                    object: (**obj).clone(),
                });
            }
        }
        State {
            resource_version: self.rv,
            objects,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Forgets the watch history (as an etcd compaction would): every watch
    /// from an earlier version now gets 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_watchable = self.rv;
    }

    fn rebuild_registry(&mut self) {
        let crds: Vec<Value> = self
            .objects
            .get(&crd_key())
            .map(|m| m.values().map(|v| (**v).clone()).collect())
            .unwrap_or_default();
        self.registry = Registry::build(crds.iter());
    }

    fn lookup(&self, key: &ResourceKey, ns: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
    }

    fn ns_of(def: &ResourceDef, ns: Option<&str>) -> String {
        if def.namespaced {
            ns.unwrap_or("").to_string()
        } else {
            String::new()
        }
    }

    pub fn get(&self, def: &ResourceDef, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        let ns = Self::ns_of(def, ns);
        self.lookup(&def.key(), &ns, name)
            .map(|o| at_version(def, o))
            .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, name))
    }

    /// The objects of `key` as they were at version `rv`, rebuilt by undoing
    /// retained changes newer than it.
    fn snapshot(&self, key: &ResourceKey, rv: u64, expired_msg: &str) -> ApiResult<Objects> {
        let mut objs = self.objects.get(key).cloned().unwrap_or_default();
        if rv >= self.rv {
            return Ok(objs);
        }
        if rv < self.oldest_watchable {
            return Err(ApiError::expired(expired_msg.to_string()));
        }
        for c in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if &c.key != key {
                continue;
            }
            let id = (c.namespace.clone(), c.name.clone());
            match &c.old {
                Some(old) => {
                    objs.insert(id, old.clone());
                }
                None => {
                    objs.remove(&id);
                }
            }
        }
        Ok(objs)
    }

    pub fn list(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> ApiResult<Value> {
        let key = def.key();
        const TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue value from the response.";
        let (rv, start) = match &opts.continue_token {
            Some(tok) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(tok)
                    .map_err(|_| {
                        ApiError::bad_request("continue key is not valid: illegal base64 data")
                    })?;
                let t: ContinueToken = serde_json::from_slice(&bytes)
                    .map_err(|_| ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
                (t.rv, Some(t.start))
            }
            None => {
                let exact = opts.resource_version_match.as_deref() == Some("Exact");
                match opts.resource_version.as_deref() {
                    Some(r) if exact => {
                        let r: u64 = r.parse().map_err(|_| {
                            ApiError::bad_request(format!("invalid resource version: {r}"))
                        })?;
                        (r, None)
                    }
                    _ => (self.rv, None),
                }
            }
        };
        let msg = if opts.continue_token.is_some() {
            TOO_OLD.to_string()
        } else {
            format!("too old resource version: {rv} ({})", self.oldest_watchable)
        };
        let objs = self.snapshot(&key, rv, &msg)?;
        let mut items = Vec::new();
        let mut last_id = String::new();
        let mut remaining = 0usize;
        let limit = opts.limit.filter(|l| *l > 0);
        let ns = ns.filter(|_| def.namespaced);
        for ((ons, oname), obj) in objs.iter() {
            if ns.is_some_and(|n| n != ons) {
                continue;
            }
            let id = format!("{ons}/{oname}");
            if start.as_ref().is_some_and(|s| id.as_str() <= s.as_str()) {
                continue;
            }
            if !opts.label.matches_object(obj) || !opts.field.matches(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                remaining += 1;
                continue;
            }
            items.push(at_version(def, obj));
            last_id = id;
        }
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if remaining > 0 {
            let tok = serde_json::to_vec(&ContinueToken { rv, start: last_id }).unwrap_or_default();
            metadata["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(tok));
            if opts.label.is_empty() && opts.field.is_empty() {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(
            json!({"kind": def.list_kind, "apiVersion": def.api_version(), "metadata": metadata, "items": items}),
        )
    }

    /// Commits one object state (None = removal) at the next version.
    fn commit(
        &mut self,
        key: &ResourceKey,
        ns: &str,
        name: &str,
        new: Option<Value>,
    ) -> Arc<Change> {
        self.rv += 1;
        let rv = self.rv;
        let id = (ns.to_string(), name.to_string());
        let store = self.objects.entry(key.clone()).or_default();
        let old = store.get(&id).cloned();
        let (kind, object) = match new {
            Some(mut obj) => {
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                let obj = Arc::new(obj);
                store.insert(id, obj.clone());
                (
                    if old.is_some() {
                        ChangeKind::Modified
                    } else {
                        ChangeKind::Added
                    },
                    obj,
                )
            }
            None => {
                store.remove(&id);
                let mut last = old.as_deref().cloned().unwrap_or(Value::Null);
                last["metadata"]["resourceVersion"] = json!(rv.to_string());
                (ChangeKind::Deleted, Arc::new(last))
            }
        };
        let json = Bytes::from(serde_json::to_vec(&*object).unwrap_or_default());
        let change = Arc::new(Change {
            rv,
            key: key.clone(),
            namespace: ns.to_string(),
            name: name.to_string(),
            kind,
            object,
            old,
            json,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_cap {
            if let Some(c) = self.history.pop_front() {
                self.oldest_watchable = c.rv;
            }
        }
        if *key == crd_key() {
            self.rebuild_registry();
        }
        change
    }

    /// Where a watch on `def` starts, given the requested resourceVersion.
    /// `None`/"0" (or `send_initial`) starts with synthetic ADDED events.
    pub fn watch_start(
        &self,
        def: &ResourceDef,
        ns: Option<&str>,
        rv: Option<&str>,
        send_initial: bool,
    ) -> ApiResult<WatchStart> {
        let key = def.key();
        let from: Option<u64> = match rv {
            None | Some("") | Some("0") => None,
            Some(r) => Some(
                r.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r}")))?,
            ),
        };
        if send_initial || from.is_none() {
            let ns = ns.filter(|_| def.namespaced);
            let initial = self
                .objects
                .get(&key)
                .into_iter()
                .flat_map(|m| m.iter())
                .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
                .map(|((n, name), obj)| {
                    Arc::new(Change {
                        rv: self.rv,
                        key: key.clone(),
                        namespace: n.clone(),
                        name: name.clone(),
                        kind: ChangeKind::Added,
                        object: obj.clone(),
                        old: None,
                        json: Bytes::from(serde_json::to_vec(&**obj).unwrap_or_default()),
                    })
                })
                .collect();
            return Ok(WatchStart {
                initial,
                synthetic: true,
                rv: self.rv,
            });
        }
        let from = from.unwrap_or(self.rv);
        if from < self.oldest_watchable {
            return Err(ApiError::expired(format!(
                "too old resource version: {from} ({})",
                self.oldest_watchable
            )));
        }
        let initial = self
            .history
            .iter()
            .filter(|c| c.rv > from && c.key == key)
            .cloned()
            .collect();
        Ok(WatchStart {
            initial,
            synthetic: false,
            rv: self.rv,
        })
    }

    /// All objects of one resource (for tests and table building).
    pub fn count(&self, key: &ResourceKey) -> usize {
        self.objects.get(key).map(BTreeMap::len).unwrap_or(0)
    }
}

/// The metadata of an object (for `PartialObjectMetadata` table rows).
pub fn metadata_of(obj: &Value) -> Value {
    obj.get("metadata")
        .cloned()
        .unwrap_or(Value::Object(Map::new()))
}
