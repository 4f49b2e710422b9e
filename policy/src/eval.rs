//! The evaluator: is this packet allowed, and by which policy and rule —
//! computed from the same [`Ir`] the nftables renderer reads, following the
//! same steps the rendered chains take (ADR 0003).
//!
//! It judges the *first* packet of a connection as it crosses the node's
//! forward path: the egress program of the source if it is a local endpoint,
//! then the ingress program of the destination if it is one. Replies of an
//! allowed connection are allowed by connection tracking; traffic from the
//! node itself to its pods is always allowed (not evaluated here).

use std::fmt;
use std::net::IpAddr;

use margay_api::net::IpFamily;

use crate::ir::{Action, Direction, Endpoint, EndpointProgram, Ir, Rule, RuleOrigin};

/// The first packet of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number.
    pub protocol: u8,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

impl Packet {
    pub fn tcp(src: IpAddr, dst: IpAddr, dst_port: u16) -> Packet {
        Packet {
            src,
            dst,
            protocol: 6,
            src_port: Some(40000),
            dst_port: Some(dst_port),
            icmp: None,
        }
    }

    pub fn udp(src: IpAddr, dst: IpAddr, dst_port: u16) -> Packet {
        Packet {
            protocol: 17,
            ..Packet::tcp(src, dst, dst_port)
        }
    }

    pub fn sctp(src: IpAddr, dst: IpAddr, dst_port: u16) -> Packet {
        Packet {
            protocol: 132,
            ..Packet::tcp(src, dst, dst_port)
        }
    }
}

/// What decided a direction's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidedBy {
    /// A rule with a terminal action (Allow or Deny).
    Rule { origin: RuleOrigin, action: Action },
    /// No policy applies to the endpoint in this direction: allowed.
    NoPolicy,
    /// Policies apply and none decided: dropped (end of policies).
    EndOfPolicies,
    /// A GlobalNetworkPolicy rule passed to the NetworkPolicies; none of
    /// them allowed, so their default applies (drop if any selects the
    /// endpoint, else allow).
    PassedToKubernetes { pass: RuleOrigin },
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::Rule { origin, action } => write!(f, "{action} by {origin}"),
            DecidedBy::NoPolicy => f.write_str("no policy applies (allowed)"),
            DecidedBy::EndOfPolicies => {
                f.write_str("policies apply and no rule matched (end of policies: denied)")
            }
            DecidedBy::PassedToKubernetes { pass } => write!(
                f,
                "passed by {pass}; no NetworkPolicy rule matched (Kubernetes default)"
            ),
        }
    }
}

/// The verdict of one direction on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub decided_by: DecidedBy,
    /// Log rules the packet matched on the way, in order.
    pub logged: Vec<RuleOrigin>,
}

/// Both directions of a packet crossing this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The source's egress verdict, when the source is a local endpoint.
    pub egress: Option<(String, Verdict)>,
    /// The destination's ingress verdict, when it is a local endpoint.
    pub ingress: Option<(String, Verdict)>,
}

impl Explanation {
    /// Allowed when no evaluated direction denies.
    pub fn allowed(&self) -> bool {
        self.egress.as_ref().is_none_or(|(_, v)| v.allowed)
            && self.ingress.as_ref().is_none_or(|(_, v)| v.allowed)
    }
}

/// Evaluate a packet forwarded through this node.
pub fn explain(ir: &Ir, p: &Packet) -> Explanation {
    Explanation {
        egress: ir
            .endpoint_by_ip(p.src)
            .map(|e| (e.interface.clone(), evaluate(ir, e, Direction::Egress, p))),
        ingress: ir
            .endpoint_by_ip(p.dst)
            .map(|e| (e.interface.clone(), evaluate(ir, e, Direction::Ingress, p))),
    }
}

enum Step {
    Decided(Verdict),
    Pass(RuleOrigin),
    Continue,
}

/// Evaluate one direction of one endpoint.
pub fn evaluate(ir: &Ir, ep: &Endpoint, d: Direction, p: &Packet) -> Verdict {
    let prog = ep.program(d);
    let mut logged = Vec::new();
    if !prog.any_policy() {
        return Verdict {
            allowed: true,
            decided_by: DecidedBy::NoPolicy,
            logged,
        };
    }
    match run_globals(ir, &prog.before, p, &mut logged) {
        Step::Decided(mut v) => {
            v.logged = logged;
            return v;
        }
        Step::Pass(pass) => return kubernetes_only(ir, prog, p, pass, logged),
        Step::Continue => {}
    }
    if let Some(origin) = kubernetes_allows(ir, prog, p) {
        return Verdict {
            allowed: true,
            decided_by: DecidedBy::Rule {
                origin,
                action: Action::Allow,
            },
            logged,
        };
    }
    match run_globals(ir, &prog.after, p, &mut logged) {
        Step::Decided(mut v) => {
            v.logged = logged;
            v
        }
        // The NetworkPolicies already had their say and did not allow.
        Step::Pass(pass) => Verdict {
            allowed: prog.pass_default_allows(),
            decided_by: DecidedBy::PassedToKubernetes { pass },
            logged,
        },
        Step::Continue => Verdict {
            allowed: prog.default_allows(),
            decided_by: DecidedBy::EndOfPolicies,
            logged,
        },
    }
}

fn kubernetes_only(
    ir: &Ir,
    prog: &EndpointProgram,
    p: &Packet,
    pass: RuleOrigin,
    logged: Vec<RuleOrigin>,
) -> Verdict {
    match kubernetes_allows(ir, prog, p) {
        Some(origin) => Verdict {
            allowed: true,
            decided_by: DecidedBy::Rule {
                origin,
                action: Action::Allow,
            },
            logged,
        },
        None => Verdict {
            allowed: prog.pass_default_allows(),
            decided_by: DecidedBy::PassedToKubernetes { pass },
            logged,
        },
    }
}

fn kubernetes_allows(ir: &Ir, prog: &EndpointProgram, p: &Packet) -> Option<RuleOrigin> {
    prog.kubernetes
        .iter()
        .filter_map(|id| ir.chains.get(id))
        .flat_map(|c| &c.rules)
        .find(|r| rule_matches(ir, r, p))
        .map(|r| r.origin.clone())
}

fn run_globals(
    ir: &Ir,
    chains: &[crate::ir::ChainId],
    p: &Packet,
    logged: &mut Vec<RuleOrigin>,
) -> Step {
    for id in chains {
        let Some(c) = ir.chains.get(id) else { continue };
        for r in &c.rules {
            if !rule_matches(ir, r, p) {
                continue;
            }
            match r.action {
                Action::Log => logged.push(r.origin.clone()),
                Action::Pass => return Step::Pass(r.origin.clone()),
                Action::Allow | Action::Deny => {
                    return Step::Decided(Verdict {
                        allowed: r.action == Action::Allow,
                        decided_by: DecidedBy::Rule {
                            origin: r.origin.clone(),
                            action: r.action,
                        },
                        logged: Vec::new(),
                    });
                }
            }
        }
    }
    Step::Continue
}

fn in_ranges(port: Option<u16>, ranges: &[(u16, u16)]) -> bool {
    port.is_some_and(|p| ranges.iter().any(|(a, z)| *a <= p && p <= *z))
}

/// Whether every test of the rule holds for the packet.
pub fn rule_matches(ir: &Ir, r: &Rule, p: &Packet) -> bool {
    let family = IpFamily::of(p.src);
    if r.family.is_some_and(|f| f != family) {
        return false;
    }
    if r.protocol.is_some_and(|proto| proto != p.protocol) {
        return false;
    }
    let addr_ok = |ms: &[crate::ir::AddrMatch], a: IpAddr| {
        ms.iter().all(|m| {
            ir.sets
                .get(&m.set)
                .is_some_and(|s| s.family == IpFamily::of(a) && s.contains(a, p.protocol, None))
                != m.negated
        })
    };
    if !addr_ok(&r.src, p.src) || !addr_ok(&r.dst, p.dst) {
        return false;
    }
    if !r.src_ports.is_empty() && !in_ranges(p.src_port, &r.src_ports) {
        return false;
    }
    if !r.not_src_ports.is_empty()
        && (p.src_port.is_none() || in_ranges(p.src_port, &r.not_src_ports))
    {
        return false;
    }
    if !r.dst_ports.is_empty() && !in_ranges(p.dst_port, &r.dst_ports) {
        return false;
    }
    if !r.not_dst_ports.is_empty()
        && (p.dst_port.is_none() || in_ranges(p.dst_port, &r.not_dst_ports))
    {
        return false;
    }
    if let Some(id) = &r.named_dst_port
        && !ir
            .sets
            .get(id)
            .is_some_and(|s| s.contains(p.dst, p.protocol, p.dst_port))
    {
        return false;
    }
    if let Some((t, code)) = r.icmp {
        match p.icmp {
            Some((pt, pc)) if pt == t && code.is_none_or(|c| c == pc) => {}
            _ => return false,
        }
    }
    true
}
