//! Service ClusterIP allocation (the real server's IP allocator, simplified).

use serde_json::{Value, json};

use super::super::resources::ResourceKey;
use super::super::status::{ApiError, ApiResult, FieldError};
use super::{Store, meta_str};

impl Store {
    /// Gives a new Service its ClusterIP from 10.96.0.0/12 (lowest free address
    /// from 10.96.0.10; .1 is what a real cluster gives the `kubernetes` Service),
    /// unless it asks for one, is headless (`None`) or is an ExternalName.
    pub(super) fn allocate_cluster_ip(&self, svc: &mut Value) -> ApiResult<()> {
        if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
            return Ok(());
        }
        let asked = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let used: std::collections::HashSet<String> = self
            .objects
            .get(&ResourceKey::new("", "services"))
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|o| {
                o.pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        let ip = if asked.is_empty() {
            let base = u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0));
            let free = (10..(1u32 << 20) - 1)
                .map(|i| std::net::Ipv4Addr::from(base + i).to_string())
                .find(|ip| !used.contains(ip));
            free.ok_or_else(|| {
                ApiError::internal("the service ClusterIP range 10.96.0.0/12 is full")
            })?
        } else if asked != "None" && used.contains(&asked) {
            let name = meta_str(svc, "name").to_string();
            return Err(ApiError::invalid(
                "",
                "Service",
                &name,
                &[FieldError::invalid(
                    "spec.clusterIPs",
                    &json!([asked]),
                    "failed to allocate IP: provided IP is already allocated",
                )],
            ));
        } else {
            asked
        };
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
            return Ok(());
        };
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
        Ok(())
    }
}

/// An update that omits a Service's allocated fields keeps them (upstream
/// `patchAllocatedValues`).
pub(super) fn keep_allocated_service_fields(existing: &Value, new: &mut Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for f in [
        "clusterIP",
        "clusterIPs",
        "ipFamilies",
        "ipFamilyPolicy",
        "internalTrafficPolicy",
    ] {
        if !spec.contains_key(f)
            && let Some(v) = existing.pointer(&format!("/spec/{f}"))
        {
            spec.insert(f.into(), v.clone());
        }
    }
}
