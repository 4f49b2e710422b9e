//! The incremental compiler lands on exactly what a full compile gives, and
//! the delta it returns is exactly the difference, for random sequences of
//! pod, namespace, endpoint and policy changes.

mod common;

use common::*;
use margay_policy::translate::PodSelection;
use margay_policy::{Compiler, Delta, LocalEndpoint, NamedPort, Namespace, Pod, PodKey, PolicyRef};
use proptest::prelude::*;

const NPS: [&str; 4] = [
    "metadata: {name: p0, namespace: x}\nspec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}], ports: [{port: http}]}]}",
    "metadata: {name: p1, namespace: y}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [db]}]}}, {ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]}]}",
    "metadata: {name: p0, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}]}]}",
    "metadata: {name: p2, namespace: z}\nspec: {podSelector: {matchLabels: {app: db}}, egress: [{ports: [{port: http, protocol: TCP}]}]}",
];

const GNPS: [&str; 3] = [
    "metadata: {name: g0}\nspec: {order: 10, selector: \"app == 'db'\", ingress: [{action: Deny, source: {namespaceSelector: \"team == 'red'\"}}, {action: Pass}]}",
    "metadata: {name: g1}\nspec: {selector: all(), types: [Ingress, Egress], egress: [{action: Allow, protocol: TCP, destination: {selector: \"has(app)\", ports: [http, 443]}}]}",
    "metadata: {name: g0}\nspec: {order: 2000, namespaceSelector: \"team in {'blue', 'red'}\", ingress: [{action: Log}, {action: Allow, source: {nets: ['10.0.0.0/8']}}]}",
];

#[derive(Debug, Clone)]
enum Op {
    Pod {
        ns: usize,
        name: usize,
        app: usize,
        ip: u8,
        http: u16,
    },
    RemovePod {
        ns: usize,
        name: usize,
    },
    Namespace {
        ns: usize,
        team: usize,
    },
    Local {
        ns: usize,
        name: usize,
        on: bool,
    },
    Np(usize),
    RemoveNp(usize),
    Gnp(usize),
    RemoveGnp(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..3usize, 0..3usize, 2..8u8, 79..82u16)
            .prop_map(|(ns, name, app, ip, http)| Op::Pod { ns, name, app, ip, http }),
        1 => (0..3usize, 0..3usize).prop_map(|(ns, name)| Op::RemovePod { ns, name }),
        2 => (0..3usize, 0..3usize).prop_map(|(ns, team)| Op::Namespace { ns, team }),
        2 => (0..3usize, 0..3usize, any::<bool>()).prop_map(|(ns, name, on)| Op::Local { ns, name, on }),
        2 => (0..NPS.len()).prop_map(Op::Np),
        1 => (0..NPS.len()).prop_map(Op::RemoveNp),
        2 => (0..GNPS.len()).prop_map(Op::Gnp),
        1 => (0..GNPS.len()).prop_map(Op::RemoveGnp),
    ]
}

fn run(c: &mut Compiler, op: &Op) -> Delta {
    let apps = ["web", "db", ""];
    let teams = ["blue", "red", ""];
    match op {
        Op::Pod {
            ns,
            name,
            app,
            ip,
            http,
        } => {
            let mut p = Pod::new(NAMESPACES[*ns], PODS[*name]);
            if !apps[*app].is_empty() {
                p.labels = labels(&[("app", apps[*app])]);
            }
            // Few addresses on purpose: pods share them during churn.
            p.ips = vec![format!("10.0.{ns}.{ip}").parse().expect("ip")];
            p.named_ports = vec![NamedPort {
                name: "http".into(),
                protocol: 6,
                port: *http,
            }];
            c.upsert_pod(p)
        }
        Op::RemovePod { ns, name } => c.remove_pod(&PodKey::new(NAMESPACES[*ns], PODS[*name])),
        Op::Namespace { ns, team } => {
            let l = if teams[*team].is_empty() {
                labels(&[])
            } else {
                labels(&[("team", teams[*team])])
            };
            c.upsert_namespace(Namespace::new(NAMESPACES[*ns], l))
        }
        Op::Local { ns, name, on } => {
            let key = PodKey::new(NAMESPACES[*ns], PODS[*name]);
            if *on {
                c.upsert_local_endpoint(LocalEndpoint {
                    interface: iface(&key.namespace, &key.name),
                    pod: key,
                })
            } else {
                c.remove_local_endpoint(&key)
            }
        }
        Op::Np(i) => c.upsert_network_policy(&np(NPS[*i])).expect("valid"),
        Op::RemoveNp(i) => {
            let p = np(NPS[*i]);
            c.remove_policy(&PolicyRef::Kubernetes {
                namespace: p.metadata.namespace.unwrap_or_default(),
                name: p.metadata.name.unwrap_or_default(),
            })
        }
        Op::Gnp(i) => c.upsert_global_policy(&gnp(GNPS[*i])).expect("valid"),
        Op::RemoveGnp(i) => c.remove_policy(&PolicyRef::Global {
            name: gnp(GNPS[*i]).metadata.name.unwrap_or_default(),
        }),
    }
}

/// The policy an op changes, if it is a policy op.
fn policy_of(op: &Op) -> Option<PolicyRef> {
    match op {
        Op::Np(i) | Op::RemoveNp(i) => {
            let p = np(NPS[*i]);
            Some(PolicyRef::Kubernetes {
                namespace: p.metadata.namespace.unwrap_or_default(),
                name: p.metadata.name.unwrap_or_default(),
            })
        }
        Op::Gnp(i) | Op::RemoveGnp(i) => Some(PolicyRef::Global {
            name: gnp(GNPS[*i]).metadata.name.unwrap_or_default(),
        }),
        _ => None,
    }
}

/// The compiled endpoints whose pod one of `subjects` selects.
fn endpoints_selected(c: &Compiler, subjects: &[PodSelection]) -> u64 {
    c.ir()
        .endpoints
        .values()
        .filter(|ep| {
            let Some(pod) = c.pod(&ep.pod) else {
                return false;
            };
            let ns_labels = c.namespace(&ep.pod.namespace).map(|n| &n.labels);
            subjects
                .iter()
                .any(|s| s.matches(&ep.pod.namespace, ns_labels, &pod.labels))
        })
        .count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn incremental_equals_full_and_delta_is_exact(ops in proptest::collection::vec(op(), 1..40)) {
        let mut c = Compiler::new();
        for op in &ops {
            let before = c.ir().clone();
            let d = run(&mut c, op);
            prop_assert_eq!(c.ir(), &c.full_ir(), "after {:?}", op);
            prop_assert_eq!(&d, &Delta::between(&before, c.ir()), "delta after {:?}", op);
        }
    }

    /// A policy change recomputes exactly the local endpoints its old or
    /// new version selects, no other (and the IR still equals a full
    /// compile, checked above for the same ops).
    #[test]
    fn policy_change_recomputes_only_the_endpoints_it_selects(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let mut c = Compiler::new();
        for op in &ops {
            let Some(policy) = policy_of(op) else {
                run(&mut c, op);
                continue;
            };
            let old = c.policy(&policy).cloned();
            let mut subjects: Vec<PodSelection> =
                old.iter().map(|t| t.subject.clone()).collect();
            let work = c.endpoint_recomputes();
            let before = c.ir().clone();
            run(&mut c, op);
            subjects.extend(c.policy(&policy).map(|t| t.subject.clone()));
            // Policy changes never add or remove endpoints.
            prop_assert_eq!(before.endpoints.keys().collect::<Vec<_>>(),
                c.ir().endpoints.keys().collect::<Vec<_>>());
            let recomputed = c.endpoint_recomputes() - work;
            if old.as_ref() == c.policy(&policy) {
                // The same policy applied again: nothing to do.
                prop_assert_eq!(recomputed, 0, "after {:?}", op);
            } else {
                prop_assert_eq!(recomputed, endpoints_selected(&c, &subjects), "after {:?}", op);
            }
            prop_assert_eq!(c.ir(), &c.full_ir(), "after {:?}", op);
        }
    }
}

/// Many local endpoints, one policy selecting one of them: the change
/// touches that endpoint alone, and lands where a full compile does.
#[test]
fn new_policy_leaves_unselected_endpoints_untouched() {
    let mut c = Compiler::new();
    c.upsert_namespace(Namespace::new("x", labels(&[])));
    for i in 0..50 {
        let name = format!("p{i}");
        let mut p = Pod::new("x", &name);
        p.labels = labels(&[("app", &format!("a{i}"))]);
        p.ips = vec![format!("10.0.0.{}", i + 1).parse().expect("ip")];
        c.upsert_pod(p);
        c.upsert_local_endpoint(LocalEndpoint {
            pod: PodKey::new("x", &name),
            interface: iface("x", &name),
        });
    }
    let before = c.ir().clone();
    let work = c.endpoint_recomputes();
    let d = c
        .upsert_network_policy(&np(
            "metadata: {name: only-a7, namespace: x}\nspec: {podSelector: {matchLabels: {app: a7}}, ingress: [{from: [{podSelector: {matchLabels: {app: a8}}}]}]}",
        ))
        .expect("valid");
    assert_eq!(c.endpoint_recomputes() - work, 1);
    let touched: Vec<&String> = d.endpoints_upserted.iter().collect();
    assert_eq!(touched, vec![&iface("x", "p7")]);
    assert!(d.endpoints_removed.is_empty());
    for (i, ep) in &c.ir().endpoints {
        if *i != iface("x", "p7") {
            assert_eq!(Some(ep), before.endpoints.get(i), "{i} changed");
        }
    }
    assert_eq!(c.ir(), &c.full_ir());
    // Deleting it touches the same endpoint only, and restores the rest.
    let work = c.endpoint_recomputes();
    let d = c.remove_policy(&PolicyRef::Kubernetes {
        namespace: "x".into(),
        name: "only-a7".into(),
    });
    assert_eq!(c.endpoint_recomputes() - work, 1);
    assert_eq!(d.endpoints_upserted.len(), 1);
    assert_eq!(c.ir(), &before);
}
