//! Deletion with finalizer semantics, and the in-line work of the two
//! controllers the API needs to be usable: namespace finalization (contents
//! deleted, then the namespace) and CRD cleanup (objects deleted, resource
//! unserved).

use std::sync::Arc;

use serde_json::{Value, json};

use super::super::admission::{self, CRD_CLEANUP_FINALIZER};
use super::super::resources::{ResourceDef, ResourceKey};
use super::super::status::{ApiError, ApiResult};
use super::{
    Change, DeleteOptions, ListOptions, Store, WriteOutcome, at_version, crd_key, finalizers,
    meta_str, now_rfc3339, ns_key,
};

impl Store {
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
    pub(super) fn delete_object(
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
    pub(super) fn remove(
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

    pub(super) fn namespaced_keys(&self) -> Vec<ResourceKey> {
        let mut keys: Vec<ResourceKey> = self
            .objects
            .keys()
            .filter(|k| self.registry.storage_def(k).is_none_or(|d| d.namespaced))
            .cloned()
            .collect();
        keys.sort();
        keys
    }

    pub(super) fn delete_namespace_contents(&mut self, ns: &str, changes: &mut Vec<Arc<Change>>) {
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

    pub(super) fn try_finalize_namespace(&mut self, ns: &str, changes: &mut Vec<Arc<Change>>) {
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

    pub(super) fn delete_custom_resources(
        &mut self,
        crd_name: &str,
        changes: &mut Vec<Arc<Change>>,
    ) {
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

    pub(super) fn try_finalize_crd(&mut self, crd_name: &str, changes: &mut Vec<Arc<Change>>) {
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
}
