//! GlobalNetworkPolicy ordering against NetworkPolicies (ADR 0003), as
//! truth tables on the IR.

mod common;

use common::*;
use margay_policy::eval::DecidedBy;
use margay_policy::ir::Action;

const DENY_FROM_Y_BEFORE: &str = r#"
metadata: {name: deny-y}
spec:
  order: 100
  namespaceSelector: "ns == 'x'"
  ingress:
  - action: Deny
    source: {namespaceSelector: "ns == 'y'"}
  - action: Pass
"#;

// A Deny before the NetworkPolicies beats their allow; a final Pass hands
// everything else to them.
#[test]
fn deny_before_kubernetes_policies_wins_and_pass_defers() {
    let mut c = cluster();
    apply(
        &mut c,
        "metadata: {name: allow-all, namespace: x}\nspec: {podSelector: {}, ingress: [{}]}",
    );
    apply_global(&mut c, DENY_FROM_Y_BEFORE);
    check_matrix(&c, "tcp", 80, |from, to| {
        !(ns_of(to) == "x" && ns_of(from) == "y")
    });
    let e = explain_pair(&c, "tcp", "y/a", "x/a", 80);
    match &e.ingress.expect("local").1.decided_by {
        DecidedBy::Rule { origin, action } => {
            assert_eq!(*action, Action::Deny);
            assert_eq!(origin.index, 0);
        }
        other => panic!("{other:?}"),
    }
    // Passed traffic gets the NetworkPolicies' verdict: here allow-all.
    let e = explain_pair(&c, "tcp", "z/a", "x/a", 80);
    match &e.ingress.expect("local").1.decided_by {
        DecidedBy::Rule { action, .. } => assert_eq!(*action, Action::Allow),
        other => panic!("{other:?}"),
    }
}

// Pass with no NetworkPolicy selecting the pod: allowed (not isolated).
#[test]
fn pass_without_kubernetes_policies_allows() {
    let mut c = cluster();
    apply_global(&mut c, DENY_FROM_Y_BEFORE);
    check_matrix(&c, "tcp", 80, |from, to| {
        !(ns_of(to) == "x" && ns_of(from) == "y")
    });
    let e = explain_pair(&c, "tcp", "z/a", "x/a", 80);
    assert!(matches!(
        e.ingress.expect("local").1.decided_by,
        DecidedBy::PassedToKubernetes { .. }
    ));
}

// End of policies: a GNP that applies but whose rules do not match denies
// (Calico's end-of-tier drop), even with no NetworkPolicy.
#[test]
fn applying_global_policy_without_match_denies() {
    let mut c = cluster();
    apply_global(
        &mut c,
        r#"
metadata: {name: only-y}
spec:
  order: 1
  selector: "pod == 'a'"
  ingress: [{action: Allow, source: {namespaceSelector: "ns == 'y'"}}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| {
        pod_of(to) != "a" || ns_of(from) == "y"
    });
    let e = explain_pair(&c, "tcp", "z/b", "x/a", 80);
    assert_eq!(
        e.ingress.expect("local").1.decided_by,
        DecidedBy::EndOfPolicies
    );
}

// The Calico default-deny pattern: a GNP without order (after the
// NetworkPolicies) with no rules denies all that they do not allow.
#[test]
fn default_deny_after_kubernetes_policies() {
    let mut c = cluster();
    apply_global(
        &mut c,
        r#"
metadata: {name: default-deny}
spec:
  selector: all()
  types: [Ingress, Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [53]}
"#,
    );
    check_matrix(&c, "tcp", 80, |_, _| false);
    apply(
        &mut c,
        r#"
metadata: {name: web, namespace: y}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{namespaceSelector: {}}]}]
  egress: [{to: [{namespaceSelector: {}}]}]
"#,
    );
    // Only y/a's own NetworkPolicy opens anything, and only where both its
    // sides are y/a: a connection needs the peer's side too.
    check_matrix(&c, "tcp", 80, |_, _| false);
    apply(
        &mut c,
        r#"
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]
"#,
    );
    check_matrix(&c, "tcp", 80, |from, to| from == "x/b" && to == "y/a");
    // UDP 53 egress is allowed by the GNP everywhere; only y/a's ingress
    // (its NetworkPolicy) lets it in.
    check_matrix(&c, "udp", 53, |_, to| to == "y/a");
}

// Order then name; a lower order Allow beats a higher order Deny; Log goes on.
#[test]
fn order_then_name_and_log_continues() {
    let mut c = cluster();
    for (name, order, action) in [
        ("b-deny", 50, "Deny"),
        ("a-allow", 50, "Allow"),
        ("c-log", 10, "Log"),
    ] {
        apply_global(
            &mut c,
            &format!(
                "metadata: {{name: {name}}}\nspec:\n  order: {order}\n  selector: \"pod == 'c'\"\n  ingress: [{{action: {action}}}]\n"
            ),
        );
    }
    check_matrix(&c, "tcp", 80, |_, _| true);
    let e = explain_pair(&c, "tcp", "x/a", "y/c", 80);
    let v = e.ingress.expect("local").1;
    assert_eq!(v.logged.len(), 1, "{v:?}");
    match v.decided_by {
        DecidedBy::Rule { origin, .. } => {
            assert_eq!(origin.policy.to_string(), "GlobalNetworkPolicy a-allow")
        }
        other => panic!("{other:?}"),
    }
    // Order wins over name: b-deny to order 5 denies.
    apply_global(
        &mut c,
        "metadata: {name: b-deny}\nspec:\n  order: 5\n  selector: \"pod == 'c'\"\n  ingress: [{action: Deny}]\n",
    );
    check_matrix(&c, "tcp", 80, |_, to| pod_of(to) != "c");
}

// A Pass after the NetworkPolicies keeps their (failed) verdict.
#[test]
fn pass_after_kubernetes_policies_gives_their_default() {
    let mut c = cluster();
    apply(
        &mut c,
        r#"
metadata: {name: p, namespace: z}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]
"#,
    );
    apply_global(
        &mut c,
        "metadata: {name: late}\nspec:\n  order: 2000\n  ingress: [{action: Pass}, {action: Allow}]\n",
    );
    // z isolated by its NetworkPolicy: only z pods reach z; others: the
    // GNP's Pass gives the Kubernetes default (allow: not isolated).
    check_matrix(&c, "tcp", 80, |from, to| {
        ns_of(to) != "z" || ns_of(from) == "z"
    });
}

// Ports, notPorts, nets, notNets, ICMP, protocol numbers.
#[test]
fn rule_criteria() {
    let mut c = cluster();
    apply_global(
        &mut c,
        r#"
metadata: {name: crit}
spec:
  order: 1
  selector: "pod == 'b'"
  ingress:
  - action: Allow
    protocol: 6
    source: {nets: ["10.0.0.0/23"], notNets: ["10.0.1.4/32"]}
    destination: {ports: ["80:90"], notPorts: [81]}
  - action: Allow
    protocol: UDP
    destination: {ports: [serve-81-udp]}
"#,
    );
    let src_ok = |from: &str| ns_of(from) != "z" && from != "y/c";
    check_matrix(&c, "tcp", 80, |from, to| pod_of(to) != "b" || src_ok(from));
    check_matrix(&c, "tcp", 81, |_, to| pod_of(to) != "b");
    check_matrix(&c, "udp", 81, |_, _| true);
    check_matrix(&c, "udp", 80, |_, to| pod_of(to) != "b");
    let ping = margay_policy::eval::Packet {
        protocol: 1,
        src_port: None,
        dst_port: None,
        icmp: Some((8, 0)),
        ..packet("tcp", "x/a", "x/b", 0)
    };
    assert!(!margay_policy::eval::explain(c.ir(), &ping).allowed());
    apply_global(
        &mut c,
        "metadata: {name: icmp}\nspec:\n  order: 0\n  ingress: [{action: Allow, protocol: ICMP, icmp: {type: 8}}]\n",
    );
    assert!(margay_policy::eval::explain(c.ir(), &ping).allowed());
}

#[test]
fn invalid_global_policy_is_refused_and_changes_nothing() {
    let mut c = cluster();
    let before = c.ir().clone();
    let err = c
        .upsert_global_policy(&gnp(
            "metadata: {name: bad}\nspec:\n  ingress: [{action: Allow, destination: {ports: [80]}}]\n",
        ))
        .expect_err("ports without protocol");
    assert!(
        err.errors
            .iter()
            .any(|e| e.field == "spec.ingress[0].destination.ports"),
        "{err}"
    );
    assert_eq!(c.ir(), &before);
}
