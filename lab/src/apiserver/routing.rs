//! Request paths to what they address, following upstream's `RequestInfo` rules
//! (`/api/v1/namespaces/NS/RESOURCE/NAME/SUBRESOURCE`, `/apis/G/V/...`, with
//! `namespaces/NAME/status|finalize` as namespace subresources).

use std::collections::HashMap;

/// The address of a resource request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Health,
    Faults,
    Compact,
    CoreVersions,
    GroupList,
    Group(String),
    ResourceList { group: String, version: String },
    OpenApiV2,
    OpenApiV3Root,
    OpenApiV3 { group: String, version: String },
    Resource(ResourcePath),
    NotFound,
}

pub fn route(path: &str) -> Route {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["_lab", "faults"] => Route::Faults,
        ["_lab", "compact"] => Route::Compact,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::GroupList,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::ResourceList {
            group: String::new(),
            version: v.to_string(),
        },
        ["apis", g, v] => Route::ResourceList {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::OpenApiV3Root,
        ["openapi", "v3", "api", v] => Route::OpenApiV3 {
            group: String::new(),
            version: v.to_string(),
        },
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3 {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["api", v, rest @ ..] => resource_path("", v, rest),
        ["apis", g, v, rest @ ..] => resource_path(g, v, rest),
        _ => Route::NotFound,
    }
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Route {
    let mut namespace = None;
    let mut rest = rest;
    if rest.first() == Some(&"namespaces")
        && rest.len() > 1
        && !(rest.len() > 2 && matches!(rest[2], "status" | "finalize"))
        && rest.len() > 2
    {
        namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    let s = |i: usize| rest.get(i).map(|x| x.to_string());
    if rest.is_empty() || rest.len() > 3 {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        group: group.into(),
        version: version.into(),
        resource: rest[0].to_string(),
        namespace,
        name: s(1),
        subresource: s(2),
    })
}

pub fn query_params(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(g: &str, r: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Route {
        Route::Resource(ResourcePath {
            group: g.into(),
            version: "v1".into(),
            resource: r.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        })
    }

    #[test]
    fn paths() {
        assert_eq!(
            route("/api/v1/namespaces/default/pods"),
            rp("", "pods", Some("default"), None, None)
        );
        assert_eq!(
            route("/api/v1/namespaces/default/pods/p/status"),
            rp("", "pods", Some("default"), Some("p"), Some("status"))
        );
        assert_eq!(
            route("/api/v1/namespaces"),
            rp("", "namespaces", None, None, None)
        );
        assert_eq!(
            route("/api/v1/namespaces/team"),
            rp("", "namespaces", None, Some("team"), None)
        );
        assert_eq!(
            route("/api/v1/namespaces/team/status"),
            rp("", "namespaces", None, Some("team"), Some("status"))
        );
        assert_eq!(
            route("/api/v1/nodes/n1"),
            rp("", "nodes", None, Some("n1"), None)
        );
        assert_eq!(
            route("/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/p"),
            rp(
                "networking.k8s.io",
                "networkpolicies",
                Some("a"),
                Some("p"),
                None
            )
        );
        assert_eq!(
            route("/apis/example.com"),
            Route::Group("example.com".into())
        );
        assert_eq!(route("/apis"), Route::GroupList);
        assert_eq!(route("/_lab/faults"), Route::Faults);
        assert_eq!(route("/nope"), Route::NotFound);
        assert_eq!(route("/api/v1/a/b/c/d"), Route::NotFound);
    }
}
