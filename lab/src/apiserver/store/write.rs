//! Create, update and patch: type and name checks, system-owned metadata,
//! status subresource rules, pruning/defaulting/validation, optimistic
//! concurrency and no-op detection.

use serde_json::{Value, json};

use super::super::admission;
use super::super::patch::{self as patch, PatchType};
use super::super::resources::{ResourceDef, ResourceKey};
use super::super::schema;
use super::super::status::{ApiError, ApiResult, FieldError};
use super::{
    FieldValidation, Store, Subresource, WriteOptions, WriteOutcome, at_version, crd_key,
    finalizers, generated_suffix, keep_allocated_service_fields, meta_str, new_uid, now_rfc3339,
    ns_key, spec_part,
};

impl Store {
    /// Fills in or checks `apiVersion` and `kind` against the resource.
    pub(super) fn check_type_meta(def: &ResourceDef, obj: &mut Value) -> ApiResult<()> {
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
    pub(super) fn finish_write(
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

    pub(super) fn check_namespace_open(
        &self,
        def: &ResourceDef,
        ns: &str,
        name: &str,
    ) -> ApiResult<()> {
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

    pub(super) fn crd_terminating(&self, def: &ResourceDef) -> bool {
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
        patch_type: PatchType,
        patch: &Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> ApiResult<WriteOutcome> {
        if def.crd.is_some() && patch_type == PatchType::Strategic {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json",
            ));
        }
        let existing = self.get(def, ns, name)?;
        let mut patched =
            patch::apply(&existing, patch_type, patch, &def.kind).map_err(|e| ApiError {
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
}
