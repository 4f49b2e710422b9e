//! Kubernetes object names and label values, and the names Margay derives for
//! its IPAM objects (a block's name from its CIDR, an affinity's from node and
//! CIDR), so that every component computes the same name.

use crate::net::Cidr;

/// DNS-1123 subdomain: at most 253 characters of lowercase alphanumerics,
/// `-` and `.`, alphanumeric at both ends. What most object names must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| is_lower_alnum(c) || c == b'-' || c == b'.')
}

/// A valid label value: empty, or at most 63 characters, alphanumeric at both
/// ends, `-`, `_`, `.` inside.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

/// A container port name (IANA service name, as Kubernetes validates
/// `containerPort.name`): 1-15 lowercase alphanumerics or `-`, at least one
/// letter, no `-` at either end and no `--`.
pub fn is_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !s.contains("--")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// 64-bit FNV-1a: a stable hash for deriving names (not for security).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Label `margay.dev/node` on IPAM objects, so a node lists only its own.
pub const NODE_LABEL: &str = "margay.dev/node";

/// Value of [`NODE_LABEL`] for `node`: the name itself when it is a valid label
/// value (≤ 63 characters), else `h-` and a hash of it. The full name is always
/// in the object's spec; the label is only an index.
pub fn node_label_value(node: &str) -> String {
    if is_label_value(node) && !node.is_empty() {
        node.to_string()
    } else {
        format!("h-{:016x}", fnv1a64(node.as_bytes()))
    }
}

/// Name of the `IPAMBlock` for `cidr`.
pub fn block_name(cidr: &Cidr) -> String {
    cidr.to_object_name()
}

/// Name of the `BlockAffinity` of `node` for `cidr`: `<node>-<block name>`,
/// or a hashed node part when that would exceed 253 characters.
pub fn affinity_name(node: &str, cidr: &Cidr) -> String {
    let block = block_name(cidr);
    let plain = format!("{node}-{block}");
    if plain.len() <= 253 && is_dns_subdomain(&plain) {
        plain
    } else {
        format!("h-{:016x}-{block}", fnv1a64(node.as_bytes()))
    }
}

/// Name of the `IPAMHandle` for `handle`: the handle itself when it is a valid
/// object name, else `h-` and a hash of it (the spec keeps the real id).
pub fn handle_name(handle: &str) -> String {
    if is_dns_subdomain(handle) {
        handle.to_string()
    } else {
        format!("h-{:016x}", fnv1a64(handle.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(is_dns_subdomain("node-1.example.com"));
        assert!(!is_dns_subdomain("Node-1"));
        assert!(!is_dns_subdomain("-a"));
        assert!(!is_dns_subdomain("a-"));
        assert!(!is_dns_subdomain(""));
        assert!(!is_dns_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn derived_names_are_valid_and_stable() {
        let cidr: Cidr = "10.0.0.64/26".parse().unwrap();
        assert_eq!(affinity_name("node-1", &cidr), "node-1-10-0-0-64-26");
        let long = "n".repeat(250);
        let a = affinity_name(&long, &cidr);
        assert!(is_dns_subdomain(&a), "{a}");
        assert_eq!(a, affinity_name(&long, &cidr));
        assert_eq!(node_label_value("node-1"), "node-1");
        let hashed = node_label_value(&"x".repeat(64));
        assert!(is_label_value(&hashed) && hashed.starts_with("h-"));
        assert_eq!(handle_name("abc123"), "abc123");
        assert!(is_dns_subdomain(&handle_name("k8s-pod-network.ABC_def")));
    }
}
