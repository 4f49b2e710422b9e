//! Applying the IR to the kernel: full loads, deltas, and reconcile (read
//! back what the kernel holds and fix only what differs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use margay_api::net::{Cidr, IpFamily, ip_to_u128, u128_to_ip};
use serde_json::Value;

use crate::ir::{Delta, Direction, Ir, SetElem, SetKind};
use crate::nft::libnft::{Nft, NftError};
use crate::nft::render::{
    ENDPOINTS_SET, ExpectedChain, FROM_POD_MAP, PassChains, Renderer, TO_POD_MAP, endpoint_chain,
    endpoint_counter, pass_chains, set_type,
};

/// What a reconcile found and fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// The table was missing or its skeleton (base chains, fixed sets and
    /// maps, a set's type) was wrong: the whole table was replaced.
    pub full_reload: bool,
    pub sets_created: usize,
    pub sets_deleted: usize,
    pub elements_added: usize,
    pub elements_removed: usize,
    pub chains_rewritten: usize,
    pub chains_deleted: usize,
    pub map_elements_fixed: usize,
    /// Endpoint drop counters created or deleted.
    pub counters_fixed: usize,
}

impl ReconcileReport {
    pub fn changed_anything(&self) -> bool {
        self != &ReconcileReport::default()
    }
}

/// Counters of what the dataplane sent (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataplaneStats {
    /// Element-only deltas sent as raw netlink batches.
    pub netlink_batches: u64,
    /// Batches sent through libnftables (full loads, deltas, repairs).
    pub nft_batches: u64,
    /// Deltas the kernel refused, repaired by a reconcile.
    pub fallbacks: u64,
    /// Reconciles run (including fallbacks).
    pub reconciles: u64,
    /// Total time spent in kernel transactions.
    pub busy: std::time::Duration,
}

/// Packets and bytes an endpoint's chains dropped, per direction (the
/// named counters `d-<if>-i|e`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointDrops {
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
    pub egress_packets: u64,
    pub egress_bytes: u64,
}

/// The `inet margay` table of one node (or namespace).
pub struct NftDataplane {
    nft: Nft,
    renderer: Renderer,
    stats: DataplaneStats,
    /// What a delta needs to know of the state the kernel was last brought
    /// to (not a copy of that IR: cloning a 10 000-rule IR per update would
    /// cost more than the update).
    applied: PassChains,
}

impl NftDataplane {
    pub fn new(nft: Nft, renderer: Renderer) -> NftDataplane {
        NftDataplane {
            nft,
            renderer,
            applied: PassChains::new(),
            stats: DataplaneStats::default(),
        }
    }

    pub fn stats(&self) -> DataplaneStats {
        self.stats
    }

    fn run(&mut self, cmds: &str) -> Result<String, NftError> {
        let t = std::time::Instant::now();
        let r = self.nft.run(cmds);
        self.stats.nft_batches += 1;
        self.stats.busy += t.elapsed();
        r
    }

    pub fn nft(&self) -> &Nft {
        &self.nft
    }

    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// Replace the table with the IR, atomically.
    pub fn apply_full(&mut self, ir: &Ir) -> Result<(), NftError> {
        let cmds = self.renderer.full(ir);
        self.run(&cmds)?;
        self.applied = pass_chains(ir);
        Ok(())
    }

    /// Apply a delta (the IR is the state after it) in one transaction. If
    /// the kernel refuses it (someone changed the table under us), fall back
    /// to a reconcile, which repairs whatever differs.
    pub fn apply_delta(&mut self, ir: &Ir, delta: &Delta) -> Result<(), NftError> {
        if delta.is_empty() {
            return Ok(());
        }
        if let Some(ops) = hash_element_ops(ir, delta) {
            let t = std::time::Instant::now();
            let r = self.nft.apply_elements(&self.renderer.config.table, ops);
            self.stats.netlink_batches += 1;
            self.stats.busy += t.elapsed();
            return match r {
                Ok(()) => Ok(()),
                Err(NftError::Command { .. }) => {
                    self.stats.fallbacks += 1;
                    self.reconcile(ir).map(|_| ())
                }
                Err(e) => Err(e),
            };
        }
        let cmds = self.renderer.delta(ir, delta, &self.applied);
        match self.run(&cmds) {
            Ok(_) => {
                self.applied = pass_chains(ir);
                Ok(())
            }
            Err(NftError::Command { .. }) => {
                self.stats.fallbacks += 1;
                self.reconcile(ir).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Read the table back and fix what differs from `ir`.
    pub fn reconcile(&mut self, ir: &Ir) -> Result<ReconcileReport, NftError> {
        self.stats.reconciles += 1;
        let mut report = ReconcileReport::default();
        let kernel = match self.read_table() {
            Ok(Some(k)) => k,
            Ok(None) => {
                report.full_reload = true;
                self.apply_full(ir)?;
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        let Some(cmds) = self.repair(ir, &kernel, &mut report) else {
            report = ReconcileReport {
                full_reload: true,
                ..ReconcileReport::default()
            };
            self.apply_full(ir)?;
            return Ok(report);
        };
        if !cmds.is_empty() {
            self.run(&cmds)?;
        }
        self.applied = pass_chains(ir);
        Ok(report)
    }

    /// The table as the kernel holds it; None when there is no table.
    pub fn read_table(&self) -> Result<Option<KernelTable>, NftError> {
        let cmd = format!("list table inet {}", self.renderer.config.table);
        let out = match self.nft.run_json(&cmd) {
            Ok(o) => o,
            Err(NftError::Command { message }) if message.contains("No such file") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let v: Value = serde_json::from_str(&out).map_err(|e| NftError::Command {
            message: format!("unreadable JSON listing: {e}"),
        })?;
        Ok(Some(KernelTable::from_json(&v)))
    }

    /// The drop counters of every endpoint in the kernel, by interface: one
    /// `list counters` (no rules or sets are read, so it stays cheap in a
    /// large table).
    pub fn drop_counters(&self) -> Result<BTreeMap<String, EndpointDrops>, NftError> {
        let cmd = format!("list counters table inet {}", self.renderer.config.table);
        let out = self.nft.run_json(&cmd)?;
        let v: Value = serde_json::from_str(&out).map_err(|e| NftError::Command {
            message: format!("unreadable JSON listing: {e}"),
        })?;
        let mut drops: BTreeMap<String, EndpointDrops> = BTreeMap::new();
        for (name, (packets, bytes)) in KernelTable::from_json(&v).counters {
            let Some(rest) = name.strip_prefix("d-") else {
                continue;
            };
            let (iface, ingress) = if let Some(i) = rest.strip_suffix("-i") {
                (i, true)
            } else if let Some(i) = rest.strip_suffix("-e") {
                (i, false)
            } else {
                continue;
            };
            let e = drops.entry(iface.to_string()).or_default();
            if ingress {
                e.ingress_packets = packets;
                e.ingress_bytes = bytes;
            } else {
                e.egress_packets = packets;
                e.egress_bytes = bytes;
            }
        }
        Ok(drops)
    }

    /// Commands bringing `k` to `ir`; None when the skeleton is wrong and
    /// only a full replacement will do.
    fn repair(&self, ir: &Ir, k: &KernelTable, rep: &mut ReconcileReport) -> Option<String> {
        let r = &self.renderer;
        let t = format!("inet {}", r.config.table);
        // Skeleton: base chains with their hooks, fixed set and maps.
        for (c, hdr) in r.base_chains() {
            let kc = k.chains.get(&c.name)?;
            if kc.header.as_deref() != Some(base_header_key(&hdr).as_str()) {
                return None;
            }
        }
        if k.sets.get(ENDPOINTS_SET).map(|s| s.type_key.as_str()) != Some("ifname") {
            return None;
        }
        for m in [FROM_POD_MAP, TO_POD_MAP] {
            if !k.maps.contains_key(m) {
                return None;
            }
        }
        for (id, set) in &ir.sets {
            if let Some(ks) = k.sets.get(&id.0)
                && ks.type_key != type_key(set.family, set.kind)
            {
                return None;
            }
        }
        let mut s = String::new();
        // Sets and elements.
        for (id, set) in &ir.sets {
            match k.sets.get(&id.0) {
                None => {
                    r.add_set(&mut s, set);
                    rep.sets_created += 1;
                }
                Some(ks) => {
                    let have = ks.elements(set.kind);
                    let missing: Vec<&SetElem> = set.elements.difference(&have).collect();
                    let extra: Vec<&SetElem> = have.difference(&set.elements).collect();
                    rep.elements_added += missing.len();
                    rep.elements_removed += extra.len();
                    for e in extra {
                        let _ = writeln!(
                            s,
                            "delete element {t} {id} {{ {} }}",
                            crate::nft::render::elem_text(e)
                        );
                    }
                    for e in missing {
                        let _ = writeln!(
                            s,
                            "add element {t} {id} {{ {} }}",
                            crate::nft::render::elem_text(e)
                        );
                    }
                }
            }
        }
        let want_ifaces: BTreeSet<String> = ir.endpoints.keys().cloned().collect();
        let have_ifaces: BTreeSet<String> = k
            .sets
            .get(ENDPOINTS_SET)
            .map(|ks| ks.raw.clone())
            .unwrap_or_default();
        for i in want_ifaces.difference(&have_ifaces) {
            let _ = writeln!(s, "add element {t} {ENDPOINTS_SET} {{ \"{i}\" }}");
            rep.map_elements_fixed += 1;
        }
        // Drop counters before the chains that name them.
        let want_counters: BTreeSet<String> = ir
            .endpoints
            .keys()
            .flat_map(|i| Direction::BOTH.map(|d| endpoint_counter(i, d)))
            .collect();
        for c in &want_counters {
            if !k.counters.contains_key(c) {
                let _ = writeln!(s, "add counter {t} {c}");
                rep.counters_fixed += 1;
            }
        }
        // Chains: rewrite those whose rule hashes differ.
        let mut expected: Vec<ExpectedChain> = r.chains(ir);
        let base: Vec<ExpectedChain> = r.base_chains().into_iter().map(|(c, _)| c).collect();
        let expected_names: BTreeSet<String> = expected
            .iter()
            .chain(&base)
            .map(|c| c.name.clone())
            .collect();
        let mut rewrite = Vec::new();
        for c in expected.drain(..).chain(base) {
            match k.chains.get(&c.name) {
                Some(kc) if kc.comments == c.hashes() => {}
                Some(_) => rewrite.push((c, true)),
                None => rewrite.push((c, false)),
            }
        }
        for (c, _) in &rewrite {
            let _ = writeln!(s, "add chain {t} {}", c.name);
        }
        for (c, exists) in &rewrite {
            if *exists {
                let _ = writeln!(s, "flush chain {t} {}", c.name);
            }
            for rule in &c.rules {
                let _ = writeln!(
                    s,
                    "add rule {t} {} {rule} comment \"{}\"",
                    c.name,
                    crate::nft::render::rule_hash(rule)
                );
            }
            rep.chains_rewritten += 1;
        }
        // Dispatch maps.
        for (map, d) in [
            (TO_POD_MAP, Direction::Ingress),
            (FROM_POD_MAP, Direction::Egress),
        ] {
            let want: BTreeMap<String, String> = ir
                .endpoints
                .keys()
                .map(|i| (i.clone(), format!("jump {}", endpoint_chain(i, d))))
                .collect();
            let have = k.maps.get(map).cloned().unwrap_or_default();
            for (key, v) in &have {
                if want.get(key) != Some(v) {
                    let _ = writeln!(s, "delete element {t} {map} {{ \"{key}\" }}");
                    rep.map_elements_fixed += 1;
                }
            }
            for (key, v) in &want {
                if have.get(key) != Some(v) {
                    let _ = writeln!(s, "add element {t} {map} {{ \"{key}\" : {v} }}");
                    rep.map_elements_fixed += 1;
                }
            }
        }
        for i in have_ifaces.difference(&want_ifaces) {
            let _ = writeln!(s, "delete element {t} {ENDPOINTS_SET} {{ \"{i}\" }}");
            rep.map_elements_fixed += 1;
        }
        // What is ours by name but not wanted goes last.
        let extra_chains: Vec<&String> = k
            .chains
            .keys()
            .filter(|n| !expected_names.contains(*n))
            .collect();
        for c in &extra_chains {
            let _ = writeln!(s, "flush chain {t} {c}");
        }
        for c in &extra_chains {
            let _ = writeln!(s, "delete chain {t} {c}");
            rep.chains_deleted += 1;
        }
        for name in k.sets.keys() {
            if name != ENDPOINTS_SET && !ir.sets.keys().any(|id| &id.0 == name) {
                let _ = writeln!(s, "delete set {t} {name}");
                rep.sets_deleted += 1;
            }
        }
        for name in k.maps.keys() {
            if name != FROM_POD_MAP && name != TO_POD_MAP {
                let _ = writeln!(s, "delete map {t} {name}");
                rep.sets_deleted += 1;
            }
        }
        // After the chains that could name them.
        for name in k.counters.keys() {
            if !want_counters.contains(name) {
                let _ = writeln!(s, "delete counter {t} {name}");
                rep.counters_fixed += 1;
            }
        }
        Some(s)
    }
}

/// The delta as raw netlink element operations, when it only changes
/// elements of hash sets (the pod-churn case); None otherwise.
fn hash_element_ops(ir: &Ir, delta: &Delta) -> Option<Vec<crate::nft::netlink::ElementOp>> {
    if !delta.elements_only() {
        return None;
    }
    let mut ops = Vec::new();
    for (id, ch) in &delta.elements {
        let set = ir.sets.get(id)?;
        if set.kind == SetKind::Intervals {
            return None;
        }
        for (add, elems) in [(false, &ch.removed), (true, &ch.added)] {
            if !elems.is_empty() {
                ops.push(crate::nft::netlink::ElementOp {
                    set: id.0.clone(),
                    add,
                    elements: elems.iter().copied().collect(),
                });
            }
        }
    }
    Some(ops)
}

/// `type filter hook forward priority 10; policy accept;` → comparable key.
fn base_header_key(hdr: &str) -> String {
    let words: Vec<&str> = hdr
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    // type T hook H priority P policy X
    let get = |k: &str| {
        words
            .iter()
            .position(|w| *w == k)
            .and_then(|i| words.get(i + 1))
            .copied()
            .unwrap_or("")
    };
    format!(
        "{}/{}/{}/{}",
        get("type"),
        get("hook"),
        get("priority"),
        get("policy")
    )
}

fn type_key(f: IpFamily, kind: SetKind) -> String {
    // The same words the JSON listing gives, joined.
    let decl = set_type(f, kind);
    let ty = decl
        .trim_start_matches("type ")
        .split(';')
        .next()
        .unwrap_or("")
        .replace(' ', "");
    let interval = if kind == SetKind::Intervals {
        "+interval"
    } else {
        ""
    };
    format!("{ty}{interval}")
}

/// A chain as listed.
#[derive(Debug, Clone, Default)]
pub struct KernelChain {
    /// `type/hook/prio/policy` for base chains.
    pub header: Option<String>,
    /// The rules' comments, in order (empty string for a rule without one).
    pub comments: Vec<String>,
}

/// A set as listed.
#[derive(Debug, Clone, Default)]
pub struct KernelSet {
    /// e.g. `ipv4_addr`, `ipv4_addr.inet_proto.inet_service`, `+interval`.
    pub type_key: String,
    /// Elements as text (ifname sets) or parsed (address sets).
    pub raw: BTreeSet<String>,
    pub parsed: BTreeSet<SetElem>,
}

impl KernelSet {
    /// Elements normalised like the IR holds them for a set of `kind`.
    pub fn elements(&self, kind: SetKind) -> BTreeSet<SetElem> {
        self.parsed
            .iter()
            .map(|e| match (kind, e) {
                (SetKind::Intervals, SetElem::Addr(a)) => SetElem::Range(*a, *a),
                (_, e) => *e,
            })
            .collect()
    }
}

/// The parts of the table reconcile compares.
#[derive(Debug, Clone, Default)]
pub struct KernelTable {
    pub chains: BTreeMap<String, KernelChain>,
    pub sets: BTreeMap<String, KernelSet>,
    /// Verdict maps: key → `jump chain` / `goto chain` / `accept` / `drop`.
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Named counters: (packets, bytes).
    pub counters: BTreeMap<String, (u64, u64)>,
}

impl KernelTable {
    pub fn from_json(v: &Value) -> KernelTable {
        let mut k = KernelTable::default();
        let Some(items) = v.get("nftables").and_then(Value::as_array) else {
            return k;
        };
        for item in items {
            if let Some(c) = item.get("chain") {
                let name = str_of(c, "name");
                let header = c.get("hook").map(|_| {
                    format!(
                        "{}/{}/{}/{}",
                        str_of(c, "type"),
                        str_of(c, "hook"),
                        c.get("prio").map(Value::to_string).unwrap_or_default(),
                        str_of(c, "policy")
                    )
                });
                k.chains.entry(name).or_default().header = header;
            } else if let Some(r) = item.get("rule") {
                k.chains
                    .entry(str_of(r, "chain"))
                    .or_default()
                    .comments
                    .push(str_of(r, "comment"));
            } else if let Some(s) = item.get("set") {
                let mut ks = KernelSet {
                    type_key: type_of(s),
                    ..KernelSet::default()
                };
                for e in s
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let e = unwrap_elem(e);
                    if let Some(txt) = e.as_str() {
                        ks.raw.insert(txt.to_string());
                    }
                    if let Some(p) = parse_elem(e) {
                        ks.parsed.insert(p);
                    }
                }
                k.sets.insert(str_of(s, "name"), ks);
            } else if let Some(m) = item.get("map") {
                let mut elems = BTreeMap::new();
                for e in m
                    .get("elem")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(pair) = e.as_array() else { continue };
                    let (Some(key), Some(val)) = (pair.first(), pair.get(1)) else {
                        continue;
                    };
                    let key = unwrap_elem(key).as_str().unwrap_or_default().to_string();
                    elems.insert(key, verdict_text(val));
                }
                k.maps.insert(str_of(m, "name"), elems);
            } else if let Some(c) = item.get("counter").filter(|c| c.is_object()) {
                let n = |f: &str| c.get(f).and_then(Value::as_u64).unwrap_or(0);
                k.counters
                    .insert(str_of(c, "name"), (n("packets"), n("bytes")));
            }
        }
        k
    }
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn type_of(s: &Value) -> String {
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("."),
        _ => String::new(),
    };
    let interval = s
        .get("flags")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == "interval"));
    if interval {
        format!("{ty}+interval")
    } else {
        ty
    }
}

fn unwrap_elem(e: &Value) -> &Value {
    e.get("elem").and_then(|x| x.get("val")).unwrap_or(e)
}

fn verdict_text(v: &Value) -> String {
    for kw in ["jump", "goto"] {
        if let Some(t) = v
            .get(kw)
            .and_then(|x| x.get("target"))
            .and_then(Value::as_str)
        {
            return format!("{kw} {t}");
        }
    }
    for kw in ["accept", "drop", "return"] {
        if v.get(kw).is_some() {
            return kw.to_string();
        }
    }
    v.to_string()
}

fn parse_elem(e: &Value) -> Option<SetElem> {
    if let Some(s) = e.as_str() {
        return s.parse::<IpAddr>().ok().map(SetElem::Addr);
    }
    if let Some(p) = e.get("prefix") {
        let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
        let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
        let c = Cidr::new_truncating(addr, len)?;
        let first = ip_to_u128(c.addr());
        let host = u32::from(c.host_bits());
        let last = if host == 128 {
            u128::MAX
        } else {
            first + ((1u128 << host) - 1)
        };
        return Some(SetElem::Range(c.addr(), u128_to_ip(c.family(), last)));
    }
    if let Some(r) = e.get("range").and_then(Value::as_array) {
        let a: IpAddr = r.first()?.as_str()?.parse().ok()?;
        let z: IpAddr = r.get(1)?.as_str()?.parse().ok()?;
        return Some(SetElem::Range(a, z));
    }
    if let Some(c) = e.get("concat").and_then(Value::as_array) {
        let a: IpAddr = c.first()?.as_str()?.parse().ok()?;
        let proto = match c.get(1)? {
            Value::Number(n) => u8::try_from(n.as_u64()?).ok()?,
            Value::String(s) => match s.as_str() {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                other => other.parse().ok()?,
            },
            _ => return None,
        };
        let port = u16::try_from(c.get(2)?.as_u64()?).ok()?;
        return Some(SetElem::AddrProtoPort(a, proto, port));
    }
    None
}
