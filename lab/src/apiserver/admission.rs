//! What the real API server's registry strategies do on write, for the kinds it
//! matters to: defaulting (namespace name label, pod and service defaults, CRD
//! names and status), status reset on create, and validation (object metadata,
//! CRD); NetworkPolicy rules live in `netpol`. Pure functions over JSON objects.

use serde_json::{Map, Value, json};

use super::resources::ResourceDef;
use super::selectors::{is_dns_label, is_dns_subdomain, validate_label_key, validate_label_value};
use super::status::FieldError;

pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
pub const CRD_CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn is(def: &ResourceDef, group: &str, resource: &str) -> bool {
    def.crd.is_none() && def.group == group && def.resource == resource
}

/// Status reset and create-only defaults (upstream `PrepareForCreate`).
pub fn prepare_create(def: &ResourceDef, obj: &mut Value) {
    if is(def, "", "pods") {
        obj["status"] = json!({"phase": "Pending"});
    } else if is(def, "", "namespaces") {
        obj["status"] = json!({"phase": "Active"});
        if obj.pointer("/spec/finalizers").is_none() {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
    } else if is(def, "", "services") {
        obj["status"] = json!({"loadBalancer": {}});
    } else if is(def, "apiextensions.k8s.io", "customresourcedefinitions") {
        let fins = obj.pointer_mut("/metadata/finalizers");
        match fins {
            Some(Value::Array(a)) => {
                if !a.iter().any(|f| f == CRD_CLEANUP_FINALIZER) {
                    a.push(json!(CRD_CLEANUP_FINALIZER));
                }
            }
            _ => obj["metadata"]["finalizers"] = json!([CRD_CLEANUP_FINALIZER]),
        }
    } else if def.crd.is_some()
        && def.status_subresource
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
}

/// Defaults applied on every write.
pub fn default_object(def: &ResourceDef, obj: &mut Value, existing_crd_stored_versions: &[String]) {
    if is(def, "", "namespaces") {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let labels = obj["metadata"]
            .as_object_mut()
            .map(|m| m.entry("labels").or_insert_with(|| json!({})));
        if let Some(Value::Object(l)) = labels {
            l.insert(NAMESPACE_NAME_LABEL.into(), Value::String(name));
        }
    } else if is(def, "networking.k8s.io", "networkpolicies") {
        super::netpol::default_network_policy(obj);
    } else if is(def, "", "pods") {
        default_pod(obj);
    } else if is(def, "", "services") {
        default_service(obj);
    } else if is(def, "apiextensions.k8s.io", "customresourcedefinitions") {
        default_crd(obj, existing_crd_stored_versions);
    }
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    m.entry(key).or_insert(v);
}

/// The core/v1 defaults of a pod spec and its containers (`SetDefaults_PodSpec`,
/// `SetDefaults_Container`, `SetDefaults_ContainerPort`) and what the
/// ServiceAccount admission plugin fills in, so readers see what a real server
/// returns (for instance `protocol: TCP` on every container port).
fn default_pod(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "serviceAccountName", json!("default"));
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        set_default(spec, "serviceAccount", sa);
    }
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            // Always for `:latest` or no tag, else IfNotPresent (digests count as tagged).
            let last = image.rsplit('/').next().unwrap_or(image);
            let latest =
                !last.contains('@') && last.split_once(':').is_none_or(|(_, tag)| tag == "latest");
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
            for p in c
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(p) = p.as_object_mut() {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// `SetDefaults_Service` / `SetDefaults_ServicePort` (no ClusterIP allocation).
fn default_service(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    for p in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_object_mut() {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
}

/// Names defaults and the status the CRD controllers would write at once:
/// accepted names, NamesAccepted/Established conditions, stored versions.
fn default_crd(obj: &mut Value, stored_before: &[String]) {
    let Some(names) = obj
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    names
        .entry("singular")
        .or_insert_with(|| json!(kind.to_lowercase()));
    names
        .entry("listKind")
        .or_insert_with(|| json!(format!("{kind}List")));
    let accepted = Value::Object(names.clone());
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("scope").or_insert_with(|| json!("Namespaced"));
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
    let storage = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v.get("storage") == Some(&json!(true))))
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut stored: Vec<String> = stored_before.to_vec();
    if !storage.is_empty() && !stored.contains(&storage) {
        stored.push(storage);
    }
    let now = obj
        .pointer("/metadata/creationTimestamp")
        .cloned()
        .unwrap_or(Value::Null);
    let terminating = obj.pointer("/metadata/deletionTimestamp").is_some();
    let mut conditions = vec![
        json!({"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now}),
        json!({"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}),
    ];
    if terminating {
        conditions.push(json!({"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress", "message": "CustomResource deletion is in progress", "lastTransitionTime": now}));
    }
    obj["status"] =
        json!({"acceptedNames": accepted, "conditions": conditions, "storedVersions": stored});
}

/// Validation of the object about to be stored.
pub fn validate(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_metadata(def, obj);
    if is(def, "networking.k8s.io", "networkpolicies") {
        errs.extend(super::netpol::validate_network_policy(obj));
    } else if is(def, "apiextensions.k8s.io", "customresourcedefinitions") {
        errs.extend(validate_crd(obj));
    }
    errs
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn validate_metadata(def: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name_v = obj
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    let name = name_v.as_str().unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if is(def, "", "namespaces") || is(def, "", "services") {
        if !is_dns_label(name) {
            errs.push(FieldError::invalid("metadata.name", &name_v, LABEL_MSG));
        }
    } else if !is_dns_subdomain(name) {
        errs.push(FieldError::invalid("metadata.name", &name_v, SUBDOMAIN_MSG));
    }
    if let Some(labels) = obj.pointer("/metadata/labels") {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    if let Err(why) = validate_label_key(k) {
                        errs.push(FieldError::invalid("metadata.labels", &json!(k), why));
                    }
                    match v.as_str() {
                        Some(s) => {
                            if let Err(why) = validate_label_value(s) {
                                errs.push(FieldError::invalid("metadata.labels", v, why));
                            }
                        }
                        None => errs.push(FieldError::invalid(
                            "metadata.labels",
                            v,
                            "label values must be strings",
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => errs.push(FieldError::invalid(
                "metadata.labels",
                labels,
                "must be a map of strings",
            )),
        }
    }
    if let Some(ann) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in ann {
            if let Err(why) = validate_label_key(k) {
                errs.push(FieldError::invalid("metadata.annotations", &json!(k), why));
            }
            if !v.is_string() {
                errs.push(FieldError::invalid(
                    format!("metadata.annotations[{k}]"),
                    v,
                    "annotation values must be strings",
                ));
            }
        }
    }
    errs
}

/// Validates a `metav1.LabelSelector` object at `path`.
pub(super) fn validate_label_selector(sel: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if sel.is_null() {
        return;
    }
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if let Err(why) = validate_label_key(k) {
                errs.push(FieldError::invalid(
                    format!("{path}.matchLabels"),
                    &json!(k),
                    why,
                ));
            }
            if let Err(why) = validate_label_value(v.as_str().unwrap_or("")) {
                errs.push(FieldError::invalid(format!("{path}.matchLabels"), v, why));
            }
        }
    }
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for (i, e) in exprs.iter().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            let values = e
                .get("values")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            let op = e.get("operator").cloned().unwrap_or(Value::Null);
            match op.as_str() {
                Some("In") | Some("NotIn") if values == 0 => errs.push(FieldError::required(
                    format!("{p}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                )),
                Some("Exists") | Some("DoesNotExist") if values > 0 => {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ))
                }
                Some("In" | "NotIn" | "Exists" | "DoesNotExist") => {}
                _ => errs.push(FieldError::invalid(
                    format!("{p}.operator"),
                    &op,
                    "not a valid selector operator",
                )),
            }
            match e.get("key").and_then(Value::as_str) {
                Some(k) => {
                    if let Err(why) = validate_label_key(k) {
                        errs.push(FieldError::invalid(format!("{p}.key"), &json!(k), why));
                    }
                }
                None => errs.push(FieldError::required(format!("{p}.key"), "")),
            }
        }
    }
}

fn validate_crd(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let get = |p: &str| obj.pointer(p).cloned().unwrap_or(Value::Null);
    let group = get("/spec/group");
    let plural = get("/spec/names/plural");
    let kind = get("/spec/names/kind");
    let g = group.as_str().unwrap_or("");
    if g.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !g.contains('.') || !is_dns_subdomain(g) {
        errs.push(FieldError::invalid(
            "spec.group",
            &group,
            "should be a domain with at least one dot",
        ));
    }
    let p = plural.as_str().unwrap_or("");
    if p.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    } else if !is_dns_label(p) {
        errs.push(FieldError::invalid("spec.names.plural", &plural, LABEL_MSG));
    }
    if kind.as_str().unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    let name = get("/metadata/name");
    if !p.is_empty() && !g.is_empty() && name.as_str() != Some(&format!("{p}.{g}")) {
        errs.push(FieldError::invalid(
            "metadata.name",
            &name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = get("/spec/scope");
    if !matches!(scope.as_str(), Some("Namespaced" | "Cluster")) {
        errs.push(FieldError::not_supported(
            "spec.scope",
            &scope,
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage") == Some(&json!(true)))
        .count();
    if !versions.is_empty() && storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if v.get("name")
            .and_then(Value::as_str)
            .is_none_or(|n| !is_dns_label(n))
        {
            errs.push(FieldError::required(format!("spec.versions[{i}].name"), ""));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => errs.push(FieldError::required(
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(s) if s.get("type").and_then(Value::as_str) != Some("object") => {
                errs.push(FieldError::invalid(
                    format!("spec.versions[{i}].schema.openAPIV3Schema.type"),
                    s.get("type").unwrap_or(&Value::Null),
                    "must be object at the root",
                ))
            }
            Some(_) => {}
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::builtins;

    fn def(resource: &str) -> ResourceDef {
        builtins()
            .into_iter()
            .find(|d| d.resource == resource)
            .unwrap()
    }

    #[test]
    fn pod_and_service_defaults() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "b", "image": "reg:5000/x/busybox:1.36", "imagePullPolicy": "Never"},
            {"name": "c", "image": "busybox:1.36"}
        ]}});
        default_object(&def("pods"), &mut pod, &[]);
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "Never");
        assert_eq!(
            pod["spec"]["containers"][2]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        default_object(&def("services"), &mut svc, &[]);
        assert_eq!(
            svc["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(svc["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn namespace_gets_its_name_label() {
        let mut o = json!({"metadata": {"name": "team-a", "labels": {"x": "y"}}});
        default_object(&def("namespaces"), &mut o, &[]);
        assert_eq!(o["metadata"]["labels"][NAMESPACE_NAME_LABEL], "team-a");
        assert_eq!(o["metadata"]["labels"]["x"], "y");
    }

    #[test]
    fn crd_needs_schema_and_matching_name() {
        let o = json!({"metadata": {"name": "x.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"}, "versions": [{"name": "v1", "served": true, "storage": true}]}});
        let errs: Vec<String> = validate(&def("customresourcedefinitions"), &o)
            .iter()
            .map(|e| e.field.clone())
            .collect();
        assert_eq!(
            errs,
            vec!["metadata.name", "spec.versions[0].schema.openAPIV3Schema"]
        );
    }
}
