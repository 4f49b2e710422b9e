//! Validation errors shared by every kind. Each kind has a `validate_*`
//! function next to its type; they collect every problem (not just the first)
//! so `kubectl apply` users and `margayctl` can fix a file in one go.
//!
//! What the CRD schema already enforces server side (enums, numeric ranges,
//! string patterns, required fields and a few CEL rules) is repeated here so
//! that objects that never went through an API server (files, the emulator,
//! unit tests) get the same answers. What *only* this code catches is listed
//! in [`RUST_ONLY_CHECKS`].

use std::fmt;

/// One problem with one field of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.blockSize` or `spec.communities[2].value`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Every problem found with one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub kind: &'static str,
    pub name: String,
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} is invalid:", self.kind, self.name)?;
        for (i, e) in self.errors.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl ValidationError {
    /// An error with a single field problem.
    pub fn single(
        kind: &'static str,
        name: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ValidationError {
        ValidationError {
            kind,
            name: name.into(),
            errors: vec![FieldError {
                field: field.into(),
                message: message.into(),
            }],
        }
    }
}

/// Collects field errors for one object.
#[derive(Debug)]
pub struct Problems {
    kind: &'static str,
    name: String,
    errors: Vec<FieldError>,
}

impl Problems {
    pub fn new(kind: &'static str, name: impl Into<String>) -> Problems {
        Problems {
            kind,
            name: name.into(),
            errors: Vec::new(),
        }
    }

    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn finish(self) -> Result<(), ValidationError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                kind: self.kind,
                name: self.name,
                errors: self.errors,
            })
        }
    }
}

/// Checks that only the Rust validation performs (an API server applying the
/// generated CRDs cannot express them in the schema, or only with CEL
/// functions older servers lack). Kept here so documentation and code agree.
pub const RUST_ONLY_CHECKS: &[&str] = &[
    "IPPool: spec.cidr has host bits set or is not an address/prefix (CEL isCIDR where the server has it)",
    "IPPool: spec.blockSize outside 20..=32 for IPv4 or 116..=128 for IPv6, or shorter than the pool prefix",
    "IPPool: spec.cidr overlaps another pool, or loopback/link-local/multicast ranges",
    "IPPool: spec.nodeSelector is not a valid selector string",
    "IPPool: vxlanMode and ipipMode both not Never, and ipipMode on an IPv6 pool",
    "IPAMBlock: allocations outside the block, twice the same ordinal, inUse mismatch",
    "BlockAffinity: spec.cidr not canonical",
    "BGPConfiguration: service CIDRs, community values (aa:nn / aa:nn:mm), duplicate community names, prefixAdvertisements referencing unknown communities",
    "BGPPeer: peerIP with [v6]:port parsing, exactly one of peerIP/peerSelector, node and nodeSelector exclusive, asNumber required with peerIP and forbidden with peerSelector, selectors parse, keepaliveTime range",
    "AgentConfiguration: name is `default` or `node.<nodename>`, durations in range",
    "IPAMConfiguration / BGPConfiguration: name must be `default`",
    "GlobalNetworkPolicy: selectors parse, protocol names/numbers, ports/ranges/port names (named ports in destination.ports only), ports only with TCP/UDP/SCTP/UDPLite, ICMP family vs ipVersion, nets/notNets are CIDRs without host bits and of one family, rules only for listed types",
];

/// The AS number range, for messages.
pub const AS_RANGE: &str = "1..=4294967295";
