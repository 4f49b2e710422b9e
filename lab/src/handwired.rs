//! Pods wired by hand the way Calico wires them (no agent, no BGP): a pod
//! namespace with `eth0` holding a /32 and a default route via 169.254.1.1,
//! a host-side veth answering ARP by proxy, a /32 route to the pod on its
//! node and static routes on the others. The baseline Margay's dataplane is
//! measured against.

use std::net::Ipv4Addr;

use crate::LabError;
use crate::netns::{self, Netns};

/// The gateway address every Calico-style pod routes through; nothing owns it,
/// the host-side veth answers ARP for it by proxy.
pub const POD_GATEWAY: &str = "169.254.1.1";

/// A hand-wired pod.
#[derive(Debug, Clone)]
pub struct HandPod {
    pub netns: Netns,
    /// Host-side interface in the node namespace.
    pub host_if: String,
    pub ip: Ipv4Addr,
}

/// Creates pod namespace `pod_netns` on `node`, wired Calico-style with `ip`.
pub fn wire_pod(
    node: &Netns,
    pod_netns: &str,
    host_if: &str,
    ip: Ipv4Addr,
) -> Result<HandPod, LabError> {
    let pod = Netns::create(pod_netns)?;
    netns::veth(node, host_if, &pod, "eth0")?;
    // Answer ARP for 169.254.1.1 at once (the default proxy delay is ~0.8 s).
    node.sysctls(&[
        (&format!("net.ipv4.conf.{host_if}.proxy_arp"), "1"),
        (&format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0"),
        (&format!("net.ipv4.conf.{host_if}.forwarding"), "1"),
    ])?;
    node.ip(&[
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        host_if,
        "scope",
        "link",
    ])?;
    pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
    pod.ip(&["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"])?;
    pod.ip(&["route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"])?;
    Ok(HandPod {
        netns: pod,
        host_if: host_if.to_string(),
        ip,
    })
}

/// A static route on `node` to a pod living behind `via` (its node's address).
pub fn route_to(node: &Netns, pod_ip: Ipv4Addr, via: Ipv4Addr) -> Result<(), LabError> {
    node.ip(&[
        "route",
        "add",
        &format!("{pod_ip}/32"),
        "via",
        &via.to_string(),
    ])?;
    Ok(())
}
