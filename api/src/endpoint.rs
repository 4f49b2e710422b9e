//! The protocol between the CNI plugin (`margay-cni`) and the agent's endpoint
//! service on the same node.
//!
//! Transport: a unix stream socket (default [`DEFAULT_SOCKET`]); the plugin
//! connects, writes one [`Request`] as a single line of JSON, reads one
//! [`Response`] line, and closes. One request per connection keeps both sides
//! simple and lets the agent serve many ADDs at once.
//!
//! An ADD is two requests: [`Request::Add`] (the agent allocates addresses for
//! the pod and tells the plugin the host interface name and MTU), then, once the
//! plugin has created the veth pair and configured the pod, [`Request::Ready`]
//! (the agent records the endpoint, programs its routes and policy, and answers
//! only when they are in the kernel, or fails after its policy-wait timeout). A
//! failed ADD is followed by the plugin's own clean-up and a [`Request::Del`].
//! Every request is idempotent per attachment (container id + interface).
//!
//! Errors carry CNI error codes ([`codes`]) so the plugin passes them straight
//! to the runtime.

use serde::{Deserialize, Serialize};

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/margay/cni.sock";

/// The prefix of every host-side pod interface Margay creates.
pub const HOST_INTERFACE_PREFIX: &str = "mgy";

/// The host-side interface name of a pod: `mgy` + 11 hex digits of a hash of
/// `namespace/pod`. Stable across restarts and reinstalls, so the agent and the
/// plugin agree on it without asking each other, and 14 characters long (Linux
/// allows 15).
pub fn host_interface_name(namespace: &str, pod: &str) -> String {
    // FNV-1a 64: stable across Rust versions and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(pod.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV alone mixes the last bytes poorly into the high bits (pods `a`/`b`
    // would differ in one digit); a final avalanche spreads every input bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    format!("{HOST_INTERFACE_PREFIX}{:011x}", h >> 20)
}

/// CNI error codes (CNI spec, "Error" section) used on this protocol.
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADDs now.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
}

/// One pod network attachment, as the runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

/// The pod an attachment belongs to (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
/// `K8S_POD_UID` from `CNI_ARGS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A request from the plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Allocate (or return the already allocated) addresses for an attachment.
    #[serde(rename_all = "camelCase")]
    Add {
        attachment: Attachment,
        pod: PodRef,
        /// `CNI_NETNS`, for the agent's records and logs.
        netns: String,
    },
    /// The plugin has wired the pod; answer once routes and policy are in place.
    #[serde(rename_all = "camelCase")]
    Ready {
        attachment: Attachment,
        pod: PodRef,
        host_interface: String,
        /// The pod's addresses with prefix length, e.g. `10.244.0.5/32`.
        addresses: Vec<String>,
        /// MAC of the pod's interface.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    /// Release the attachment's addresses and forget its endpoint. Succeeds for
    /// attachments the agent never saw.
    #[serde(rename_all = "camelCase")]
    Del {
        attachment: Attachment,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pod: Option<PodRef>,
    },
    /// What the agent holds for an attachment (CNI CHECK compares it with the kernel).
    #[serde(rename_all = "camelCase")]
    Check { attachment: Attachment, pod: PodRef },
    /// Whether the agent can serve ADDs now (CNI STATUS).
    Status,
    /// Release every allocation of this node whose attachment is not listed
    /// (CNI GC, `cni.dev/valid-attachments`).
    #[serde(rename_all = "camelCase")]
    Gc { valid_attachments: Vec<Attachment> },
}

/// What `Add` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Addresses with prefix length (`/32`, `/128`), one per family requested.
    pub addresses: Vec<String>,
    /// Name for the host-side veth ([`host_interface_name`]).
    pub host_interface: String,
    /// MTU for the pod's interface, worked out by the agent from the underlay and
    /// the encapsulation in use.
    pub mtu: u32,
}

/// What `Check` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointInfo {
    pub addresses: Vec<String>,
    pub host_interface: String,
}

/// What `Gc` returns.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Attachments whose allocations were released (`container_id/ifname`).
    pub released: Vec<String>,
}

/// An error, with the CNI code the plugin reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
#[error("{msg}")]
pub struct WireError {
    pub code: u32,
    /// One line a person can act on.
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

/// The answer to a request: `{"ok": ...}` or `{"error": {...}}`. `ok` holds an
/// [`Allocation`] for `Add`, an [`EndpointInfo`] for `Check`, a [`GcReport`] for
/// `Gc`, and `null` otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    Ok(serde_json::Value),
    Error(WireError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interface_names_are_stable_distinct_and_short() {
        let a = host_interface_name("default", "web-0");
        assert_eq!(a, host_interface_name("default", "web-0"));
        assert_ne!(a, host_interface_name("default", "web-1"));
        // "ns/a-b" and "ns-a/b" must not collide through the separator.
        assert_ne!(
            host_interface_name("x", "a-b"),
            host_interface_name("x-a", "b")
        );
        assert_eq!(a.len(), 14);
        // Names of neighbouring pods differ in most digits, not one.
        let (x, y) = (
            host_interface_name("demo", "a"),
            host_interface_name("demo", "b"),
        );
        let differing = x.chars().zip(y.chars()).filter(|(p, q)| p != q).count();
        assert!(differing >= 6, "{x} vs {y}");
        assert!(a.starts_with("mgy") && a[3..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn requests_and_responses_have_a_stable_json_shape() {
        let req = Request::Del {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
            pod: None,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"op":"del","attachment":{"containerId":"c1","ifname":"eth0"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );

        let err = Response::Error(WireError {
            code: codes::TRY_AGAIN_LATER,
            msg: "agent not ready".into(),
            details: String::new(),
        });
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"error":{"code":11,"msg":"agent not ready"}}"#
        );
    }
}
