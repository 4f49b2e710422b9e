//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the
//! strategic merge patch kubectl sends for built-in kinds.
//!
//! Strategic merge needs to know, per list field, whether the list is replaced,
//! merged by a key, or merged as a set of primitives. Upstream reads that from Go
//! struct tags; here it is a table ([`list_strategy`]) covering the kinds served.

use serde_json::{Map, Value};

/// The patch types the server accepts (by request Content-Type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            _ => None,
        }
    }
}

/// How a list is combined by a strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    Replace,
    MergeByKey(&'static str),
    MergePrimitives,
}

/// The list strategy of the field at `path` (map keys from the object root;
/// list traversal adds no segment) in an object of `kind`.
pub fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    use ListStrategy::*;
    match path {
        ["metadata", "finalizers"] => return MergePrimitives,
        ["metadata", "ownerReferences"] => return MergeByKey("uid"),
        _ => {}
    }
    let containers = |s: &str| matches!(s, "containers" | "initContainers" | "ephemeralContainers");
    match (kind, path) {
        ("Pod", ["spec", c]) if containers(c) => MergeByKey("name"),
        ("Pod", ["spec", c, "ports"]) if containers(c) => MergeByKey("containerPort"),
        ("Pod", ["spec", c, "env"]) if containers(c) => MergeByKey("name"),
        ("Pod", ["spec", c, "volumeMounts"]) if containers(c) => MergeByKey("mountPath"),
        ("Pod", ["spec", c, "volumeDevices"]) if containers(c) => MergeByKey("devicePath"),
        (
            "Pod",
            [
                "spec",
                "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates",
            ],
        ) => MergeByKey("name"),
        ("Pod", ["spec", "hostAliases"]) => MergeByKey("ip"),
        ("Pod", ["spec", "topologySpreadConstraints"]) => MergeByKey("topologyKey"),
        ("Pod", ["status", "podIPs" | "hostIPs"]) => MergeByKey("ip"),
        ("Pod" | "Node" | "Namespace" | "Service", ["status", "conditions"]) => MergeByKey("type"),
        ("Node", ["spec", "podCIDRs"]) => MergePrimitives,
        ("Node", ["status", "addresses"]) => MergeByKey("type"),
        ("Service", ["spec", "ports"]) => MergeByKey("port"),
        ("ServiceAccount", ["secrets"]) => MergeByKey("name"),
        _ => Replace,
    }
}

/// Why a patch could not be applied (answered as 422 or 400 by the caller).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// Applies `patch` of `patch_type` to `original`, returning the patched object.
pub fn apply(
    original: &Value,
    patch_type: PatchType,
    patch: &Value,
    kind: &str,
) -> Result<Value, PatchError> {
    let mut doc = original.clone();
    match patch_type {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(PatchError(
                    "a JSON merge patch for an object must be a JSON object".into(),
                ));
            }
            json_patch::merge(&mut doc, patch);
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| PatchError(format!("the JSON patch is not valid: {e}")))?;
            json_patch::patch(&mut doc, &ops).map_err(|e| PatchError(e.to_string()))?;
        }
        PatchType::Strategic => {
            let p = patch.as_object().ok_or_else(|| {
                PatchError("a strategic merge patch must be a JSON object".into())
            })?;
            match doc.as_object_mut() {
                Some(m) => merge_map(m, p, kind, &mut Vec::new())?,
                None => {
                    return Err(PatchError(
                        "the object to patch is not a JSON object".into(),
                    ));
                }
            }
        }
    }
    Ok(doc)
}

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVES: &str = "$deleteFromPrimitiveList/";

fn merge_map(
    orig: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<(), PatchError> {
    match patch.get(PATCH_DIRECTIVE).and_then(Value::as_str) {
        Some("replace") => {
            *orig = Map::new();
            let mut stripped = patch.clone();
            stripped.remove(PATCH_DIRECTIVE);
            return merge_map(orig, &stripped, kind, path);
        }
        Some("delete") => {
            // Handled by the parent (the map disappears); at top level it empties it.
            *orig = Map::new();
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => return Err(PatchError(format!("unknown patch type: {other:?} in map"))),
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| PatchError("$retainKeys must be a list of strings".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        orig.retain(|k, _| keep.contains(&k.as_str()));
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (key, pv) in patch {
        if key == PATCH_DIRECTIVE || key == RETAIN_KEYS {
            continue;
        }
        if let Some(field) = key.strip_prefix(SET_ORDER) {
            if let Some(order) = pv.as_array() {
                orders.push((field.to_string(), order.clone()));
            }
            continue;
        }
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVES) {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        path.push(key.clone());
        match pv {
            Value::Null => {
                orig.remove(key);
            }
            Value::Object(pm) => {
                if pm.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                    orig.remove(key);
                } else {
                    let entry = orig
                        .entry(key.clone())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    if let Value::Object(om) = entry {
                        merge_map(om, pm, kind, path)?;
                    }
                }
            }
            Value::Array(items) => {
                let segs: Vec<&str> = path.iter().map(String::as_str).collect();
                let strategy = list_strategy(kind, &segs);
                let current = match orig.remove(key) {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                let merged = merge_list(current, items, strategy, kind, path)?;
                orig.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                orig.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = orig.get_mut(&field) {
            let segs: Vec<&str> = path
                .iter()
                .map(String::as_str)
                .chain([field.as_str()])
                .collect();
            reorder(list, &order, list_strategy(kind, &segs));
        }
    }
    Ok(())
}

fn merge_list(
    mut current: Vec<Value>,
    patch: &[Value],
    strategy: ListStrategy,
    kind: &str,
    path: &mut Vec<String>,
) -> Result<Vec<Value>, PatchError> {
    let replace_all = patch
        .iter()
        .any(|p| p.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("replace"));
    if replace_all || strategy == ListStrategy::Replace {
        // Replacement still goes through merge_map so directives and nulls inside
        // new elements are dropped rather than stored.
        let mut out = Vec::new();
        for p in patch {
            if p.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("replace") {
                continue;
            }
            out.push(fresh(p, kind, path)?);
        }
        return Ok(out);
    }
    match strategy {
        ListStrategy::MergePrimitives => {
            for p in patch {
                if !current.contains(p) {
                    current.push(p.clone());
                }
            }
            Ok(current)
        }
        ListStrategy::MergeByKey(merge_key) => {
            for p in patch {
                let Some(pm) = p.as_object() else {
                    if !current.contains(p) {
                        current.push(p.clone());
                    }
                    continue;
                };
                let key_value = pm.get(merge_key).ok_or_else(|| {
                    PatchError(format!(
                        "map: {p} does not contain declared merge key: {merge_key}"
                    ))
                })?;
                let pos = current
                    .iter()
                    .position(|c| c.get(merge_key) == Some(key_value));
                if pm.get(PATCH_DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                    current.retain(|c| c.get(merge_key) != Some(key_value));
                    continue;
                }
                match pos {
                    Some(i) => {
                        if let Value::Object(om) = &mut current[i] {
                            merge_map(om, pm, kind, path)?;
                        }
                    }
                    None => current.push(fresh(p, kind, path)?),
                }
            }
            Ok(current)
        }
        ListStrategy::Replace => Ok(current),
    }
}

/// A patch value applied to nothing: directives and nulls removed.
fn fresh(p: &Value, kind: &str, path: &mut Vec<String>) -> Result<Value, PatchError> {
    match p.as_object() {
        Some(pm) => {
            let mut m = Map::new();
            merge_map(&mut m, pm, kind, path)?;
            Ok(Value::Object(m))
        }
        None => Ok(p.clone()),
    }
}

/// `$setElementOrder`: listed elements first, in the given order; the rest keep
/// their relative order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let key_of = |v: &Value| -> Value {
        match strategy {
            ListStrategy::MergeByKey(k) => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let order_keys: Vec<Value> = order.iter().map(&key_of).collect();
    let mut taken: Vec<Value> = Vec::new();
    for k in &order_keys {
        if let Some(i) = list.iter().position(|v| &key_of(v) == k) {
            taken.push(list.remove(i));
        }
    }
    taken.append(list);
    *list = taken;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let r = apply(
            &o,
            PatchType::Merge,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
            "Pod",
        )
        .unwrap();
        assert_eq!(r["metadata"]["labels"], json!({"b": "2", "c": "3"}));
    }

    #[test]
    fn json_patch_ops_and_failed_test_op() {
        let o = json!({"spec": {"x": [1, 2]}});
        let r = apply(
            &o,
            PatchType::Json,
            &json!([{"op": "add", "path": "/spec/x/-", "value": 3}]),
            "Pod",
        )
        .unwrap();
        assert_eq!(r["spec"]["x"], json!([1, 2, 3]));
        assert!(
            apply(
                &o,
                PatchType::Json,
                &json!([{"op": "test", "path": "/spec/x/0", "value": 9}]),
                "Pod"
            )
            .is_err()
        );
    }

    #[test]
    fn strategic_merges_containers_by_name_and_deletes() {
        let o = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let p = json!({"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"}
        ]}});
        let r = apply(&o, PatchType::Strategic, &p, "Pod").unwrap();
        assert_eq!(
            r["spec"]["containers"],
            json!([
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ])
        );
    }

    #[test]
    fn strategic_replaces_unkeyed_lists_and_merges_finalizers() {
        let o = json!({"metadata": {"finalizers": ["a"]}, "spec": {"ingress": [{"ports": [{"port": 80}]}]}});
        let p = json!({
            "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"ingress": [{"ports": [{"port": 443}]}]}
        });
        let r = apply(&o, PatchType::Strategic, &p, "NetworkPolicy").unwrap();
        assert_eq!(r["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(r["spec"]["ingress"], json!([{"ports": [{"port": 443}]}]));
    }

    #[test]
    fn strategic_retain_keys_and_replace_directive() {
        let o = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}, "data": {"a": "1"}});
        let p = json!({
            "spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}]},
            "data": {"$patch": "replace", "b": "2"}
        });
        let r = apply(&o, PatchType::Strategic, &p, "Pod").unwrap();
        assert_eq!(
            r["spec"]["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/x"}}])
        );
        assert_eq!(r["data"], json!({"b": "2"}));
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let o = json!({"spec": {"containers": []}});
        let e = apply(
            &o,
            PatchType::Strategic,
            &json!({"spec": {"containers": [{"image": "x"}]}}),
            "Pod",
        )
        .unwrap_err();
        assert!(e.0.contains("merge key: name"), "{e}");
    }
}
