//! The resources the server knows: the built-in ones and those served because a
//! CustomResourceDefinition declares them.

use serde_json::Value;

/// Identity of stored objects: group + plural resource (all served versions of a
/// resource share one storage, as upstream).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ResourceKey {
    pub group: String,
    pub resource: String,
}

impl ResourceKey {
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
        }
    }
}

/// An additional printer column of a CRD version (for `kubectl get` tables).
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

/// One served group/version/resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceDef {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// Served because of this CRD (its name); None for built-ins.
    pub crd: Option<String>,
    /// The version objects are stored at (CRDs: the `storage: true` version).
    pub storage_version: String,
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD version's openAPIV3Schema, for pruning, defaulting and validation.
    pub schema: Option<Value>,
    /// PUT without `metadata.resourceVersion` is allowed (built-ins yes, CRs no).
    pub unconditional_update: bool,
}

impl ResourceDef {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.group, &self.resource)
    }

    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.resource == "namespaces" {
            vec![
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    resource: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
    categories: &[&str],
    status_subresource: bool,
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: categories.iter().map(|s| s.to_string()).collect(),
        status_subresource,
        crd: None,
        storage_version: version.into(),
        printer_columns: Vec::new(),
        schema: None,
        unconditional_update: true,
    }
}

/// The built-in resources served.
pub fn builtins() -> Vec<ResourceDef> {
    let all = &["all"][..];
    let mut crd = builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        true,
    );
    crd.unconditional_update = false;
    vec![
        builtin(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["ns"],
            &[],
            true,
        ),
        builtin("", "v1", "pods", "Pod", true, &["po"], all, true),
        builtin("", "v1", "nodes", "Node", false, &["no"], &[], true),
        builtin("", "v1", "services", "Service", true, &["svc"], all, true),
        builtin(
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
            &[],
            false,
        ),
        builtin(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            true,
            &["sa"],
            &[],
            false,
        ),
        builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
            &[],
            false,
        ),
        builtin("", "v1", "secrets", "Secret", true, &[], &[], false),
        builtin("", "v1", "events", "Event", true, &["ev"], &[], false),
        builtin(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
            &["netpol"],
            &[],
            false,
        ),
        builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
            &[],
            false,
        ),
        // Stored and served only (no controllers): enough for `kubectl apply`
        // of install manifests (deploy/, the Helm chart).
        builtin(
            "apps",
            "v1",
            "daemonsets",
            "DaemonSet",
            true,
            &["ds"],
            all,
            true,
        ),
        builtin(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["deploy"],
            all,
            true,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "roles",
            "Role",
            true,
            &[],
            &[],
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
            &[],
            false,
        ),
        crd,
    ]
}

/// The resources a CRD object serves (one per served version). The caller has
/// validated the CRD; missing pieces are skipped rather than guessed.
pub fn from_crd(crd: &Value) -> Vec<ResourceDef> {
    let s = |p: &str| {
        crd.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let strings = |p: &str| -> Vec<String> {
        crd.pointer(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (group, plural, kind) = (
        s("/spec/group"),
        s("/spec/names/plural"),
        s("/spec/names/kind"),
    );
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match s("/spec/names/singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let list_kind = match s("/spec/names/listKind") {
        x if x.is_empty() => format!("{kind}List"),
        x => x,
    };
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name").and_then(Value::as_str))
        .unwrap_or("")
        .to_string();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| {
            let name = v.get("name")?.as_str()?.to_string();
            let printer_columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: c.get("name").and_then(Value::as_str).unwrap_or("").into(),
                            type_: c
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("string")
                                .into(),
                            json_path: c
                                .get("jsonPath")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .into(),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            description: c
                                .get("description")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(ResourceDef {
                group: group.clone(),
                version: name,
                resource: plural.clone(),
                singular: singular.clone(),
                kind: kind.clone(),
                list_kind: list_kind.clone(),
                namespaced: s("/spec/scope") != "Cluster",
                short_names: strings("/spec/names/shortNames"),
                categories: strings("/spec/names/categories"),
                status_subresource: v.pointer("/subresources/status").is_some(),
                crd: Some(s("/metadata/name")),
                storage_version: storage_version.clone(),
                printer_columns,
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                unconditional_update: false,
            })
        })
        .collect()
}

/// Lookup over everything currently served.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    defs: Vec<ResourceDef>,
}

impl Registry {
    /// Built-ins plus the resources of `crds` (CRD objects as stored).
    pub fn build<'a>(crds: impl Iterator<Item = &'a Value>) -> Self {
        let mut defs = builtins();
        for crd in crds {
            for def in from_crd(crd) {
                // A CRD may not shadow a built-in or an earlier CRD's resource.
                if !defs.iter().any(|d| {
                    d.group == def.group && d.version == def.version && d.resource == def.resource
                }) {
                    defs.push(def);
                }
            }
        }
        Self { defs }
    }

    pub fn all(&self) -> &[ResourceDef] {
        &self.defs
    }

    pub fn get(&self, group: &str, version: &str, resource: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.resource == resource)
    }

    /// The storage definition of a resource (any version's def with the storage version).
    pub fn storage_def(&self, key: &ResourceKey) -> Option<&ResourceDef> {
        let mut candidates = self
            .defs
            .iter()
            .filter(|d| d.group == key.group && d.resource == key.resource);
        let first = candidates.next()?;
        Some(
            std::iter::once(first)
                .chain(candidates)
                .find(|d| d.version == d.storage_version)
                .unwrap_or(first),
        )
    }

    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in &self.defs {
            if !d.group.is_empty() && !out.contains(&d.group) {
                out.push(d.group.clone());
            }
        }
        out
    }

    /// Versions served for a group, preferred (storage) first.
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in self.defs.iter().filter(|d| d.group == group) {
            if !out.contains(&d.version) {
                if d.version == d.storage_version {
                    out.insert(0, d.version.clone())
                } else {
                    out.push(d.version.clone())
                }
            }
        }
        out
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceDef> {
        self.defs
            .iter()
            .filter(move |d| d.group == group && d.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_serves_each_served_version() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v0", "served": false, "storage": false}
                ]}
        });
        let reg = Registry::build(std::iter::once(&crd));
        let v1 = reg.get("example.com", "v1", "widgets").unwrap();
        assert!(v1.status_subresource && v1.namespaced);
        assert_eq!(v1.list_kind, "WidgetList");
        assert_eq!(v1.short_names, vec!["wd"]);
        assert!(reg.get("example.com", "v1beta1", "widgets").is_some());
        assert!(reg.get("example.com", "v0", "widgets").is_none());
        assert_eq!(reg.versions("example.com"), vec!["v1", "v1beta1"]);
        assert_eq!(
            reg.storage_def(&ResourceKey::new("example.com", "widgets"))
                .unwrap()
                .version,
            "v1"
        );
    }
}
