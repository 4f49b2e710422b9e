//! The IR as nftables commands (the `nft` language, run in one batch by
//! libnftables): a full table, or the changes of a [`Delta`].
//!
//! Layout of `table inet margay` (ADR 0004):
//! - base chain `egress` (hook forward, priority filter + 10): replies pass
//!   (`ct state established,related accept`), invalid packets from pods
//!   drop, then `iifname vmap @from-pod` dispatches to the source
//!   endpoint's `e-<if>-e` chain; any other `mgy*` interface drops;
//! - base chain `ingress` (hook forward, priority filter + 11): the same for
//!   `oifname vmap @to-pod` → `e-<if>-i`. Two base chains because an
//!   `accept` is final only within its base chain: egress accepting must not
//!   skip the destination's ingress check. Both run after DNAT (prerouting
//!   dstnat -100), so Service traffic is judged on the backend pod;
//! - base chain `input` (hook input): traffic from unknown `mgy*`
//!   interfaces to the node drops (fail closed); known pods may reach their
//!   node. Traffic from the node to its pods is locally generated and never
//!   crosses these hooks: it is always allowed (kubelet probes);
//! - one chain per policy and direction (`g-…`/`k-…`), shared by every
//!   endpoint it applies to, one rule per IR rule, each with a comment
//!   holding a hash of its text (how reconcile spots drift);
//! - per endpoint and direction `e-<if>-i|e` (and `…-ip|ep` when a
//!   GlobalNetworkPolicy can Pass): jumps to the policy chains in program
//!   order. Pass sets a mark bit and returns; the endpoint chain tests it
//!   right after the jump. Every drop an endpoint chain decides (no rule
//!   allowed) counts into the named counter `d-<if>-i|e`, which the agent
//!   reads back cheaply (`list counters`) for its per-endpoint drop metric;
//! - a new TCP flow that does not start with a SYN is dropped from and to
//!   pods: when the agent deletes the conntrack entry of a connection a
//!   policy change denies, the connection's next segment would otherwise be
//!   picked up as a new flow (`nf_conntrack_tcp_loose`) — in the reverse
//!   direction too, where it could pass as the other side's connection.

use std::fmt::Write as _;
use std::net::IpAddr;

use margay_api::names::fnv1a64;
use margay_api::net::IpFamily;

use crate::ir::{
    Action, AddrMatch, ChainId, Delta, Direction, Endpoint, EndpointProgram, IpSet, Ir,
    PolicyChain, Rule, SetElem, SetKind,
};

/// Names and numbers the rendering uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderConfig {
    /// Table name (family `inet`).
    pub table: String,
    /// The packet-mark bit a Pass sets for the endpoint chain to see.
    pub pass_mark: u32,
    /// Priority of the forward base chains relative to `filter` (0).
    pub priority: i32,
    /// Interface prefix of pod interfaces.
    pub interface_prefix: String,
}

impl Default for RenderConfig {
    fn default() -> RenderConfig {
        RenderConfig {
            table: "margay".into(),
            pass_mark: 0x0010_0000,
            priority: 10,
            interface_prefix: margay_api::endpoint::HOST_INTERFACE_PREFIX.into(),
        }
    }
}

pub const FROM_POD_MAP: &str = "from-pod";
pub const TO_POD_MAP: &str = "to-pod";
pub const ENDPOINTS_SET: &str = "endpoints";
pub const BASE_CHAINS: [&str; 3] = ["egress", "ingress", "input"];

/// A TCP segment opening a flow conntrack has not seen, without being a
/// plain SYN (masked so ECN SYNs still count as SYNs).
const NEW_TCP_WITHOUT_SYN: &str = "ct state new tcp flags & (fin | syn | rst | ack) != syn";

/// The named counter of the drops an endpoint's chains decide, per direction.
pub fn endpoint_counter(iface: &str, d: Direction) -> String {
    format!("d-{iface}-{}", d.letter())
}

/// Chain names of an endpoint: (main, pass) per direction.
pub fn endpoint_chain(iface: &str, d: Direction) -> String {
    format!("e-{iface}-{}", d.letter())
}

pub fn endpoint_pass_chain(iface: &str, d: Direction) -> String {
    format!("e-{iface}-{}p", d.letter())
}

/// The kernel's expected state, in a shape reconcile compares against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedChain {
    pub name: String,
    /// Rule texts (without comments), in order.
    pub rules: Vec<String>,
}

impl ExpectedChain {
    /// The per-rule hashes carried in the rules' comments.
    pub fn hashes(&self) -> Vec<String> {
        self.rules.iter().map(|r| rule_hash(r)).collect()
    }
}

/// The hash a rule's comment carries.
pub fn rule_hash(text: &str) -> String {
    format!("{:016x}", fnv1a64(text.as_bytes()))
}

/// Renders the IR for one table.
#[derive(Debug, Clone, Default)]
pub struct Renderer {
    pub config: RenderConfig,
}

impl Renderer {
    pub fn new(config: RenderConfig) -> Renderer {
        Renderer { config }
    }

    fn t(&self) -> String {
        format!("inet {}", self.config.table)
    }

    /// Every non-base chain the IR needs, with its rules.
    pub fn chains(&self, ir: &Ir) -> Vec<ExpectedChain> {
        let mut out: Vec<ExpectedChain> = ir
            .chains
            .values()
            .map(|c| self.policy_chain(ir, c))
            .collect();
        for ep in ir.endpoints.values() {
            out.extend(self.endpoint_chains(ir, ep));
        }
        out
    }

    /// The base chains (hooked), with their rules.
    pub fn base_chains(&self) -> Vec<(ExpectedChain, String)> {
        let c = &self.config;
        let pfx = &c.interface_prefix;
        let hdr = |hook: &str, prio: i32| {
            format!("type filter hook {hook} priority {prio}; policy accept;")
        };
        vec![
            (
                ExpectedChain {
                    name: "egress".into(),
                    rules: vec![
                        "ct state established,related accept".into(),
                        format!("iifname \"{pfx}*\" ct state invalid drop"),
                        format!("iifname \"{pfx}*\" {NEW_TCP_WITHOUT_SYN} drop"),
                        format!("iifname vmap @{FROM_POD_MAP}"),
                        format!("iifname \"{pfx}*\" drop"),
                    ],
                },
                hdr("forward", c.priority),
            ),
            (
                ExpectedChain {
                    name: "ingress".into(),
                    rules: vec![
                        "ct state established,related accept".into(),
                        format!("oifname \"{pfx}*\" ct state invalid drop"),
                        format!("oifname \"{pfx}*\" {NEW_TCP_WITHOUT_SYN} drop"),
                        format!("oifname vmap @{TO_POD_MAP}"),
                        format!("oifname \"{pfx}*\" drop"),
                    ],
                },
                hdr("forward", c.priority + 1),
            ),
            (
                ExpectedChain {
                    name: "input".into(),
                    rules: vec![format!(
                        "iifname \"{pfx}*\" iifname != @{ENDPOINTS_SET} drop"
                    )],
                },
                hdr("input", c.priority),
            ),
        ]
    }

    /// A whole table, replacing whatever table of that name exists, in one
    /// atomic batch.
    pub fn full(&self, ir: &Ir) -> String {
        let t = self.t();
        let mut s = String::new();
        // `add` then `delete`: deletes an existing table without failing
        // when there is none; the batch is atomic, so there is no window.
        let _ = writeln!(s, "add table {t}");
        let _ = writeln!(s, "delete table {t}");
        let _ = writeln!(s, "add table {t}");
        self.fixed_objects(&mut s);
        for set in ir.sets.values() {
            self.add_set(&mut s, set);
        }
        for ep in ir.endpoints.values() {
            self.add_counters(&mut s, &ep.interface);
        }
        let chains = self.chains(ir);
        for c in &chains {
            let _ = writeln!(s, "add chain {t} {}", c.name);
        }
        for c in &chains {
            self.write_rules(&mut s, c);
        }
        for ep in ir.endpoints.values() {
            self.add_endpoint_elements(&mut s, ep);
        }
        for (c, hdr) in self.base_chains() {
            let _ = writeln!(s, "add chain {t} {} {{ {hdr} }}", c.name);
            self.write_rules(&mut s, &c);
        }
        s
    }

    /// The sets and maps every table has, and the base chains' headers.
    fn fixed_objects(&self, s: &mut String) {
        let t = self.t();
        let _ = writeln!(s, "add set {t} {ENDPOINTS_SET} {{ type ifname; }}");
        let _ = writeln!(s, "add map {t} {FROM_POD_MAP} {{ type ifname : verdict; }}");
        let _ = writeln!(s, "add map {t} {TO_POD_MAP} {{ type ifname : verdict; }}");
    }

    /// `add set` with the set's elements.
    pub fn add_set(&self, s: &mut String, set: &IpSet) {
        let t = self.t();
        let _ = writeln!(
            s,
            "add set {t} {} {{ {} }}",
            set.id,
            set_type(set.family, set.kind)
        );
        self.elements(s, "add", &set.id.0, set.elements.iter());
    }

    fn elements<'a>(
        &self,
        s: &mut String,
        verb: &str,
        set: &str,
        elems: impl Iterator<Item = &'a SetElem>,
    ) {
        let t = self.t();
        let mut line = String::new();
        let mut n = 0;
        for e in elems {
            if n > 0 {
                line.push_str(", ");
            }
            line.push_str(&elem_text(e));
            n += 1;
            // Keep single commands bounded (the parser handles big ones, but
            // errors then point into one huge line).
            if n == 1000 {
                let _ = writeln!(s, "{verb} element {t} {set} {{ {line} }}");
                line.clear();
                n = 0;
            }
        }
        if n > 0 {
            let _ = writeln!(s, "{verb} element {t} {set} {{ {line} }}");
        }
    }

    fn write_rules(&self, s: &mut String, c: &ExpectedChain) {
        let t = self.t();
        for r in &c.rules {
            let _ = writeln!(
                s,
                "add rule {t} {} {r} comment \"{}\"",
                c.name,
                rule_hash(r)
            );
        }
    }

    /// The endpoint's drop counters (`add` leaves existing ones alone).
    pub fn add_counters(&self, s: &mut String, iface: &str) {
        let t = self.t();
        for d in Direction::BOTH {
            let _ = writeln!(s, "add counter {t} {}", endpoint_counter(iface, d));
        }
    }

    fn add_endpoint_elements(&self, s: &mut String, ep: &Endpoint) {
        let t = self.t();
        let i = &ep.interface;
        let _ = writeln!(s, "add element {t} {ENDPOINTS_SET} {{ \"{i}\" }}");
        let _ = writeln!(
            s,
            "add element {t} {TO_POD_MAP} {{ \"{i}\" : jump {} }}",
            endpoint_chain(i, Direction::Ingress)
        );
        let _ = writeln!(
            s,
            "add element {t} {FROM_POD_MAP} {{ \"{i}\" : jump {} }}",
            endpoint_chain(i, Direction::Egress)
        );
    }

    /// The commands applying `delta` (the IR is the state after it), in one
    /// batch: sets and elements first, then chains that use them, then the
    /// dispatch maps, then deletions of what nothing refers to any more.
    ///
    /// `before` says, for each endpoint in the kernel, which of its pass
    /// chains exist (see [`pass_chains`]): all a delta needs of the past.
    pub fn delta(&self, ir: &Ir, delta: &Delta, before: &PassChains) -> String {
        let t = self.t();
        let mut s = String::new();
        for id in &delta.sets_added {
            if delta.sets_removed.contains(id) {
                continue; // replaced: handled below
            }
            if let Some(set) = ir.sets.get(id) {
                self.add_set(&mut s, set);
            }
        }
        for (id, ch) in &delta.elements {
            if !ir.sets.contains_key(id) {
                continue;
            }
            self.elements(&mut s, "delete", &id.0, ch.removed.iter());
            self.elements(&mut s, "add", &id.0, ch.added.iter());
        }
        let mut rewrite: Vec<ExpectedChain> = Vec::new();
        for id in &delta.chains_upserted {
            if let Some(c) = ir.chains.get(id) {
                rewrite.push(self.policy_chain(ir, c));
            }
        }
        for iface in &delta.endpoints_upserted {
            if let Some(ep) = ir.endpoints.get(iface) {
                self.add_counters(&mut s, iface);
                rewrite.extend(self.endpoint_chains(ir, ep));
            }
        }
        for c in &rewrite {
            let _ = writeln!(s, "add chain {t} {}", c.name);
        }
        for c in &rewrite {
            let _ = writeln!(s, "flush chain {t} {}", c.name);
            self.write_rules(&mut s, c);
        }
        for iface in &delta.endpoints_upserted {
            if let Some(ep) = ir.endpoints.get(iface) {
                self.add_endpoint_elements(&mut s, ep);
                // A pass chain no longer needed goes.
                for d in Direction::BOTH {
                    let had = before.get(iface).is_some_and(|p| p[dir_index(d)]);
                    if had && !needs_pass_chain(ir, ep.program(d)) {
                        let name = endpoint_pass_chain(iface, d);
                        let _ = writeln!(s, "flush chain {t} {name}");
                        let _ = writeln!(s, "delete chain {t} {name}");
                    }
                }
            }
        }
        for iface in &delta.endpoints_removed {
            let Some(old) = before.get(iface) else {
                continue;
            };
            let _ = writeln!(s, "delete element {t} {ENDPOINTS_SET} {{ \"{iface}\" }}");
            let _ = writeln!(s, "delete element {t} {TO_POD_MAP} {{ \"{iface}\" }}");
            let _ = writeln!(s, "delete element {t} {FROM_POD_MAP} {{ \"{iface}\" }}");
            for d in Direction::BOTH {
                let mut names = vec![endpoint_chain(iface, d)];
                if old[dir_index(d)] {
                    names.push(endpoint_pass_chain(iface, d));
                }
                for name in names {
                    let _ = writeln!(s, "flush chain {t} {name}");
                }
            }
            for d in Direction::BOTH {
                if old[dir_index(d)] {
                    let _ = writeln!(s, "delete chain {t} {}", endpoint_pass_chain(iface, d));
                }
                let _ = writeln!(s, "delete chain {t} {}", endpoint_chain(iface, d));
            }
            for d in Direction::BOTH {
                let _ = writeln!(s, "delete counter {t} {}", endpoint_counter(iface, d));
            }
        }
        for id in &delta.chains_removed {
            if ir.chains.contains_key(id) {
                continue;
            }
            let _ = writeln!(s, "flush chain {t} {id}");
            let _ = writeln!(s, "delete chain {t} {id}");
        }
        for id in &delta.sets_removed {
            let _ = writeln!(s, "delete set {t} {id}");
            if delta.sets_added.contains(id)
                && let Some(set) = ir.sets.get(id)
            {
                self.add_set(&mut s, set);
            }
        }
        s
    }

    /// A policy chain: one nft rule per IR rule.
    pub fn policy_chain(&self, ir: &Ir, c: &PolicyChain) -> ExpectedChain {
        ExpectedChain {
            name: c.id.0.clone(),
            rules: c
                .rules
                .iter()
                .filter_map(|r| self.rule(ir, r, &c.id))
                .collect(),
        }
    }

    /// One IR rule as nft text (no comment). None when a set it needs is
    /// missing (cannot happen for a consistent IR).
    pub fn rule(&self, ir: &Ir, r: &Rule, chain: &ChainId) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        let has_addr = !r.src.is_empty() || !r.dst.is_empty() || r.named_dst_port.is_some();
        if let Some(f) = r.family
            && !has_addr
            && r.icmp.is_none()
        {
            parts.push(format!("meta nfproto {}", nfproto(f)));
        }
        if let Some(p) = r.protocol {
            parts.push(format!("meta l4proto {p}"));
        }
        for (m, side) in r
            .src
            .iter()
            .map(|m| (m, "saddr"))
            .chain(r.dst.iter().map(|m| (m, "daddr")))
        {
            parts.push(addr_match(ir, m, side)?);
        }
        for (ranges, field, neg) in [
            (&r.src_ports, "sport", false),
            (&r.not_src_ports, "sport", true),
            (&r.dst_ports, "dport", false),
            (&r.not_dst_ports, "dport", true),
        ] {
            if !ranges.is_empty() {
                parts.push(format!(
                    "th {field} {}{}",
                    if neg { "!= " } else { "" },
                    port_set(ranges)
                ));
            }
        }
        if let Some(id) = &r.named_dst_port {
            let set = ir.sets.get(id)?;
            parts.push(format!(
                "{} daddr . meta l4proto . th dport @{id}",
                ip_kw(set.family)
            ));
        }
        if let Some((ty, code)) = r.icmp {
            let kw = match r.family {
                Some(IpFamily::V6) => "icmpv6",
                _ => "icmp",
            };
            parts.push(format!("{kw} type {ty}"));
            if let Some(c) = code {
                parts.push(format!("{kw} code {c}"));
            }
        }
        parts.push(match r.action {
            Action::Allow => "accept".into(),
            Action::Deny => "drop".into(),
            Action::Pass => format!(
                "meta mark set meta mark or 0x{:08x} return",
                self.config.pass_mark
            ),
            Action::Log => format!(
                "log prefix \"margay {chain} {} \" level info",
                r.origin.index
            ),
        });
        Some(parts.join(" "))
    }

    /// The endpoint's chains: `e-<if>-i`, `e-<if>-e`, and pass chains when a
    /// GlobalNetworkPolicy before the NetworkPolicies can Pass.
    pub fn endpoint_chains(&self, ir: &Ir, ep: &Endpoint) -> Vec<ExpectedChain> {
        let mut out = Vec::new();
        for d in Direction::BOTH {
            let prog = ep.program(d);
            let mark = self.config.pass_mark;
            let test = format!("meta mark and 0x{mark:08x} == 0x{mark:08x}");
            let clear = format!("meta mark set meta mark and 0x{:08x}", !mark);
            let counted_drop = format!(
                "counter name \"{}\" drop",
                endpoint_counter(&ep.interface, d)
            );
            let verdict = |allow: bool| {
                if allow {
                    "accept".to_string()
                } else {
                    counted_drop.clone()
                }
            };
            let mut rules = Vec::new();
            let pass_chain = endpoint_pass_chain(&ep.interface, d);
            for id in &prog.before {
                rules.push(format!("jump {id}"));
                if chain_has_pass(ir, id) {
                    rules.push(format!("{test} goto {pass_chain}"));
                }
            }
            for id in &prog.kubernetes {
                rules.push(format!("jump {id}"));
            }
            for id in &prog.after {
                rules.push(format!("jump {id}"));
                if chain_has_pass(ir, id) {
                    rules.push(format!(
                        "{test} {clear} {}",
                        verdict(prog.pass_default_allows())
                    ));
                }
            }
            rules.push(verdict(prog.default_allows()));
            out.push(ExpectedChain {
                name: endpoint_chain(&ep.interface, d),
                rules,
            });
            if needs_pass_chain(ir, prog) {
                let mut p = vec![clear.clone()];
                p.extend(prog.kubernetes.iter().map(|id| format!("jump {id}")));
                p.push(verdict(prog.pass_default_allows()));
                out.push(ExpectedChain {
                    name: pass_chain,
                    rules: p,
                });
            }
        }
        out
    }
}

fn chain_has_pass(ir: &Ir, id: &ChainId) -> bool {
    ir.chains.get(id).is_some_and(PolicyChain::has_pass)
}

/// Per endpoint (interface), whether its ingress and egress pass chains
/// exist.
pub type PassChains = std::collections::BTreeMap<String, [bool; 2]>;

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// The pass chains an IR's endpoints have.
pub fn pass_chains(ir: &Ir) -> PassChains {
    ir.endpoints
        .iter()
        .map(|(i, ep)| {
            (
                i.clone(),
                [
                    needs_pass_chain(ir, &ep.ingress),
                    needs_pass_chain(ir, &ep.egress),
                ],
            )
        })
        .collect()
}

/// Whether the program needs a pass chain (a GNP before the NetworkPolicies
/// has a Pass rule).
pub fn needs_pass_chain(ir: &Ir, prog: &EndpointProgram) -> bool {
    prog.before.iter().any(|id| chain_has_pass(ir, id))
}

fn nfproto(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    }
}

fn ip_kw(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

fn addr_match(ir: &Ir, m: &AddrMatch, side: &str) -> Option<String> {
    let set = ir.sets.get(&m.set)?;
    Some(format!(
        "{} {side} {}@{}",
        ip_kw(set.family),
        if m.negated { "!= " } else { "" },
        m.set
    ))
}

fn port_set(ranges: &[(u16, u16)]) -> String {
    let items: Vec<String> = ranges
        .iter()
        .map(|(a, z)| {
            if a == z {
                a.to_string()
            } else {
                format!("{a}-{z}")
            }
        })
        .collect();
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

/// The nft type declaration of a set.
pub fn set_type(f: IpFamily, kind: SetKind) -> String {
    let addr = match f {
        IpFamily::V4 => "ipv4_addr",
        IpFamily::V6 => "ipv6_addr",
    };
    match kind {
        SetKind::Addresses => format!("type {addr};"),
        SetKind::Intervals => format!("type {addr}; flags interval;"),
        SetKind::AddressProtocolPort => format!("type {addr} . inet_proto . inet_service;"),
    }
}

fn ip_text(a: &IpAddr) -> String {
    a.to_string()
}

/// One element as nft text.
pub fn elem_text(e: &SetElem) -> String {
    match e {
        SetElem::Addr(a) => ip_text(a),
        SetElem::Range(a, z) if a == z => ip_text(a),
        SetElem::Range(a, z) => format!("{}-{}", ip_text(a), ip_text(z)),
        SetElem::AddrProtoPort(a, p, port) => format!("{} . {p} . {port}", ip_text(a)),
    }
}
