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

use super::admission::{self, CRD_CLEANUP_FINALIZER};
use super::resources::{Registry, ResourceDef, ResourceKey};
use super::schema;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult, FieldError};

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

    /// Fills in or checks `apiVersion` and `kind` against the resource.
    fn check_type_meta(def: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
        let Some(m) = obj.as_object_mut() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        let want_av = def.api_version();
        match m.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                m.insert("apiVersion".into(), json!(want_av));
            }
            Some(av) if av == want_av => {}
            Some(av) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )));
            }
        }
        match m.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                m.insert("kind".into(), json!(def.kind));
            }
            Some(k) if k == def.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    def.kind
                )));
            }
        }
        if !m.get("metadata").is_some_and(Value::is_object) {
            m.insert("metadata".into(), json!({}));
        }
        Ok(())
    }

    /// Pruning, defaulting and validation shared by create and update.
    fn finish_write(
        &self,
        def: &ResourceDef,
        obj: &mut Value,
        opts: &WriteOptions,
        stored_versions: &[String],
    ) -> ApiResult<Vec<String>> {
        let name = meta_str(obj, "name").to_string();
        let mut warnings = Vec::new();
        let mut errs: Vec<FieldError> = Vec::new();
        if let Some(s) = &def.schema {
            let pruned = schema::prune(s, obj);
            if !pruned.is_empty() {
                let texts: Vec<String> = pruned
                    .iter()
                    .map(|p| format!("unknown field \"{p}\""))
                    .collect();
                match opts.field_validation {
                    FieldValidation::Strict => {
                        return Err(ApiError::bad_request(format!(
                            "strict decoding error: {}",
                            texts.join(", ")
                        )));
                    }
                    FieldValidation::Warn => warnings.extend(texts),
                    FieldValidation::Ignore => {}
                }
            }
            schema::apply_defaults(s, obj);
            errs.extend(schema::validate(s, obj));
        }
        admission::default_object(def, obj, stored_versions);
        errs.extend(admission::validate(def, obj));
        if !errs.is_empty() {
            return Err(ApiError::invalid(&def.group, &def.kind, &name, &errs));
        }
        Ok(warnings)
    }

    fn check_namespace_open(&self, def: &ResourceDef, ns: &str, name: &str) -> ApiResult<()> {
        if !def.namespaced {
            return Ok(());
        }
        match self.lookup(&ns_key(), "", ns) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                Err(ApiError::forbidden(
                    &def.group,
                    &def.resource,
                    name,
                    &format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ),
                ))
            }
            Some(_) => Ok(()),
        }
    }

    fn crd_terminating(&self, def: &ResourceDef) -> bool {
        def.crd.as_ref().is_some_and(|c| {
            self.lookup(&crd_key(), "", c)
                .is_some_and(|o| o.pointer("/metadata/deletionTimestamp").is_some())
        })
    }

    pub fn create(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        Self::check_type_meta(def, &mut obj)?;
        let ns = Self::ns_of(def, ns);
        {
            let meta = obj["metadata"]
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
            if def.namespaced {
                match meta.get("namespace").and_then(Value::as_str) {
                    None | Some("") => {
                        meta.insert("namespace".into(), json!(ns));
                    }
                    Some(n) if n == ns => {}
                    Some(_) => {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                }
            } else {
                meta.remove("namespace");
            }
            let name_empty = meta
                .get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if name_empty
                && let Some(g) = meta
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
            {
                let name = format!("{g}{}", generated_suffix());
                meta.insert("name".into(), json!(name));
            }
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                meta.remove(f);
            }
            meta.insert("uid".into(), json!(new_uid()));
            meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
            meta.insert("generation".into(), json!(1));
        }
        let name = meta_str(&obj, "name").to_string();
        if self.crd_terminating(def) {
            return Err(ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: "create not allowed while custom resource definition is terminating"
                    .to_string(),
                details: json!({"name": name, "kind": def.resource, "group": def.group}),
            });
        }
        admission::prepare_create(def, &mut obj);
        if def.crd.is_none() && def.key() == ResourceKey::new("", "services") {
            self.allocate_cluster_ip(&mut obj)?;
        }
        let warnings = self.finish_write(def, &mut obj, opts, &[])?;
        self.check_namespace_open(def, &ns, &name)?;
        if self.lookup(&def.key(), &ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.resource, &name));
        }
        if opts.dry_run {
            return Ok(WriteOutcome {
                object: obj,
                changes: Vec::new(),
                warnings,
            });
        }
        let change = self.commit(&def.key(), &ns, &name, Some(obj));
        Ok(WriteOutcome {
            object: at_version(def, &change.object),
            changes: vec![change],
            warnings,
        })
    }

    pub fn update(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        mut body: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        Self::check_type_meta(def, &mut body)?;
        let ns = Self::ns_of(def, ns);
        let existing = self
            .lookup(&def.key(), &ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, name))?;
        match meta_str(&body, "name") {
            "" => body["metadata"]["name"] = json!(name),
            n if n == name => {}
            n => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        if def.namespaced {
            match meta_str(&body, "namespace") {
                "" => body["metadata"]["namespace"] = json!(ns),
                n if n == ns => {}
                _ => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        match meta_str(&body, "resourceVersion") {
            "" if !def.unconditional_update => {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    name,
                    &[FieldError::invalid(
                        "metadata.resourceVersion",
                        &json!(0),
                        "must be specified for an update",
                    )],
                ));
            }
            "" => {}
            rv if rv != meta_str(&existing, "resourceVersion") => {
                return Err(ApiError::stale(&def.group, &def.resource, name));
            }
            _ => {}
        }
        let mut new = match sub {
            Subresource::Status => {
                let mut n = (*existing).clone();
                match body.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                n
            }
            Subresource::Main => {
                let mut n = body;
                if def.status_subresource {
                    match existing.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                if def.crd.is_none() && def.resource == "namespaces" {
                    n["spec"] = existing.get("spec").cloned().unwrap_or(json!({}));
                }
                if def.crd.is_none() && def.key() == ResourceKey::new("", "services") {
                    keep_allocated_service_fields(&existing, &mut n);
                }
                n
            }
        };
        // System-owned metadata is the server's, whatever the client sent.
        {
            let em = existing["metadata"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let Some(m) = new["metadata"].as_object_mut() else {
                return Err(ApiError::bad_request("metadata must be an object"));
            };
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match em.get(f) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.remove("managedFields");
            m.remove("selfLink");
        }
        let deleting = existing.pointer("/metadata/deletionTimestamp").is_some();
        if deleting {
            let before = finalizers(&existing);
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    name,
                    &[FieldError::forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted",
                    )],
                ));
            }
        }
        let stored: Vec<String> = existing
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let warnings = self.finish_write(def, &mut new, opts, &stored)?;
        if spec_part(&new) != spec_part(&existing) {
            let g = existing
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let existing_at = at_version(def, &existing);
        if new == existing_at {
            // A no-op write changes nothing: same resourceVersion, no event.
            return Ok(WriteOutcome {
                object: existing_at,
                changes: Vec::new(),
                warnings,
            });
        }
        if opts.dry_run {
            return Ok(WriteOutcome {
                object: new,
                changes: Vec::new(),
                warnings,
            });
        }
        let mut changes = Vec::new();
        if deleting && finalizers(&new).is_empty() {
            self.remove(def, &ns, name, Some(new), &mut changes);
        } else {
            changes.push(self.commit(&def.key(), &ns, name, Some(new)));
            if def.crd.is_none() && def.resource == "customresourcedefinitions" {
                self.try_finalize_crd(name, &mut changes);
            }
        }
        let object = changes
            .iter()
            .find(|c| c.key == def.key() && c.name == name)
            .map(|c| at_version(def, &c.object));
        Ok(WriteOutcome {
            object: object.unwrap_or(Value::Null),
            changes,
            warnings,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        patch_type: super::patch::PatchType,
        patch: &Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        if def.crd.is_some() && patch_type == super::patch::PatchType::Strategic {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json",
            ));
        }
        let existing = self.get(def, ns, name)?;
        let mut patched =
            super::patch::apply(&existing, patch_type, patch, &def.kind).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: e.0,
                details: json!({}), // upstream answers a patch that does not apply with a bare 422
            })?;
        if !patched.is_object() {
            return Err(ApiError::bad_request(
                "the patched object is not a JSON object",
            ));
        }
        if meta_str(&patched, "resourceVersion").is_empty() {
            patched["metadata"]["resourceVersion"] = json!(meta_str(&existing, "resourceVersion"));
        }
        self.update(def, ns, name, patched, sub, opts)
    }

    pub fn delete(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<WriteOutcome> {
        let ns = Self::ns_of(def, ns);
        let existing = self
            .lookup(&def.key(), &ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&def.group, &def.resource, name))?;
        if let Some(uid) = &opts.precondition_uid {
            let have = meta_str(&existing, "uid");
            if uid != have {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.resource,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            let have = meta_str(&existing, "resourceVersion");
            if rv != have {
                return Err(ApiError::conflict(
                    &def.group,
                    &def.resource,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok(WriteOutcome {
                object: at_version(def, &existing),
                changes: Vec::new(),
                warnings: Vec::new(),
            });
        }
        let mut changes = Vec::new();
        self.delete_object(def.key(), &ns, name, &mut changes);
        let object = changes
            .iter()
            .rev()
            .find(|c| c.key == def.key() && c.name == name && c.namespace == ns)
            .map(|c| at_version(def, &c.object))
            .unwrap_or_else(|| at_version(def, &existing));
        Ok(WriteOutcome {
            object,
            changes,
            warnings: Vec::new(),
        })
    }

    pub fn delete_collection(
        &mut self,
        def: &ResourceDef,
        ns: Option<&str>,
        opts: &ListOptions,
        dry_run: bool,
    ) -> ApiResult<(Value, Vec<Arc<Change>>)> {
        let list = self.list(
            def,
            ns,
            &ListOptions {
                limit: None,
                continue_token: None,
                ..opts.clone()
            },
        )?;
        let mut changes = Vec::new();
        let mut items = Vec::new();
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let (ins, iname) = (
                meta_str(&item, "namespace").to_string(),
                meta_str(&item, "name").to_string(),
            );
            if !dry_run {
                self.delete_object(def.key(), &ins, &iname, &mut changes);
            }
            items.push(item);
        }
        let out = json!({"kind": def.list_kind, "apiVersion": def.api_version(), "metadata": {"resourceVersion": self.rv.to_string()}, "items": items});
        Ok((out, changes))
    }

    /// Deletion with finalizer semantics, and the namespace/CRD cleanup it starts.
    fn delete_object(
        &mut self,
        key: ResourceKey,
        ns: &str,
        name: &str,
        changes: &mut Vec<Arc<Change>>,
    ) {
        let Some(existing) = self.lookup(&key, ns, name).cloned() else {
            return;
        };
        let Some(def) = self.registry.storage_def(&key).cloned() else {
            // Storage of a resource no longer served: drop it outright.
            changes.push(self.commit(&key, ns, name, None));
            return;
        };
        let is_ns = def.crd.is_none() && key == ns_key();
        let is_crd = def.crd.is_none() && key == crd_key();
        let holds = !finalizers(&existing).is_empty()
            || (is_ns
                && existing
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()));
        if !holds {
            self.remove(&def, ns, name, None, changes);
            return;
        }
        if existing.pointer("/metadata/deletionTimestamp").is_none() {
            let mut o = (*existing).clone();
            o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let g = o
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            o["metadata"]["generation"] = json!(g + 1);
            if is_ns {
                o["status"]["phase"] = json!("Terminating");
            }
            if is_crd {
                let stored: Vec<String> = o
                    .pointer("/status/storedVersions")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                admission::default_object(&def, &mut o, &stored);
            }
            changes.push(self.commit(&key, ns, name, Some(o)));
        }
        if is_ns {
            self.delete_namespace_contents(name, changes);
            self.try_finalize_namespace(name, changes);
        } else if is_crd {
            self.delete_custom_resources(name, changes);
            self.try_finalize_crd(name, changes);
        }
    }

    /// Removes an object for good (its finalizers are gone), then lets the
    /// namespace or CRD it belongs to finish terminating.
    fn remove(
        &mut self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
        last: Option<Value>,
        changes: &mut Vec<Arc<Change>>,
    ) {
        let key = def.key();
        if let Some(last) = last {
            // Record the final state (finalizers removed) before the removal.
            self.objects
                .entry(key.clone())
                .or_default()
                .insert((ns.to_string(), name.to_string()), Arc::new(last));
        }
        changes.push(self.commit(&key, ns, name, None));
        if def.namespaced && !ns.is_empty() {
            self.try_finalize_namespace(ns, changes);
        }
        if let Some(crd) = &def.crd {
            let crd = crd.clone();
            self.try_finalize_crd(&crd, changes);
        }
    }

    fn namespaced_keys(&self) -> Vec<ResourceKey> {
        let mut keys: Vec<ResourceKey> = self
            .objects
            .keys()
            .filter(|k| self.registry.storage_def(k).is_none_or(|d| d.namespaced))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    fn delete_namespace_contents(&mut self, ns: &str, changes: &mut Vec<Arc<Change>>) {
        for key in self.namespaced_keys() {
            let names: Vec<String> = self.objects[&key]
                .keys()
                .filter(|(n, _)| n == ns)
                .map(|(_, name)| name.clone())
                .collect();
            for name in names {
                self.delete_object(key.clone(), ns, &name, changes);
            }
        }
    }

    fn try_finalize_namespace(&mut self, ns: &str, changes: &mut Vec<Arc<Change>>) {
        let Some(nso) = self.lookup(&ns_key(), "", ns).cloned() else {
            return;
        };
        if nso.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let empty = self
            .namespaced_keys()
            .iter()
            .all(|k| !self.objects[k].keys().any(|(n, _)| n == ns));
        if !empty {
            return;
        }
        let mut o = (*nso).clone();
        o["spec"]["finalizers"] = json!([]);
        let Some(def) = self.registry.storage_def(&ns_key()).cloned() else {
            return;
        };
        if finalizers(&o).is_empty() {
            self.remove(&def, "", ns, None, changes);
        } else if o != *nso {
            changes.push(self.commit(&ns_key(), "", ns, Some(o)));
        }
    }

    fn delete_custom_resources(&mut self, crd_name: &str, changes: &mut Vec<Arc<Change>>) {
        let Some(key) = self
            .registry
            .all()
            .iter()
            .find(|d| d.crd.as_deref() == Some(crd_name))
            .map(|d| d.key())
        else {
            return;
        };
        let ids: Vec<(String, String)> = self
            .objects
            .get(&key)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (ns, name) in ids {
            self.delete_object(key.clone(), &ns, &name, changes);
        }
    }

    fn try_finalize_crd(&mut self, crd_name: &str, changes: &mut Vec<Arc<Change>>) {
        let Some(crd) = self.lookup(&crd_key(), "", crd_name).cloned() else {
            return;
        };
        if crd.pointer("/metadata/deletionTimestamp").is_none() {
            return;
        }
        let key = self
            .registry
            .all()
            .iter()
            .find(|d| d.crd.as_deref() == Some(crd_name))
            .map(|d| d.key());
        if key
            .as_ref()
            .is_some_and(|k| self.objects.get(k).is_some_and(|m| !m.is_empty()))
        {
            return;
        }
        let mut o = (*crd).clone();
        let fins: Vec<Value> = finalizers(&o)
            .into_iter()
            .filter(|f| f != CRD_CLEANUP_FINALIZER)
            .collect();
        o["metadata"]["finalizers"] = Value::Array(fins.clone());
        let Some(def) = self.registry.storage_def(&crd_key()).cloned() else {
            return;
        };
        if fins.is_empty() {
            self.remove(&def, "", crd_name, None, changes);
            if let Some(k) = key {
                self.objects.remove(&k);
            }
        } else if o != *crd {
            changes.push(self.commit(&crd_key(), "", crd_name, Some(o)));
        }
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

    /// Gives a new Service its ClusterIP from 10.96.0.0/12 (lowest free address
    /// from 10.96.0.10; .1 is what a real cluster gives the `kubernetes` Service),
    /// unless it asks for one, is headless (`None`) or is an ExternalName.
    fn allocate_cluster_ip(&self, svc: &mut Value) -> ApiResult<()> {
        if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
            return Ok(());
        }
        let asked = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let used: std::collections::HashSet<String> = self
            .objects
            .get(&ResourceKey::new("", "services"))
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|o| {
                o.pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        let ip = if asked.is_empty() {
            let base = u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0));
            let free = (10..(1u32 << 20) - 1)
                .map(|i| std::net::Ipv4Addr::from(base + i).to_string())
                .find(|ip| !used.contains(ip));
            free.ok_or_else(|| {
                ApiError::internal("the service ClusterIP range 10.96.0.0/12 is full")
            })?
        } else if asked != "None" && used.contains(&asked) {
            let name = meta_str(svc, "name").to_string();
            return Err(ApiError::invalid(
                "",
                "Service",
                &name,
                &[FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([asked]),
                    "failed to allocate IP: provided IP is already allocated",
                )],
            ));
        } else {
            asked
        };
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
        Ok(())
    }

    /// All objects of one resource (for tests and table building).
    pub fn count(&self, key: &ResourceKey) -> usize {
        self.objects.get(key).map(BTreeMap::len).unwrap_or(0)
    }
}

/// An update that omits a Service's allocated fields keeps them (upstream
/// `patchAllocatedValues`).
fn keep_allocated_service_fields(existing: &Value, new: &mut Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for f in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
    ] {
        if !spec.contains_key(f)
            && let Some(v) = existing.pointer(&format!("/spec/{f}"))
        {
            spec.insert(f.into(), v.clone());
        }
    }
}

/// The metadata of an object (for `PartialObjectMetadata` table rows).
pub fn metadata_of(obj: &Value) -> Value {
    obj.get("metadata")
        .cloned()
        .unwrap_or(Value::Object(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(100)
    }

    fn def(s: &Store, g: &str, r: &str) -> ResourceDef {
        s.registry()
            .all()
            .iter()
            .find(|d| d.group == g && d.resource == r)
            .cloned()
            .unwrap()
    }

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
    }

    #[test]
    fn fresh_store_has_the_four_namespaces_labelled() {
        let s = store();
        let d = def(&s, "", "namespaces");
        let list = s.list(&d, None, &ListOptions::default()).unwrap();
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["default", "kube-node-lease", "kube-public", "kube-system"]
        );
        assert_eq!(
            list["items"][0]["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "default"
        );
        assert_eq!(list["items"][0]["status"]["phase"], "Active");
    }

    #[test]
    fn create_conflicts_and_versions() {
        let mut s = store();
        let d = def(&s, "", "configmaps");
        let o = s
            .create(&d, Some("default"), cm("a"), &WriteOptions::default())
            .unwrap()
            .object;
        let rv1: u64 = o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            s.create(&d, Some("default"), cm("a"), &WriteOptions::default())
                .unwrap_err()
                .reason,
            "AlreadyExists"
        );
        assert_eq!(
            s.create(&d, Some("nope"), cm("b"), &WriteOptions::default())
                .unwrap_err()
                .code,
            404
        );
        let mut upd = o.clone();
        upd["data"]["a"] = json!("2");
        let o2 = s
            .update(
                &d,
                Some("default"),
                "a",
                upd.clone(),
                Subresource::Main,
                &WriteOptions::default(),
            )
            .unwrap()
            .object;
        let rv2: u64 = o2["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv2 > rv1);
        assert_eq!(o2["metadata"]["generation"], 2);
        // The same stale body again: 409.
        let e = s
            .update(
                &d,
                Some("default"),
                "a",
                upd,
                Subresource::Main,
                &WriteOptions::default(),
            )
            .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        // A no-op update keeps the version.
        let o3 = s
            .update(
                &d,
                Some("default"),
                "a",
                o2.clone(),
                Subresource::Main,
                &WriteOptions::default(),
            )
            .unwrap();
        assert!(o3.changes.is_empty());
        assert_eq!(
            o3.object["metadata"]["resourceVersion"],
            o2["metadata"]["resourceVersion"]
        );
    }

    #[test]
    fn generate_name_and_pagination_with_consistent_snapshot() {
        let mut s = store();
        let d = def(&s, "", "configmaps");
        for i in 0..5 {
            s.create(
                &d,
                Some("default"),
                cm(&format!("c{i}")),
                &WriteOptions::default(),
            )
            .unwrap();
        }
        let g = s
            .create(
                &d,
                Some("default"),
                json!({"metadata": {"generateName": "gen-"}}),
                &WriteOptions::default(),
            )
            .unwrap();
        let gname = g.object["metadata"]["name"].as_str().unwrap().to_string();
        assert!(gname.starts_with("gen-") && gname.len() == 9);
        let page1 = s
            .list(
                &d,
                Some("default"),
                &ListOptions {
                    limit: Some(2),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page1["items"].as_array().unwrap().len(), 2);
        assert_eq!(page1["metadata"]["remainingItemCount"], 4);
        let tok = page1["metadata"]["continue"].as_str().unwrap().to_string();
        // A change after page 1 must not show in later pages of the same list.
        s.delete(&d, Some("default"), "c3", &DeleteOptions::default())
            .unwrap();
        let mut names = vec![];
        let mut cont = Some(tok);
        while let Some(c) = cont {
            let p = s
                .list(
                    &d,
                    Some("default"),
                    &ListOptions {
                        limit: Some(2),
                        continue_token: Some(c),
                        ..Default::default()
                    },
                )
                .unwrap();
            names.extend(
                p["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
            );
            cont = p["metadata"]["continue"].as_str().map(str::to_string);
        }
        assert_eq!(
            names,
            vec!["c2".to_string(), "c3".into(), "c4".into(), gname]
        );
        s.compact();
        let e = s
            .list(
                &d,
                Some("default"),
                &ListOptions {
                    limit: Some(2),
                    continue_token: page1["metadata"]["continue"].as_str().map(str::to_string),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.code, 410);
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let mut s = store();
        let d = def(&s, "", "configmaps");
        let mut o = cm("f");
        o["metadata"]["finalizers"] = json!(["example.com/hold"]);
        s.create(&d, Some("default"), o, &WriteOptions::default())
            .unwrap();
        let del = s
            .delete(&d, Some("default"), "f", &DeleteOptions::default())
            .unwrap();
        assert!(del.object["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(del.changes[0].kind, ChangeKind::Modified);
        let mut cur = s.get(&d, Some("default"), "f").unwrap();
        cur["metadata"]["finalizers"] = json!(["example.com/hold", "x/new"]);
        assert_eq!(
            s.update(
                &d,
                Some("default"),
                "f",
                cur.clone(),
                Subresource::Main,
                &WriteOptions::default()
            )
            .unwrap_err()
            .code,
            422
        );
        cur["metadata"]["finalizers"] = json!([]);
        let out = s
            .update(
                &d,
                Some("default"),
                "f",
                cur,
                Subresource::Main,
                &WriteOptions::default(),
            )
            .unwrap();
        assert_eq!(out.changes.last().unwrap().kind, ChangeKind::Deleted);
        assert_eq!(s.get(&d, Some("default"), "f").unwrap_err().code, 404);
    }

    #[test]
    fn namespace_deletion_removes_content_then_itself() {
        let mut s = store();
        let nsd = def(&s, "", "namespaces");
        let d = def(&s, "", "configmaps");
        s.create(
            &nsd,
            None,
            json!({"metadata": {"name": "t"}}),
            &WriteOptions::default(),
        )
        .unwrap();
        let mut held = cm("held");
        held["metadata"]["finalizers"] = json!(["x/y"]);
        s.create(&d, Some("t"), held, &WriteOptions::default())
            .unwrap();
        s.create(&d, Some("t"), cm("plain"), &WriteOptions::default())
            .unwrap();
        s.delete(&nsd, None, "t", &DeleteOptions::default())
            .unwrap();
        assert_eq!(
            s.get(&nsd, None, "t").unwrap()["status"]["phase"],
            "Terminating"
        );
        assert_eq!(s.get(&d, Some("t"), "plain").unwrap_err().code, 404);
        assert_eq!(
            s.create(&d, Some("t"), cm("late"), &WriteOptions::default())
                .unwrap_err()
                .code,
            403
        );
        let mut h = s.get(&d, Some("t"), "held").unwrap();
        h["metadata"]["finalizers"] = json!([]);
        s.update(
            &d,
            Some("t"),
            "held",
            h,
            Subresource::Main,
            &WriteOptions::default(),
        )
        .unwrap();
        assert_eq!(s.get(&nsd, None, "t").unwrap_err().code, 404);
    }

    #[test]
    fn status_subresource_separates_spec_and_status() {
        let mut s = store();
        let d = def(&s, "", "pods");
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}});
        let o = s
            .create(&d, Some("default"), pod, &WriteOptions::default())
            .unwrap()
            .object;
        assert_eq!(o["status"]["phase"], "Pending");
        let mut st = o.clone();
        st["status"]["phase"] = json!("Running");
        st["spec"]["nodeName"] = json!("ignored");
        let o2 = s
            .update(
                &d,
                Some("default"),
                "p",
                st,
                Subresource::Status,
                &WriteOptions::default(),
            )
            .unwrap()
            .object;
        assert_eq!(o2["status"]["phase"], "Running");
        assert!(o2["spec"].get("nodeName").is_none());
        assert_eq!(o2["metadata"]["generation"], 1);
        let mut main = o2.clone();
        main["status"]["phase"] = json!("Failed");
        main["spec"]["nodeName"] = json!("n1");
        let o3 = s
            .update(
                &d,
                Some("default"),
                "p",
                main,
                Subresource::Main,
                &WriteOptions::default(),
            )
            .unwrap()
            .object;
        assert_eq!(o3["status"]["phase"], "Running");
        assert_eq!(o3["spec"]["nodeName"], "n1");
    }

    #[test]
    fn services_get_distinct_cluster_ips_kept_across_updates() {
        let mut s = store();
        let d = def(&s, "", "services");
        let svc = |n: &str| json!({"metadata": {"name": n}, "spec": {"ports": [{"port": 80}]}});
        let a = s
            .create(&d, Some("default"), svc("a"), &WriteOptions::default())
            .unwrap()
            .object;
        let b = s
            .create(&d, Some("default"), svc("b"), &WriteOptions::default())
            .unwrap()
            .object;
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.11");
        assert_eq!(b["spec"]["clusterIPs"], json!(["10.96.0.11"]));
        let mut taken = svc("c");
        taken["spec"]["clusterIP"] = json!("10.96.0.10");
        assert_eq!(
            s.create(&d, Some("default"), taken, &WriteOptions::default())
                .unwrap_err()
                .code,
            422
        );
        let mut upd = svc("a");
        upd["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"].clone();
        let a2 = s
            .update(
                &d,
                Some("default"),
                "a",
                upd,
                Subresource::Main,
                &WriteOptions::default(),
            )
            .unwrap()
            .object;
        assert_eq!(a2["spec"]["clusterIP"], "10.96.0.10");
    }

    #[test]
    fn watch_window_and_state_round_trip() {
        let mut s = Store::new(2);
        let d = def(&s, "", "configmaps");
        let start = s.resource_version();
        for i in 0..3 {
            s.create(
                &d,
                Some("default"),
                cm(&format!("w{i}")),
                &WriteOptions::default(),
            )
            .unwrap();
        }
        assert_eq!(
            s.watch_start(&d, None, Some(&start.to_string()), false)
                .err()
                .unwrap()
                .code,
            410
        );
        let w = s
            .watch_start(&d, None, Some(&(start + 1).to_string()), false)
            .unwrap();
        assert_eq!(w.initial.len(), 2);
        let restored = Store::from_state(s.to_state(), 10);
        assert_eq!(restored.resource_version(), s.resource_version());
        assert_eq!(
            restored.get(&d, Some("default"), "w1").unwrap(),
            s.get(&d, Some("default"), "w1").unwrap()
        );
        assert_eq!(
            restored
                .watch_start(&d, None, Some(&(start + 2).to_string()), false)
                .err()
                .unwrap()
                .code,
            410
        );
    }
}
