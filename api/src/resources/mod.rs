//! The `margay.dev/v1` kinds. Each module holds a kind's types, its defaults
//! (`with_defaults` / `Resolved*`) and its `validate_*` function.

// kube's `printcolumn(name = .., type_ = ..)` repeats the same keys once per
// column, which clippy mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod agent;
pub mod bgp;
pub mod ipam;
pub mod ippool;
pub mod policy;

use crate::validate::Problems;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Go `time.ParseDuration` syntax without sign: `90s`, `1m30s`, `1.5h`, `0s`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A set name must be a DNS subdomain (what the API server demands of custom
/// resources too).
pub(crate) fn check_object_name(p: &mut Problems, meta: &ObjectMeta) {
    if let Some(name) = &meta.name
        && !crate::names::is_dns_subdomain(name)
    {
        p.add(
            "metadata.name",
            format!(
                "{name:?}: allowed lowercase alphanumerics, '-' and '.', alphanumeric at both ends, at most 253"
            ),
        );
    }
}

/// Singleton kinds are read only under the name `default`.
pub(crate) fn check_singleton_name(p: &mut Problems, meta: &ObjectMeta) {
    match meta.name.as_deref() {
        Some("default") => {}
        other => p.add(
            "metadata.name",
            format!(
                "{:?}: allowed only \"default\" (this kind is a singleton)",
                other.unwrap_or("")
            ),
        ),
    }
}

pub(crate) fn check_duration(
    p: &mut Problems,
    field: &str,
    d: kube::core::Duration,
    min: std::time::Duration,
    max: std::time::Duration,
) {
    if d.is_negative() {
        p.add(
            field,
            format!(
                "{d} is negative: allowed {}..={}",
                fmt_secs(min),
                fmt_secs(max)
            ),
        );
        return;
    }
    let v: std::time::Duration = d.into();
    if v < min || v > max {
        p.add(
            field,
            format!(
                "{d} is out of range: allowed {}..={}",
                fmt_secs(min),
                fmt_secs(max)
            ),
        );
    }
}

fn fmt_secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}
