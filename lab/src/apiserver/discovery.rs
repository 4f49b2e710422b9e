//! Discovery documents (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/G`,
//! `/apis/G/V`), aggregated discovery (`apidiscovery.k8s.io/v2`, what kubectl
//! 1.32 asks for first), and the small OpenAPI v3 documents kubectl reads to
//! learn that the server validates fields itself (`fieldValidation`).

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Value, json};

use super::resources::{Registry, ResourceDef};

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The Kubernetes version the emulator presents (the kubectl installed is 1.32).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-margay-lab",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn group_entry(reg: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = reg
        .versions(group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub fn api_group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg.groups().iter().map(|g| group_entry(reg, g)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    if reg.versions(group).is_empty() {
        return None;
    }
    let mut g = group_entry(reg, group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

fn resource_entry(d: &ResourceDef) -> Value {
    let mut r = json!({
        "name": d.resource,
        "singularName": d.singular,
        "namespaced": d.namespaced,
        "kind": d.kind,
        "verbs": d.verbs(),
    });
    if !d.short_names.is_empty() {
        r["shortNames"] = json!(d.short_names);
    }
    if !d.categories.is_empty() {
        r["categories"] = json!(d.categories);
    }
    r
}

/// `APIResourceList` of one group/version, or None when it is not served.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs: Vec<&ResourceDef> = reg.in_group_version(group, version).collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in defs {
        resources.push(resource_entry(d));
        if d.status_subresource {
            resources.push(json!({"name": format!("{}/status", d.resource), "singularName": "", "namespaced": d.namespaced, "kind": d.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// True when the Accept header asks for aggregated discovery v2.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        p.contains(&"g=apidiscovery.k8s.io")
            && p.contains(&"v=v2")
            && p.contains(&"as=APIGroupDiscoveryList")
    })
}

/// `APIGroupDiscoveryList` for `/api` (core = true) or `/apis`.
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let groups: Vec<String> = if core {
        vec![String::new()]
    } else {
        reg.groups()
    };
    let items: Vec<Value> = groups
        .iter()
        .map(|g| {
            let versions: Vec<Value> = reg
                .versions(g)
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = reg
                        .in_group_version(g, v)
                        .map(|d| {
                            let kind = json!({"group": d.group, "version": d.version, "kind": d.kind});
                            let mut r = json!({
                                "resource": d.resource,
                                "responseKind": kind,
                                "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": d.singular,
                                "verbs": d.verbs(),
                            });
                            if !d.short_names.is_empty() {
                                r["shortNames"] = json!(d.short_names);
                            }
                            if !d.categories.is_empty() {
                                r["categories"] = json!(d.categories);
                            }
                            if d.status_subresource {
                                r["subresources"] = json!([{"subresource": "status", "responseKind": kind, "verbs": ["get", "patch", "update"]}]);
                            }
                            r
                        })
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub const OPENAPI_V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` with no definitions. kubectl downloads it (as protobuf) for
/// kinds the v3 documents do not describe, and skips client-side validation of
/// kinds it has no schema for, as it does on a real cluster for a custom
/// resource whose CRD is not created yet.
pub fn openapi_v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0-margay-lab"}, "paths": {}, "definitions": {}})
}

/// The same document as gnostic `openapi_v2.Document` protobuf: field 1
/// `swagger`, field 2 `info` {1 `title`, 2 `version`}.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push((number << 3) | 2);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, b"v1.32.0-margay-lab");
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    doc
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn hash_of(v: &Value) -> String {
    let mut h = DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// `/openapi/v3`: one entry per served group/version.
pub fn openapi_v3_root(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(String, String)> = Vec::new();
    for d in reg.all() {
        let gv = (d.group.clone(), d.version.clone());
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    for (g, v) in gvs {
        if let Some(doc) = openapi_v3_gv(reg, &g, &v) {
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash_of(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// The OpenAPI v3 document of one group/version: for each resource, the PATCH
/// operation with its group-version-kind and the `fieldValidation` parameter.
/// No schemas: kubectl then validates on the server and builds patches from its
/// compiled-in types (built-ins) or as JSON merge patches (custom resources).
pub fn openapi_v3_gv(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for d in reg.in_group_version(group, version) {
        let prefix = format!("/{}", gv_path(group, version));
        let item = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.resource)
        } else {
            format!("{prefix}/{}/{{name}}", d.resource)
        };
        let gvk = json!({"group": d.group, "version": d.version, "kind": d.kind});
        let param = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", d.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                "requestBody": {"content": {
                    "application/json-patch+json": {"schema": {"type": "object"}},
                    "application/merge-patch+json": {"schema": {"type": "object"}}
                }},
                "responses": {"200": {"description": "OK"}}
            })
        };
        paths.insert(item, json!({"patch": op("patch"), "put": op("put")}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-margay-lab"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_and_group_documents() {
        let reg = Registry::build(std::iter::empty());
        let v1 = resource_list(&reg, "", "v1").unwrap();
        let pods = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(
            v1["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "pods/status")
        );
        let groups = api_group_list(&reg);
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            vec![
                "networking.k8s.io",
                "coordination.k8s.io",
                "apps",
                "rbac.authorization.k8s.io",
                "apiextensions.k8s.io"
            ]
        );
        assert!(resource_list(&reg, "example.com", "v1").is_none());
        let agg = aggregated(&reg, true);
        assert_eq!(
            agg["items"][0]["versions"][0]["resources"][0]["resource"],
            "namespaces"
        );
        let root = openapi_v3_root(&reg);
        assert!(
            root["paths"]["apis/networking.k8s.io/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/apis/networking.k8s.io/v1?hash=")
        );
    }
}
