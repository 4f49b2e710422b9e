//! The CNI commands: what each does, in order, and how a failure is undone.

use std::collections::HashSet;
use std::fs::File;
use std::net::IpAddr;

use margay_api::endpoint::{
    Allocation, Attachment, EndpointInfo, GcReport, PodRef, Request, codes, host_interface_name,
};

use crate::agent::AgentClient;
use crate::config::{NetConf, SUPPORTED_VERSIONS};
use crate::env::{Command, Invocation};
use crate::error::{CniError, INTERFACE_EXISTS, WIRING_MISMATCH};
use crate::netlink::{Netlink, VethSpec};
use crate::result::CniResult;
use crate::wiring::{self, PodAddress, Wired, WiringPlan, host_alias, parse_host_alias};

/// What a successful command prints on stdout (nothing for most).
pub type Output = Option<serde_json::Value>;

/// Runs one command. `stdin` is the request configuration.
pub fn run(inv: &Invocation, stdin: &[u8]) -> Result<Output, CniError> {
    if inv.command == Command::Version {
        return Ok(Some(version(stdin)));
    }
    let conf = crate::config::parse(stdin)?;
    let agent = AgentClient::new(&conf.socket, conf.agent_timeout);
    match inv.command {
        Command::Add => add(inv, &conf, &agent).map(|r| Some(r.render(&conf.cni_version))),
        Command::Del => del(inv, &agent).map(|()| None),
        Command::Check => check(inv, &conf, &agent).map(|()| None),
        Command::Status => status(&agent).map(|()| None),
        Command::Gc => gc(&conf, &agent).map(|()| None),
        Command::Version => Ok(Some(version(stdin))),
    }
}

fn version(stdin: &[u8]) -> serde_json::Value {
    let asked = crate::config::version_of(stdin).unwrap_or_else(|| "1.1.0".to_string());
    serde_json::json!({ "cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS })
}

fn pod_ref(inv: &Invocation) -> Result<PodRef, CniError> {
    match (&inv.k8s.pod_namespace, &inv.k8s.pod_name) {
        (Some(ns), Some(name)) => Ok(PodRef {
            namespace: ns.clone(),
            name: name.clone(),
            uid: inv.k8s.pod_uid.clone(),
        }),
        _ => Err(CniError::invalid_env(
            "CNI_ARGS must carry K8S_POD_NAMESPACE and K8S_POD_NAME (margay wires Kubernetes pods)",
        )),
    }
}

fn attachment(inv: &Invocation) -> Attachment {
    Attachment {
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
    }
}

fn open_netns(inv: &Invocation) -> Result<(File, String), CniError> {
    let path = inv
        .netns
        .as_ref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is not set"))?;
    let file = File::open(path).map_err(|e| {
        CniError::invalid_env(format!(
            "CNI_NETNS={} cannot be opened ({e}): the pod's network namespace is gone",
            path.display()
        ))
    })?;
    Ok((file, path.display().to_string()))
}

// ---------------------------------------------------------------- ADD

fn add(inv: &Invocation, conf: &NetConf, agent: &AgentClient) -> Result<CniResult, CniError> {
    let pod = pod_ref(inv)?;
    let (netns, netns_path) = open_netns(inv)?;
    let host_if = host_interface_name(&pod.namespace, &pod.name);
    let alias = host_alias(&inv.container_id, &inv.ifname);
    let mut host_nl = Netlink::open()?;
    let mut pod_nl = Netlink::open_in(&netns)?;

    // The spec forbids ADD over an existing interface, except that a repeated
    // ADD of the same attachment (a runtime retrying) must converge: that is
    // the case where the host side carries this attachment's alias.
    if let Some(existing) = pod_nl.link_by_name(&inv.ifname)? {
        let ours = host_nl
            .link_by_name(&host_if)?
            .is_some_and(|h| h.alias.as_deref() == Some(alias.as_str()));
        if !ours {
            return Err(CniError::new(
                INTERFACE_EXISTS,
                format!(
                    "interface {} already exists in {netns_path} and was not made by margay for container {}",
                    existing.name, inv.container_id
                ),
            ));
        }
        pod_nl.delete_link(existing.index, &existing.name)?;
    }

    let alloc: Allocation = agent.call_for(&Request::Add {
        attachment: attachment(inv),
        pod: pod.clone(),
        netns: netns_path.clone(),
    })?;
    // From here on every failure undoes the wiring and gives the addresses
    // back, so a failed ADD leaves nothing behind.
    let undo = |err: CniError, host_nl: &mut Netlink| -> CniError {
        remove_host_side(host_nl, &alloc.host_interface, &alias);
        let _ = agent.call(&Request::Del {
            attachment: attachment(inv),
            pod: Some(pod.clone()),
        });
        err
    };
    let plan = match wiring::parse_addresses(&alloc.addresses) {
        Ok(a) => WiringPlan::new(a),
        Err(e) => return Err(undo(e, &mut host_nl)),
    };
    let pod_mac = match wire(
        &mut host_nl,
        &mut pod_nl,
        &netns,
        &alloc,
        &alias,
        &inv.ifname,
        &plan,
    ) {
        Ok(mac) => mac,
        Err(e) => return Err(undo(e, &mut host_nl)),
    };
    if let Err(e) = agent.call(&Request::Ready {
        attachment: attachment(inv),
        pod: pod.clone(),
        host_interface: alloc.host_interface.clone(),
        addresses: plan.addresses.iter().map(PodAddress::to_string).collect(),
        mac: Some(wiring::format_mac(&pod_mac)),
    }) {
        return Err(undo(e, &mut host_nl));
    }
    let ours = plan.result(
        &Wired {
            host_interface: &alloc.host_interface,
            pod_interface: &inv.ifname,
            pod_mac,
            netns: &netns_path,
            mtu: alloc.mtu,
        },
        &conf.cni_version,
        &conf.dns,
    );
    Ok(match &conf.prev_result {
        Some(prev) => prev.clone().merge(ours),
        None => ours,
    })
}

/// Creates the veth pair and configures both ends; returns the pod side's MAC.
fn wire(
    host_nl: &mut Netlink,
    pod_nl: &mut Netlink,
    netns: &File,
    alloc: &Allocation,
    alias: &str,
    ifname: &str,
    plan: &WiringPlan,
) -> Result<[u8; 6], CniError> {
    // A host side left by an earlier sandbox of this pod that was never
    // deleted is in the way of this one; it is stale by definition.
    if let Some(old) = host_nl.link_by_name(&alloc.host_interface)? {
        host_nl.delete_link(old.index, &old.name)?;
    }
    let pod_mac = wiring::random_mac(random_bytes());
    host_nl.create_veth(&VethSpec {
        host_name: &alloc.host_interface,
        host_mac: wiring::HOST_MAC,
        host_alias: alias,
        host_no_auto_link_local: plan.has_v6(),
        pod_name: ifname,
        pod_mac,
        pod_netns: netns,
        mtu: alloc.mtu,
    })?;
    if plan.has_v6() {
        let host = host_nl
            .link_by_name(&alloc.host_interface)?
            .ok_or_else(|| {
                CniError::new(
                    WIRING_MISMATCH,
                    format!(
                        "{} vanished right after it was created",
                        alloc.host_interface
                    ),
                )
            })?;
        let requests = plan
            .host_addresses(host.index)
            .iter()
            .map(|a| a.add_message())
            .collect();
        for r in host_nl.batch(requests)? {
            r?;
        }
    }
    let pod_link = pod_nl.link_by_name(ifname)?.ok_or_else(|| {
        CniError::new(
            WIRING_MISMATCH,
            format!("{ifname} is not in the pod's namespace right after it was created"),
        )
    })?;
    let mut requests = vec![Netlink::up_message(pod_link.index, ifname)];
    requests.extend(
        plan.pod_addresses(pod_link.index)
            .iter()
            .map(|a| a.add_message()),
    );
    requests.extend(
        plan.pod_routes(pod_link.index)
            .iter()
            .map(|r| r.add_message()),
    );
    for r in pod_nl.batch(requests)? {
        r?;
    }
    Ok(pod_mac)
}

/// Deletes the host side (and so its pod-side peer) if it belongs to the
/// attachment `alias`. Best effort: used while undoing and in DEL.
fn remove_host_side(host_nl: &mut Netlink, host_if: &str, alias: &str) -> bool {
    match host_nl.link_by_name(host_if) {
        Ok(Some(link)) if link.alias.as_deref() == Some(alias) => {
            host_nl.delete_link(link.index, &link.name).is_ok()
        }
        _ => false,
    }
}

fn random_bytes() -> [u8; 6] {
    let mut buf = [0u8; 6];
    // SAFETY: getrandom writes at most buf.len() bytes into our buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Never fails for 6 bytes after boot; fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    buf
}

// ---------------------------------------------------------------- DEL

fn del(inv: &Invocation, agent: &AgentClient) -> Result<(), CniError> {
    let alias = host_alias(&inv.container_id, &inv.ifname);
    // The pod side, if the namespace is still there. Deleting one end of a veth
    // deletes the other.
    if let Some(path) = &inv.netns
        && let Ok(netns) = File::open(path)
    {
        let mut pod_nl = Netlink::open_in(&netns)?;
        if let Some(link) = pod_nl.link_by_name(&inv.ifname)?
            && link.kind.as_deref() == Some("veth")
        {
            pod_nl.delete_link(link.index, &link.name)?;
        }
    }
    // The host side, when the namespace is gone but the interface is not
    // (only if it is this attachment's).
    let pod = pod_ref(inv).ok();
    if let Some(pod) = &pod {
        let mut host_nl = Netlink::open()?;
        remove_host_side(
            &mut host_nl,
            &host_interface_name(&pod.namespace, &pod.name),
            &alias,
        );
    }
    // Give the addresses back. An unreachable agent is an error: the runtime
    // retries DEL, and an address released later is better than one leaked.
    agent
        .call(&Request::Del {
            attachment: attachment(inv),
            pod,
        })
        .map(|_| ())
}

// ---------------------------------------------------------------- CHECK

fn check(inv: &Invocation, conf: &NetConf, agent: &AgentClient) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::invalid_config(
            "CHECK needs prevResult (the result of the ADD) in the network configuration",
        )
    })?;
    let pod = pod_ref(inv)?;
    let (netns, netns_path) = open_netns(inv)?;
    let info: EndpointInfo = agent.call_for(&Request::Check {
        attachment: attachment(inv),
        pod: pod.clone(),
    })?;
    let mut problems = Vec::new();

    let mut expected = prev.addresses_on(&inv.ifname, &netns_path);
    let mut held = info.addresses.clone();
    expected.sort();
    held.sort();
    if expected != held {
        problems.push(format!(
            "the ADD result gave the pod {expected:?} but the agent holds {held:?}"
        ));
    }
    let plan = WiringPlan::new(wiring::parse_addresses(&info.addresses)?);

    let alias = host_alias(&inv.container_id, &inv.ifname);
    let mut host_nl = Netlink::open()?;
    let host = host_nl.link_by_name(&info.host_interface)?;
    match &host {
        None => problems.push(format!("host interface {} is missing", info.host_interface)),
        Some(h) => {
            if !h.up {
                problems.push(format!("host interface {} is down", h.name));
            }
            if h.alias.as_deref() != Some(alias.as_str()) {
                problems.push(format!(
                    "host interface {} belongs to another sandbox ({:?})",
                    h.name, h.alias
                ));
            }
        }
    }

    let mut pod_nl = Netlink::open_in(&netns)?;
    match pod_nl.link_by_name(&inv.ifname)? {
        None => problems.push(format!("{} is missing in {netns_path}", inv.ifname)),
        Some(link) => {
            if !link.up {
                problems.push(format!("{} is down", inv.ifname));
            }
            if let Some(h) = &host
                && link.peer_index != Some(h.index)
            {
                problems.push(format!(
                    "{} is not the peer of host interface {}",
                    inv.ifname, h.name
                ));
            }
            let have: HashSet<(IpAddr, u8)> = pod_nl
                .addresses()?
                .into_iter()
                .filter(|a| a.index == link.index)
                .map(|a| (a.address, a.prefix_len))
                .collect();
            for a in &plan.addresses {
                if !have.contains(&(a.ip, a.prefix_len)) {
                    problems.push(format!("address {a} is missing from {}", inv.ifname));
                }
            }
            let mut routes = pod_nl.routes(false)?;
            if plan.has_v6() {
                routes.extend(pod_nl.routes(true)?);
            }
            for want in plan.pod_routes(link.index) {
                let found = routes.iter().any(|r| {
                    r.destination == want.destination
                        && r.prefix_len == want.prefix_len
                        && r.gateway == want.gateway
                        && r.oif == Some(link.index)
                });
                if !found {
                    let via = want
                        .gateway
                        .map(|g| format!(" via {g}"))
                        .unwrap_or_default();
                    problems.push(format!(
                        "route {}/{}{via} dev {} is missing",
                        want.destination, want.prefix_len, inv.ifname
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(CniError::new(
        WIRING_MISMATCH,
        format!(
            "pod {}/{} ({}) is not wired as ADD left it: {}",
            pod.namespace,
            pod.name,
            inv.ifname,
            problems.join("; ")
        ),
    ))
}

// ---------------------------------------------------------------- STATUS, GC

fn status(agent: &AgentClient) -> Result<(), CniError> {
    agent.call(&Request::Status).map(|_| ()).map_err(|e| {
        if e.code == codes::TRY_AGAIN_LATER {
            // STATUS speaks its own codes: "cannot serve ADDs".
            CniError::new(codes::PLUGIN_NOT_AVAILABLE, e.msg).with_details(e.details)
        } else {
            e
        }
    })
}

fn gc(conf: &NetConf, agent: &AgentClient) -> Result<(), CniError> {
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::invalid_config(
            "GC needs \"cni.dev/valid-attachments\" in the network configuration",
        )
    })?;
    let keep: HashSet<(String, String)> = valid
        .iter()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let mut errors = Vec::new();
    // Host sides of attachments that are gone (their namespace was deleted
    // without a DEL, say) are ours to remove: they carry our alias.
    match Netlink::open().and_then(|mut nl| {
        let links = nl.links()?;
        for link in links {
            let stale = link
                .alias
                .as_deref()
                .and_then(parse_host_alias)
                .is_some_and(|(c, i)| !keep.contains(&(c.to_string(), i.to_string())));
            if stale
                && link
                    .name
                    .starts_with(margay_api::endpoint::HOST_INTERFACE_PREFIX)
            {
                nl.delete_link(link.index, &link.name)?;
            }
        }
        Ok(())
    }) {
        Ok(()) => {}
        Err(e) => errors.push(e.to_string()),
    }
    match agent.call_for::<GcReport>(&Request::Gc {
        valid_attachments: valid,
    }) {
        Ok(_) => {}
        Err(e) => errors.push(e.to_string()),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            codes::IO_FAILURE,
            format!("GC left work undone: {}", errors.join("; ")),
        ))
    }
}
