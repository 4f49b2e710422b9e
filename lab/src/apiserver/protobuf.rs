//! Request bodies in Kubernetes protobuf, for the kinds kubectl's typed clients
//! send that way (`kubectl create namespace|configmap|secret|serviceaccount`):
//! the `k8s\0` + `runtime.Unknown` envelope and those messages, decoded to the
//! JSON the rest of the server speaks. Other kinds are refused (415); the server
//! always answers in JSON, which those clients also accept.

use base64::Engine as _;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Bool,
    Int,
    Msg(&'static [Field]),
    MapStrStr,
    MapStrBytes,
    RepeatedStr,
    RepeatedMsg(&'static [Field]),
}

type Field = (u64, &'static str, Ty);

const OWNER_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "controller", Ty::Bool),
    (7, "blockOwnerDeletion", Ty::Bool),
];
const OBJECT_META: &[Field] = &[
    (1, "name", Ty::Str),
    (2, "generateName", Ty::Str),
    (3, "namespace", Ty::Str),
    (5, "uid", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "generation", Ty::Int),
    (11, "labels", Ty::MapStrStr),
    (12, "annotations", Ty::MapStrStr),
    (13, "ownerReferences", Ty::RepeatedMsg(OWNER_REF)),
    (14, "finalizers", Ty::RepeatedStr),
];
const OBJECT_REF: &[Field] = &[
    (1, "kind", Ty::Str),
    (2, "namespace", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "fieldPath", Ty::Str),
];
const LOCAL_REF: &[Field] = &[(1, "name", Ty::Str)];
const NAMESPACE: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "spec", Ty::Msg(&[(1, "finalizers", Ty::RepeatedStr)])),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapStrStr),
    (3, "binaryData", Ty::MapStrBytes),
    (4, "immutable", Ty::Bool),
];
const SECRET: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::MapStrBytes),
    (3, "type", Ty::Str),
    (4, "stringData", Ty::MapStrStr),
    (5, "immutable", Ty::Bool),
];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "secrets", Ty::RepeatedMsg(OBJECT_REF)),
    (3, "imagePullSecrets", Ty::RepeatedMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", Ty::Bool),
];

/// One wire-format field: number and payload.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or("truncated varint")?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(b: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let (num, wt) = (key >> 3, key & 7);
        let w = match wt {
            0 => Wire::Varint(varint(b, &mut i)?),
            2 => {
                let len = varint(b, &mut i)? as usize;
                let end = i
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or("truncated field")?;
                let s = &b[i..end];
                i = end;
                Wire::Bytes(s)
            }
            1 => {
                i += 8;
                Wire::Fixed
            }
            5 => {
                i += 4;
                Wire::Fixed
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((num, w));
    }
    if i > b.len() {
        return Err("truncated fixed-width field".into());
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "string field is not UTF-8".to_string())
}

fn map_entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(k)) => key = string(k)?,
            (2, Wire::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

fn message(b: &[u8], schema: &[Field]) -> Result<Value, String> {
    let mut m = Map::new();
    for (num, w) in fields(b)? {
        let Some((_, name, ty)) = schema.iter().find(|f| f.0 == num) else {
            continue;
        };
        let name = name.to_string();
        match (*ty, w) {
            (Ty::Str, Wire::Bytes(s)) => {
                m.insert(name, json!(string(s)?));
            }
            (Ty::Bool, Wire::Varint(v)) => {
                m.insert(name, json!(v != 0));
            }
            (Ty::Int, Wire::Varint(v)) => {
                m.insert(name, json!(v as i64));
            }
            (Ty::Msg(sub), Wire::Bytes(s)) => {
                m.insert(name, message(s, sub)?);
            }
            (Ty::MapStrStr, Wire::Bytes(s)) => {
                let (k, v) = map_entry(s)?;
                m.entry(name).or_insert_with(|| json!({}))[k] = json!(string(v)?);
            }
            (Ty::MapStrBytes, Wire::Bytes(s)) => {
                let (k, v) = map_entry(s)?;
                m.entry(name).or_insert_with(|| json!({}))[k] =
                    json!(base64::engine::general_purpose::STANDARD.encode(v));
            }
            (Ty::RepeatedStr, Wire::Bytes(s)) => {
                if let Value::Array(a) = m.entry(name).or_insert_with(|| json!([])) {
                    a.push(json!(string(s)?));
                }
            }
            (Ty::RepeatedMsg(sub), Wire::Bytes(s)) => {
                let item = message(s, sub)?;
                if let Value::Array(a) = m.entry(name).or_insert_with(|| json!([])) {
                    a.push(item);
                }
            }
            _ => return Err(format!("field {num} ({name}) has an unexpected wire type")),
        }
    }
    Ok(Value::Object(m))
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into a JSON object.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf envelope prefix")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(rest)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm)? {
                    match (tn, tw) {
                        (1, Wire::Bytes(s)) => api_version = string(s)?,
                        (2, Wire::Bytes(s)) => kind = string(s)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        _ => {
            return Err(format!(
                "protobuf bodies of {api_version}/{kind} are not supported; send JSON (e.g. kubectl apply -f)"
            ));
        }
    };
    let mut obj = message(raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = [
            field(1, b"c1"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"a"), field(2, b"b")].concat()),
            vec![4 << 3, 1],
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &cm)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "labels": {"app": "web"}}, "data": {"a": "b"}, "immutable": true})
        );
        let tm = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        assert!(
            decode(&[b"k8s\0".to_vec(), field(1, &tm)].concat())
                .unwrap_err()
                .contains("not supported")
        );
        assert!(decode(b"{}").is_err());
    }
}
