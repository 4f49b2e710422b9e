//! Upstream NetworkPolicy semantics, one test per row of the rule book
//! (`shared/notes/networkpolicy-semantics.md`, § numbers below), as truth
//! tables over the x/y/z × a/b/c cluster, evaluated on the IR.

mod common;

use common::*;
use margay_policy::eval::{DecidedBy, Packet, explain};
use margay_policy::{Namespace, PolicyRef};

#[test]
fn no_policy_allows_everything() {
    let c = cluster();
    check_matrix(&c, "tcp", 80, |_, _| true);
    check_matrix(&c, "udp", 81, |_, _| true);
}

// §1, §3: `ingress` absent with no policyTypes = deny all ingress.
#[test]
fn default_deny_ingress_isolates_only_its_namespace_and_direction() {
    let mut c = cluster();
    apply(
        &mut c,
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}}",
    );
    check_matrix(&c, "tcp", 80, |_, to| ns_of(to) != "x");
    // Egress from x is untouched (§1: directions independent).
    let e = explain_pair(&c, "tcp", "x/a", "y/a", 80);
    assert!(e.allowed());
    let v = &e.ingress.as_ref().expect("x/a is local").1;
    assert_eq!(v.decided_by, DecidedBy::NoPolicy);
    let d = explain_pair(&c, "tcp", "y/a", "x/b", 80);
    assert_eq!(
        d.ingress.expect("local").1.decided_by,
        DecidedBy::EndOfPolicies
    );
}

// §2: policyTypes [Egress] with no egress rules = deny all egress only.
#[test]
fn default_deny_egress() {
    let mut c = cluster();
    apply(
        &mut c,
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}, policyTypes: [Egress]}",
    );
    check_matrix(&c, "tcp", 80, |from, _| ns_of(from) != "x");
}

// §2: egress rules without policyTypes ⇒ [Ingress, Egress].
#[test]
fn egress_rules_without_policy_types_also_isolate_ingress() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: eg, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress: [{to: [{podSelector: {matchLabels: {pod: b}}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| {
        if to == "x/a" {
            return false; // ingress-isolated with no ingress rules
        }
        if from == "x/a" {
            return to == "x/b";
        }
        true
    });
}

// §2: `egress: []` without policyTypes ⇒ [Ingress] only.
#[test]
fn empty_egress_without_policy_types_is_ingress_only() {
    let mut c = cluster();
    apply(
        &mut c,
        "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, egress: []}",
    );
    check_matrix(&c, "tcp", 80, |_, to| ns_of(to) != "x");
}

// §1: additive; an allow-all cannot be overridden.
#[test]
fn allow_all_is_additive_over_deny_all() {
    let mut c = cluster();
    apply(
        &mut c,
        "metadata: {name: deny, namespace: x}\nspec: {podSelector: {}}",
    );
    apply(
        &mut c,
        "metadata: {name: allow, namespace: x}\nspec: {podSelector: {}, ingress: [{}]}",
    );
    check_matrix(&c, "tcp", 80, |_, _| true);
    check_matrix(&c, "udp", 81, |_, _| true);
    let e = explain_pair(&c, "tcp", "y/a", "x/a", 80);
    match &e.ingress.expect("local").1.decided_by {
        DecidedBy::Rule { origin, .. } => assert_eq!(
            origin.policy,
            PolicyRef::Kubernetes {
                namespace: "x".into(),
                name: "allow".into()
            }
        ),
        other => panic!("decided by {other:?}"),
    }
}

// §4: podSelector alone = the policy's own namespace.
#[test]
fn pod_selector_peer_is_own_namespace_only() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| to != "x/a" || from == "x/b");
}

// §4: namespaceSelector {} = every pod of every namespace, but no non-pod IP.
#[test]
fn empty_namespace_selector_is_every_pod_but_no_external_address() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |_, _| true);
    let ext = Packet::tcp("192.168.7.7".parse().unwrap(), pod_ip("x", "a"), 80);
    assert!(!explain(c.ir(), &ext).allowed());
    // Absent namespaceSelector with empty podSelector: own namespace only.
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| {
        ns_of(to) != "x" || ns_of(from) == "x"
    });
}

// §4: both in one peer = AND; in two peers = OR.
#[test]
fn namespace_and_pod_selector_and_versus_or() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: b}}
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| to != "x/a" || from == "y/b");
    apply(
        &mut c,
        r#"
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    - podSelector: {matchLabels: {pod: b}}
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| {
        to != "x/a" || ns_of(from) == "y" || from == "x/b"
    });
}

// §5: NotIn matches an absent key; DoesNotExist; In.
#[test]
fn match_expressions_follow_upstream_operators() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [y]}]}
      podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [web]}, {key: missing, operator: DoesNotExist}]}
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| {
        !(to == "x/a" || to == "x/b") || ns_of(from) != "y"
    });
}

// §6: protocol defaults to TCP; UDP/SCTP entries never open TCP; a
// protocol with no port matches all its ports.
#[test]
fn protocols_and_ports() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: 80}]
  - ports: [{protocol: UDP}]
  - ports: [{protocol: SCTP, port: 81}]
"#,
    );
    let to_x = |to: &str| ns_of(to) == "x";
    check_matrix(&c, "tcp", 80, |_, _| true);
    check_matrix(&c, "tcp", 81, |_, to| !to_x(to));
    check_matrix(&c, "udp", 81, |_, _| true);
    check_matrix(&c, "udp", 5353, |_, _| true);
    check_matrix(&c, "sctp", 81, |_, _| true);
    check_matrix(&c, "sctp", 80, |_, to| !to_x(to));
}

// §6: a policy whose only rule is for SCTP still isolates for TCP.
#[test]
fn sctp_only_rule_isolates_tcp() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: y}
spec:
  podSelector: {matchLabels: {pod: c}}
  ingress: [{ports: [{protocol: SCTP, port: 80}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |_, to| to != "y/c");
    check_matrix(&c, "udp", 80, |_, to| to != "y/c");
    check_matrix(&c, "sctp", 80, |_, _| true);
}

// §7: named ports resolve on the destination pod, by name and protocol.
#[test]
fn named_ports_resolve_per_destination_pod_and_protocol() {
    let mut c = cluster();
    // x/b maps "web" to 81, x/a to 80.
    for (pod, port) in [("a", 80), ("b", 81)] {
        let mut p = make_pod("x", pod);
        p.named_ports.push(margay_policy::NamedPort {
            name: "web".into(),
            protocol: 6,
            port,
        });
        c.upsert_pod(p);
    }
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress: [{ports: [{port: web}, {port: serve-81-udp, protocol: UDP}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |_, to| ns_of(to) != "x" || to == "x/a");
    check_matrix(&c, "tcp", 81, |_, to| ns_of(to) != "x" || to == "x/b");
    check_matrix(&c, "udp", 81, |_, _| true);
    // Named TCP port never opens UDP on the same number.
    check_matrix(&c, "udp", 80, |_, to| ns_of(to) != "x");
}

// §7: egress named ports resolve on each destination pod; never on ipBlock.
#[test]
fn egress_named_port_resolves_on_peer_pods() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: serve-81-tcp}]
  - to: [{ipBlock: {cidr: 10.0.0.0/8}}]
    ports: [{port: serve-80-tcp}]
"#,
    );
    check_matrix(&c, "tcp", 81, |from, to| from != "x/a" || ns_of(to) == "y");
    check_matrix(&c, "tcp", 80, |from, _| from != "x/a");
}

// §8: endPort is inclusive.
#[test]
fn end_port_range_is_inclusive() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: z}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80, endPort: 81}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |_, _| true);
    check_matrix(&c, "tcp", 81, |_, _| true);
    check_matrix(&c, "tcp", 82, |_, to| ns_of(to) != "z");
    check_matrix(&c, "tcp", 79, |_, to| ns_of(to) != "z");
}

// §9: ipBlock matches pod IPs too; except narrows only its own peer.
#[test]
fn ip_block_matches_pod_ips_and_except_is_not_a_deny() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24, 10.0.2.3/32]}}]
"#,
    );
    // y = 10.0.1.x excluded; z/b = 10.0.2.3 excluded.
    check_matrix(&c, "tcp", 80, |from, to| {
        from != "x/a" || (ns_of(to) != "y" && to != "z/b")
    });
    // Another rule allowing y/b wins over the except.
    apply(
        &mut c,
        r#"
metadata: {name: q, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.1.3/32}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| {
        from != "x/a" || (ns_of(to) != "y" && to != "z/b") || to == "y/b"
    });
}

// §9: families never cross.
#[test]
fn ip_block_of_one_family_never_matches_the_other() {
    let mut c = cluster();
    let mut p = make_pod("y", "a");
    p.ips.push("fd00::1:2".parse().unwrap());
    c.upsert_pod(p);
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: y}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{ipBlock: {cidr: "::/0"}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |_, to| to != "y/a");
    let v6 = Packet::tcp("fd00::9".parse().unwrap(), "fd00::1:2".parse().unwrap(), 80);
    assert!(explain(c.ir(), &v6).allowed());
}

// §1: both ends must allow.
#[test]
fn egress_of_source_and_ingress_of_destination_both_apply() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: out, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
"#,
    );
    apply(
        &mut c,
        r#"
metadata: {name: in, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: c}}, namespaceSelector: {}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| {
        let egress_ok = from != "x/a" || ns_of(to) == "y";
        let ingress_ok = ns_of(to) != "y" || pod_of(from) == "c";
        egress_ok && ingress_ok
    });
}

// §4, §15: label changes of pods and namespaces, policy update and delete.
#[test]
fn label_changes_and_policy_lifecycle_are_reflected() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |_, _| true); // nobody has role=db
    let mut xa = make_pod("x", "a");
    xa.labels.insert("role".into(), "db".into());
    let d = c.upsert_pod(xa);
    assert!(d.elements_only() || !d.endpoints_upserted.is_empty());
    check_matrix(&c, "tcp", 80, |_, to| to != "x/a");
    let d = c.upsert_namespace(Namespace::new(
        "z",
        labels(&[("ns", "z"), ("team", "blue")]),
    ));
    assert!(
        d.elements_only(),
        "a namespace label change only changes set elements: {d:?}"
    );
    assert!(!d.elements.is_empty());
    check_matrix(&c, "tcp", 80, |from, to| to != "x/a" || ns_of(from) == "z");
    // Update replaces: the old rule stops allowing.
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: x}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| to != "x/a" || ns_of(from) == "y");
    // Pod removed and re-added elsewhere; deleting the policy restores all.
    c.remove_pod(&margay_policy::PodKey::new("y", "b"));
    c.upsert_pod(make_pod("y", "b"));
    check_matrix(&c, "tcp", 80, |from, to| to != "x/a" || ns_of(from) == "y");
    let d = c.remove_policy(&PolicyRef::Kubernetes {
        namespace: "x".into(),
        name: "p".into(),
    });
    assert!(!d.chains_removed.is_empty() && !d.sets_removed.is_empty());
    check_matrix(&c, "tcp", 80, |_, _| true);
    assert!(c.ir().sets.is_empty() && c.ir().chains.is_empty());
}

// §3: invalid peers and ports are refused with field-naming errors.
#[test]
fn invalid_policies_are_refused_with_the_field() {
    let mut c = cluster();
    for (yaml, field) in [
        (
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{}]}]}",
            "spec.ingress[0].from[0]",
        ),
        (
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}",
            "spec.ingress[0].from[0]",
        ),
        (
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/8]}}]}]}",
            "spec.ingress[0].from[0].ipBlock.except[0]",
        ),
        (
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, egress: [{ports: [{port: 90, endPort: 80}]}]}",
            "spec.egress[0].ports[0].endPort",
        ),
        (
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, egress: [{ports: [{port: web, endPort: 80}]}]}",
            "spec.egress[0].ports[0].endPort",
        ),
        (
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {}, egress: [{ports: [{protocol: ICMP}]}]}",
            "spec.egress[0].ports[0].protocol",
        ),
        (
            "metadata: {name: p, namespace: x}\nspec: {podSelector: {matchExpressions: [{key: a, operator: In}]}}",
            "spec.podSelector.matchExpressions[0].values",
        ),
    ] {
        let before = c.ir().clone();
        let err = c.upsert_network_policy(&np(yaml)).expect_err(yaml);
        assert!(
            err.errors.iter().any(|e| e.field == field),
            "{yaml}: expected an error on {field}, got {err}"
        );
        assert_eq!(c.ir(), &before, "a refused policy changed the IR");
    }
}
