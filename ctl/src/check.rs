//! Validation before anything is written. Each document is checked for a
//! margay.dev `apiVersion`/`kind` and a name, decoded strictly into its Rust
//! type (a wrong type or an unknown field is an error naming the field), and
//! run through the kind's `validate_*` from `margay_api`. IPPools are then
//! checked together (no two overlapping), with the pools already stored.

use crate::kinds::{self, KindInfo};
use crate::manifest::Document;
use margay_api::ValidationError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// What is wrong with one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocError {
    /// Not a margay.dev object, or no name.
    Shape(String),
    /// A field of the wrong type or an unknown field, with its path.
    Decode { field: String, message: String },
    /// The kind's own validation.
    Invalid(ValidationError),
}

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocError::Shape(m) => write!(f, "{m}"),
            DocError::Decode { field, message } => write!(f, "{field}: {message}"),
            DocError::Invalid(e) => {
                write!(f, "{} {:?} is invalid:", e.kind, e.name)?;
                for fe in &e.errors {
                    write!(f, "\n    {}: {}", fe.field, fe.message)?;
                }
                Ok(())
            }
        }
    }
}

/// A document that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub source: String,
    pub kind: &'static KindInfo,
    pub name: String,
    /// As read (namespace removed: every kind is cluster-scoped).
    pub value: Value,
}

impl Checked {
    /// `ippool.margay.dev/name`, for messages.
    pub fn display(&self) -> String {
        format!("{}/{}", self.kind.qualified(), self.name)
    }
}

/// Decode `value` as `K`, rejecting wrong types and unknown fields by path,
/// then run `validate`.
pub fn decode_and_validate<K>(
    value: &Value,
    validate: fn(&K) -> Result<(), ValidationError>,
) -> Result<(), DocError>
where
    K: DeserializeOwned + Serialize,
{
    let typed: K = serde_path_to_error::deserialize(value).map_err(|e| DocError::Decode {
        field: clean_path(&e.path().to_string()),
        message: e.inner().to_string(),
    })?;
    // Serde ignores fields it does not know; the API server prunes them (or
    // refuses them under strict field validation, as kubectl asks). Either
    // way the user's setting would be lost, so say so.
    let back = serde_json::to_value(&typed).map_err(|e| DocError::Shape(e.to_string()))?;
    if let Some(field) = unknown_field(value, &back, "") {
        return Err(DocError::Decode {
            field,
            message: "unknown field (not in the schema of this kind; misspelt?)".into(),
        });
    }
    validate(&typed).map_err(DocError::Invalid)
}

/// `spec` of `value` decoded as `K` and serialised again.
pub fn normal_spec<K: DeserializeOwned + Serialize>(value: &Value) -> Option<Value> {
    let typed: K = serde_json::from_value(value.clone()).ok()?;
    serde_json::to_value(&typed).ok()?.get("spec").cloned()
}

/// serde_path_to_error writes `spec.ports[0]`; the root is `.`.
fn clean_path(p: &str) -> String {
    if p == "." || p.is_empty() {
        "(object)".into()
    } else {
        p.to_string()
    }
}

/// The first key present in `input` but absent from `typed` (the typed
/// model re-serialised), as a path.
fn unknown_field(input: &Value, typed: &Value, path: &str) -> Option<String> {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    // A null the model dropped (an unset optional) is not unknown.
                    None if v.is_null() => {}
                    None => {
                        // `status` is the server's; ours have none but exports may.
                        if path.is_empty() && k == "status" {
                            continue;
                        }
                        return Some(p);
                    }
                    Some(tv) => {
                        if let Some(f) = unknown_field(v, tv, &p) {
                            return Some(f);
                        }
                    }
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| unknown_field(x, y, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Checks every document; returns them all or every problem found (each
/// naming its source and object).
pub fn check_documents(docs: &[Document]) -> Result<Vec<Checked>, Vec<String>> {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for d in docs {
        match check_one(d) {
            Ok(c) => ok.push(c),
            Err(e) => problems.push(format!("{}: {e}", d.source)),
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for d in docs {
        if let Ok((k, name)) = identify_value(&d.value)
            && let Some(first) = seen.insert((k.kind, name.clone()), d.source.clone())
        {
            problems.push(format!(
                "{}: {} {name:?} is also in {first}: each object may appear once",
                d.source, k.kind
            ));
        }
    }
    if problems.is_empty() {
        Ok(ok)
    } else {
        Err(problems)
    }
}

/// The object's kind and name, without validating the rest (for `delete -f`,
/// `get -f` and `label -f`).
pub fn identify(d: &Document) -> Result<(&'static KindInfo, String), String> {
    identify_value(&d.value).map_err(|e| format!("{}: {e}", d.source))
}

fn identify_value(v: &Value) -> Result<(&'static KindInfo, String), DocError> {
    let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(DocError::Shape("kind: missing".into()));
    }
    let want = format!("{}/{}", margay_api::GROUP, margay_api::VERSION);
    if api_version != want {
        return Err(DocError::Shape(format!(
            "{kind} with apiVersion {api_version:?}: margayctl handles {want} kinds only (use kubectl for others)"
        )));
    }
    let info = kinds::by_kind(kind).ok_or_else(|| {
        DocError::Shape(format!(
            "kind: {kind:?} is not a {want} kind: allowed {}",
            kinds::KINDS
                .iter()
                .map(|k| k.kind)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Err(DocError::Shape(format!("{kind}: metadata.name: missing")));
    }
    Ok((info, name.to_string()))
}

fn check_one(d: &Document) -> Result<Checked, DocError> {
    let (kind, name) = identify_value(&d.value)?;
    let mut value = d.value.clone();
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("namespace");
    }
    (kind.validate)(&value)?;
    Ok(Checked {
        source: d.source.clone(),
        kind,
        name,
        value,
    })
}

/// IPPools must not overlap each other: the ones being written against each
/// other and against the stored ones they do not replace.
pub fn check_pools_together(
    writing: &[Checked],
    stored: &[margay_api::IPPool],
) -> Result<(), Vec<String>> {
    let mut pools: Vec<margay_api::IPPool> = Vec::new();
    let mut sources = std::collections::BTreeMap::new();
    let new_names: std::collections::BTreeSet<&str> = writing
        .iter()
        .filter(|c| c.kind.kind == "IPPool")
        .map(|c| c.name.as_str())
        .collect();
    for s in stored {
        if !new_names.contains(s.metadata.name.as_deref().unwrap_or("")) {
            pools.push(s.clone());
        }
    }
    for c in writing.iter().filter(|c| c.kind.kind == "IPPool") {
        if let Ok(p) = serde_json::from_value::<margay_api::IPPool>(c.value.clone()) {
            sources.insert(c.name.clone(), c.source.clone());
            pools.push(p);
        }
    }
    match margay_api::resources::ippool::validate_ip_pools(&pools) {
        Ok(()) => Ok(()),
        Err(errs) => {
            let msgs: Vec<String> = errs
                .into_iter()
                // Stored pools' own problems are not this command's business.
                .filter(|e| sources.contains_key(&e.name))
                .map(|e| {
                    let src = sources.get(&e.name).cloned().unwrap_or_default();
                    format!("{src}: {}", DocError::Invalid(e))
                })
                .collect();
            if msgs.is_empty() { Ok(()) } else { Err(msgs) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_documents;

    fn check(text: &str) -> Result<Vec<Checked>, Vec<String>> {
        check_documents(&parse_documents("t.yaml", text).unwrap())
    }

    #[test]
    fn a_good_pool_passes() {
        let c = check("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16, vxlanMode: Always}\n").unwrap();
        assert_eq!(c[0].name, "p");
        assert_eq!(c[0].kind.kind, "IPPool");
    }

    #[test]
    fn errors_name_the_source_object_and_field() {
        let e = check("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16, blockSize: 40}\n").unwrap_err();
        assert!(
            e[0].contains("t.yaml, document 1")
                && e[0].contains("IPPool \"p\"")
                && e[0].contains("spec.blockSize"),
            "{e:?}"
        );
        let e = check("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16, blockSize: big}\n").unwrap_err();
        assert!(e[0].contains("spec.blockSize: invalid type"), "{e:?}");
        let e = check("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16, vxlanMod: Always}\n").unwrap_err();
        assert!(e[0].contains("spec.vxlanMod: unknown field"), "{e:?}");
        let e = check("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.1.0.0/16, vxlanMode: Sometimes}\n").unwrap_err();
        assert!(
            e[0].contains("spec.vxlanMode") && e[0].contains("Sometimes"),
            "{e:?}"
        );
        let e = check("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").unwrap_err();
        assert!(e[0].contains("use kubectl"), "{e:?}");
        let e =
            check("apiVersion: margay.dev/v1\nkind: Widget\nmetadata: {name: p}\n").unwrap_err();
        assert!(e[0].contains("not a margay.dev/v1 kind"), "{e:?}");
    }

    #[test]
    fn every_problem_of_every_document_is_reported() {
        let e = check("apiVersion: margay.dev/v1\nkind: BGPPeer\nmetadata: {name: a}\nspec: {peerIP: 192.0.2.1}\n---\napiVersion: margay.dev/v1\nkind: BGPConfiguration\nmetadata: {name: other}\nspec: {}\n---\napiVersion: margay.dev/v1\nkind: BGPPeer\nmetadata: {name: a}\nspec: {peerIP: 192.0.2.1, asNumber: 65000}\n").unwrap_err();
        assert!(e.iter().any(|m| m.contains("spec.asNumber")), "{e:?}");
        assert!(
            e.iter()
                .any(|m| m.contains("document 2") && m.contains("metadata.name")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.contains("appear once")), "{e:?}");
    }

    #[test]
    fn pools_overlapping_each_other_or_stored_ones_are_refused() {
        let c = check("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: new}\nspec: {cidr: 10.244.128.0/17}\n").unwrap();
        let stored = margay_api::IPPool::new("old", margay_api::IPPoolSpec::new("10.244.0.0/16"));
        let e = check_pools_together(&c, std::slice::from_ref(&stored)).unwrap_err();
        assert!(e[0].contains("overlaps IPPool \"old\""), "{e:?}");
        // Replacing the stored pool itself is fine.
        let same = margay_api::IPPool::new("new", margay_api::IPPoolSpec::new("10.244.128.0/17"));
        assert!(check_pools_together(&c, &[same]).is_ok());
    }
}
