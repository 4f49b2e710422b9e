//! Server-side printing: the `meta.k8s.io/v1` Table `kubectl get` asks for, with
//! the columns the real server prints for the kinds served (priority-1 columns
//! are the extra ones of `-o wide`) and CRD `additionalPrinterColumns`.

use serde_json::{Value, json};

use super::resources::{PrinterColumn, ResourceDef};
use super::selectors::LabelSelector;

/// `includeObject` query parameter of a Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// True when the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        p.contains(&"as=Table")
            && p.contains(&"g=meta.k8s.io")
            && (p.contains(&"v=v1") || p.contains(&"v=v1beta1"))
    })
}

/// True when the Accept header asks for `PartialObjectMetadata` (kube-rs
/// metadata watchers, `get_metadata`, client-go metadata informers).
pub fn wants_metadata(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        (p.contains(&"as=PartialObjectMetadata") || p.contains(&"as=PartialObjectMetadataList"))
            && p.contains(&"g=meta.k8s.io")
    })
}

/// An object reduced to its metadata.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A list reduced to its items' metadata.
pub fn partial_list(list: &Value) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .map(|a| a.iter().map(partial).collect())
        .unwrap_or_default();
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list["metadata"], "items": items})
}

type Cell = fn(&Value) -> Value;

struct Column {
    name: &'static str,
    type_: &'static str,
    priority: i64,
    cell: Cell,
}

fn s<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn or_none(v: &str) -> Value {
    json!(if v.is_empty() { "<none>" } else { v })
}

fn name(o: &Value) -> Value {
    json!(s(o, "/metadata/name"))
}

fn age(o: &Value) -> Value {
    json!(human_age(s(o, "/metadata/creationTimestamp")))
}

/// Upstream `duration.HumanDuration` of the time since an RFC 3339 timestamp.
pub fn human_age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 192 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 730 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn arr<'a>(o: &'a Value, p: &str) -> &'a [Value] {
    o.pointer(p)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn pod_ready(o: &Value) -> Value {
    let total = arr(o, "/spec/containers").len();
    let ready = arr(o, "/status/containerStatuses")
        .iter()
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    json!(format!("{ready}/{total}"))
}

fn pod_status(o: &Value) -> Value {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    let reason = s(o, "/status/reason");
    json!(if reason.is_empty() {
        s(o, "/status/phase")
    } else {
        reason
    })
}

fn pod_restarts(o: &Value) -> Value {
    let n: i64 = arr(o, "/status/containerStatuses")
        .iter()
        .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
        .sum();
    json!(n.to_string())
}

fn node_status(o: &Value) -> Value {
    let ready = arr(o, "/status/conditions")
        .iter()
        .find(|c| c.get("type") == Some(&json!("Ready")));
    let mut st = match ready.and_then(|c| c.get("status")).and_then(Value::as_str) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        st.push_str(",SchedulingDisabled");
    }
    json!(st)
}

fn node_roles(o: &Value) -> Value {
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    or_none(&roles.join(","))
}

fn node_address(o: &Value, kind: &str) -> Value {
    let a = arr(o, "/status/addresses")
        .iter()
        .find(|a| a.get("type") == Some(&json!(kind)));
    or_none(a.map(|a| s(a, "/address")).unwrap_or(""))
}

fn service_ports(o: &Value) -> Value {
    let ports: Vec<String> = arr(o, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    or_none(&ports.join(","))
}

fn selector_map(o: &Value) -> Value {
    let sel: Vec<String> = o
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    or_none(&sel.join(","))
}

fn endpoints(o: &Value) -> Value {
    let mut eps = Vec::new();
    for sub in arr(o, "/subsets") {
        for a in arr(sub, "/addresses") {
            for p in arr(sub, "/ports") {
                eps.push(format!("{}:{}", s(a, "/ip"), p["port"]));
            }
        }
    }
    or_none(&eps.join(","))
}

fn count(o: &Value, field: &str) -> usize {
    o.get(field)
        .and_then(Value::as_object)
        .map(|m| m.len())
        .unwrap_or(0)
}

fn columns(def: &ResourceDef) -> Vec<Column> {
    let c = |name, type_, priority, cell| Column {
        name,
        type_,
        priority,
        cell,
    };
    let name_col = c("Name", "string", 0, name as Cell);
    let age_col = c("Age", "string", 0, age as Cell);
    if def.crd.is_some() {
        return vec![name_col, age_col];
    }
    match (def.group.as_str(), def.resource.as_str()) {
        ("", "pods") => vec![
            name_col,
            c("Ready", "string", 0, pod_ready),
            c("Status", "string", 0, pod_status),
            c("Restarts", "string", 0, pod_restarts),
            age_col,
            c("IP", "string", 1, |o| or_none(s(o, "/status/podIP"))),
            c("Node", "string", 1, |o| or_none(s(o, "/spec/nodeName"))),
            c("Nominated Node", "string", 1, |o| {
                or_none(s(o, "/status/nominatedNodeName"))
            }),
            c("Readiness Gates", "string", 1, |_| json!("<none>")),
        ],
        ("", "nodes") => vec![
            name_col,
            c("Status", "string", 0, node_status),
            c("Roles", "string", 0, node_roles),
            age_col,
            c("Version", "string", 0, |o| {
                json!(s(o, "/status/nodeInfo/kubeletVersion"))
            }),
            c("Internal-IP", "string", 1, |o| {
                node_address(o, "InternalIP")
            }),
            c("External-IP", "string", 1, |o| {
                node_address(o, "ExternalIP")
            }),
            c("OS-Image", "string", 1, |o| {
                or_none(s(o, "/status/nodeInfo/osImage"))
            }),
            c("Kernel-Version", "string", 1, |o| {
                or_none(s(o, "/status/nodeInfo/kernelVersion"))
            }),
            c("Container-Runtime", "string", 1, |o| {
                or_none(s(o, "/status/nodeInfo/containerRuntimeVersion"))
            }),
        ],
        ("", "namespaces") => vec![
            name_col,
            c("Status", "string", 0, |o| json!(s(o, "/status/phase"))),
            age_col,
        ],
        ("", "services") => vec![
            name_col,
            c("Type", "string", 0, |o| {
                json!(match s(o, "/spec/type") {
                    "" => "ClusterIP",
                    t => t,
                })
            }),
            c("Cluster-IP", "string", 0, |o| {
                or_none(s(o, "/spec/clusterIP"))
            }),
            c("External-IP", "string", 0, |_| json!("<none>")),
            c("Port(s)", "string", 0, service_ports),
            age_col,
            c("Selector", "string", 1, selector_map),
        ],
        ("", "endpoints") => vec![name_col, c("Endpoints", "string", 0, endpoints), age_col],
        ("", "serviceaccounts") => vec![
            name_col,
            c("Secrets", "integer", 0, |o| json!(arr(o, "/secrets").len())),
            age_col,
        ],
        ("", "configmaps") => vec![
            name_col,
            c("Data", "integer", 0, |o| {
                json!(count(o, "data") + count(o, "binaryData"))
            }),
            age_col,
        ],
        ("", "secrets") => vec![
            name_col,
            c("Type", "string", 0, |o| json!(s(o, "/type"))),
            c("Data", "integer", 0, |o| json!(count(o, "data"))),
            age_col,
        ],
        ("", "events") => vec![
            c("Last Seen", "string", 0, |o| {
                json!(human_age(s(o, "/lastTimestamp")))
            }),
            c("Type", "string", 0, |o| json!(s(o, "/type"))),
            c("Reason", "string", 0, |o| json!(s(o, "/reason"))),
            c("Object", "string", 0, |o| {
                json!(format!(
                    "{}/{}",
                    s(o, "/involvedObject/kind").to_lowercase(),
                    s(o, "/involvedObject/name")
                ))
            }),
            c("Message", "string", 0, |o| json!(s(o, "/message"))),
            c("Name", "string", 1, name),
        ],
        ("networking.k8s.io", "networkpolicies") => vec![
            name_col,
            c("Pod-Selector", "string", 0, |o| {
                let q = o.pointer("/spec/podSelector").map(|sel| {
                    LabelSelector::from_object(sel)
                        .map(|l| l.to_query())
                        .unwrap_or_default()
                });
                or_none(&q.unwrap_or_default())
            }),
            age_col,
        ],
        ("coordination.k8s.io", "leases") => vec![
            name_col,
            c("Holder", "string", 0, |o| {
                json!(s(o, "/spec/holderIdentity"))
            }),
            age_col,
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![
                name_col,
                c("Created At", "date", 0, |o| {
                    json!(s(o, "/metadata/creationTimestamp"))
                }),
            ]
        }
        _ => vec![name_col, age_col],
    }
}

/// Evaluates the simple JSONPath of a printer column (`.spec.a.b`, `.x[0].y`).
fn json_path<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('.');
    let mut cur = o;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (field, idx) = match seg.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = idx {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// One cell of a CRD printer column. Like the real server's table convertor,
/// `date` columns are shown as the time since the timestamp ("5m"), not the
/// timestamp itself.
fn custom_cell(o: &Value, pc: &PrinterColumn) -> Value {
    let v = json_path(o, &pc.json_path).cloned().unwrap_or(Value::Null);
    match (&v, pc.type_.as_str()) {
        (Value::String(ts), "date") => json!(human_age(ts.as_str())),
        _ => v,
    }
}

/// A Table of `items` (objects already at `def`'s version).
pub fn table(
    def: &ResourceDef,
    items: &[Value],
    list_meta: Value,
    include: IncludeObject,
) -> Value {
    let custom = def.crd.is_some() && !def.printer_columns.is_empty();
    let mut defs: Vec<Value> = Vec::new();
    let builtin_cols = columns(def);
    if custom {
        defs.push(json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}));
        for pc in &def.printer_columns {
            defs.push(json!({"name": pc.name, "type": pc.type_, "format": "", "description": pc.description, "priority": pc.priority}));
        }
    } else {
        for c in &builtin_cols {
            let format = if c.name == "Name" { "name" } else { "" };
            defs.push(json!({"name": c.name, "type": c.type_, "format": format, "description": "", "priority": c.priority}));
        }
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells: Vec<Value> = if custom {
                std::iter::once(name(o))
                    .chain(def.printer_columns.iter().map(|pc| custom_cell(o, pc)))
                    .collect()
            } else {
                builtin_cols.iter().map(|c| (c.cell)(o)).collect()
            };
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Object => row["object"] = o.clone(),
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::builtins;

    #[test]
    fn crd_date_columns_show_an_age_and_other_columns_their_value() {
        let col = |type_: &str, path: &str| PrinterColumn {
            name: "c".into(),
            type_: type_.into(),
            json_path: path.into(),
            priority: 0,
            description: String::new(),
        };
        let obj = json!({"metadata": {"creationTimestamp": "2001-01-01T00:00:00Z"}, "spec": {"cidr": "10.0.0.0/8"}});
        let age = custom_cell(&obj, &col("date", ".metadata.creationTimestamp"));
        assert!(age.as_str().unwrap().ends_with('y'), "{age}");
        assert_eq!(
            custom_cell(&obj, &col("string", ".spec.cidr")),
            json!("10.0.0.0/8")
        );
        assert_eq!(
            custom_cell(&obj, &col("date", ".spec.missing")),
            Value::Null
        );
    }

    #[test]
    fn accept_header_detection() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }

    #[test]
    fn pod_rows_have_wide_columns() {
        let def = builtins()
            .into_iter()
            .find(|d| d.resource == "pods")
            .unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let t = table(&def, &[pod], json!({}), IncludeObject::Metadata);
        assert_eq!(
            t["rows"][0]["cells"].as_array().unwrap()[..4],
            [json!("p"), json!("1/2"), json!("Running"), json!("2")]
        );
        assert_eq!(t["rows"][0]["cells"][5], "10.0.0.5");
        assert_eq!(t["columnDefinitions"][5]["priority"], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let ago = |secs: i64| {
            let t =
                jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - secs).unwrap();
            human_age(&t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        };
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(150), "2m30s");
        assert_eq!(ago(3600 * 30), "30h");
        assert_eq!(ago(86400 * 3 + 3600), "3d1h");
    }
}
