//! CNI errors: the spec's codes, a one-line message a person can act on, and
//! details; rendered as the spec's error object.

use margay_api::endpoint::{WireError, codes};
use serde::Serialize;

/// Plugin-specific code (100+ is ours): the pod's wiring in the kernel is not
/// what ADD made (CHECK).
pub const WIRING_MISMATCH: u32 = 100;
/// Plugin-specific code: the kernel refused a change to the pod's wiring.
pub const KERNEL_REFUSED: u32 = 101;
/// Plugin-specific code: the interface the runtime asked for already exists in
/// the pod and is not ours.
pub const INTERFACE_EXISTS: u32 = 102;

/// An error the plugin reports to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    pub fn invalid_env(msg: impl Into<String>) -> CniError {
        CniError::new(codes::INVALID_ENVIRONMENT, msg)
    }

    pub fn invalid_config(msg: impl Into<String>) -> CniError {
        CniError::new(codes::INVALID_NETWORK_CONFIG, msg)
    }

    pub fn decode(msg: impl Into<String>) -> CniError {
        CniError::new(codes::DECODE_FAILURE, msg)
    }

    pub fn io(msg: impl Into<String>) -> CniError {
        CniError::new(codes::IO_FAILURE, msg)
    }

    /// The spec's error object, with the version in use.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

impl From<WireError> for CniError {
    fn from(e: WireError) -> CniError {
        CniError {
            code: e.code,
            msg: e.msg,
            details: e.details,
        }
    }
}

impl From<crate::netlink::NetlinkError> for CniError {
    fn from(e: crate::netlink::NetlinkError) -> CniError {
        CniError::new(KERNEL_REFUSED, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_spec_error_object_and_omits_empty_details() {
        let e = CniError::invalid_env("CNI_IFNAME is not set");
        assert_eq!(
            e.to_json("1.0.0"),
            serde_json::json!({"cniVersion": "1.0.0", "code": 4, "msg": "CNI_IFNAME is not set"})
        );
        let e = CniError::new(11, "agent busy").with_details("allocation in progress");
        assert_eq!(e.to_json("1.1.0")["details"], "allocation in progress");
        assert_eq!(e.to_string(), "agent busy: allocation in progress");
    }

    #[test]
    fn agent_errors_keep_their_code() {
        let e: CniError = WireError {
            code: codes::TRY_AGAIN_LATER,
            msg: "IPAM: pool exhausted".into(),
            details: String::new(),
        }
        .into();
        assert_eq!(e.code, 11);
        assert_eq!(e.msg, "IPAM: pool exhausted");
    }
}
