//! Truth tables in the upstream style (Kubernetes docs, `test/e2e/network/
//! netpol`): namespaces x, y, z with pods a, b, c spread over three nodes,
//! TCP and UDP on 80 and 81; policies applied, updated and deleted with
//! `kubectl` against the lab's API server; after every step the whole
//! matrix (9 × 8 pairs × 4 port/protocols) must equal the expectation —
//! in the kernels of real agents (probes) and in `policy explain` (the
//! explainer over an API snapshot).
//!
//! Placement is `MARGAY_POLICY_PLACEMENT` (`spread`, the default, or
//! `same-node`). Cross-node pairs go over the agents' BGP-learned routes.
//!
//! Needs the `margay-lab`, `margay-agent` and `margay-cni` binaries built.

mod policy_lab;

use margay_lab::pods::spec::Protocol;
use policy_lab::{Placement, PolicyLab, ns_of, pod_of};

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: \"{ns}\"}}\nspec:\n{spec}\n"
    )
}

fn gnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: margay.dev/v1\nkind: GlobalNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}\n"
    )
}

#[test]
fn networkpolicy_truth_tables() {
    let lab = PolicyLab::up(Placement::from_env(), 3, &[]);
    lab.check("no policy", |_, _, _, _| true);

    // --- default deny, allow all, multiple policies, deletion
    lab.apply(&np(
        "x",
        "deny-ingress",
        "  podSelector: {}\n  policyTypes: [Ingress]",
    ));
    lab.check("default deny ingress in x", |_, t, _, _| ns_of(t) != "x");
    lab.apply(&np(
        "x",
        "allow-all-ingress",
        "  podSelector: {}\n  ingress: [{}]",
    ));
    lab.check("deny + allow-all ingress in x (additive)", |_, _, _, _| {
        true
    });
    lab.kubectl(
        &["delete", "networkpolicy", "-n", "x", "allow-all-ingress"],
        None,
    );
    lab.check("allow-all deleted", |_, t, _, _| ns_of(t) != "x");
    lab.delete_all_policies();

    lab.apply(&np(
        "x",
        "deny-egress",
        "  podSelector: {}\n  policyTypes: [Egress]",
    ));
    lab.check("default deny egress in x", |f, _, _, _| ns_of(f) != "x");
    lab.apply(&np(
        "x",
        "allow-all-egress",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{}]",
    ));
    lab.check("deny + allow-all egress in x", |_, _, _, _| true);
    lab.delete_all_policies();

    lab.apply(&np(
        "y",
        "deny-both",
        "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
    ));
    lab.check("deny both ways in y", |f, t, _, _| {
        ns_of(f) != "y" && ns_of(t) != "y"
    });
    lab.delete_all_policies();

    // --- peers: every selector combination, updated in place
    let to_xa = |spec_from: &str| {
        np(
            "x",
            "to-a",
            &format!(
                "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n{spec_from}"
            ),
        )
    };
    lab.apply(&to_xa("    - podSelector: {matchLabels: {pod: b}}"));
    lab.check("podSelector peer: own namespace only", |f, t, _, _| {
        t != "x/a" || f == "x/b"
    });
    lab.apply(&to_xa(
        "    - namespaceSelector: {matchLabels: {ns: \"y\"}}",
    ));
    lab.check("namespaceSelector peer (update replaces)", |f, t, _, _| {
        t != "x/a" || ns_of(f) == "y"
    });
    lab.apply(&to_xa(
        "    - namespaceSelector: {matchLabels: {ns: \"y\"}}\n      podSelector: {matchLabels: {pod: b}}",
    ));
    lab.check("namespaceSelector AND podSelector", |f, t, _, _| {
        t != "x/a" || f == "y/b"
    });
    lab.apply(&to_xa(
        "    - namespaceSelector: {matchLabels: {ns: \"y\"}}\n    - podSelector: {matchLabels: {pod: b}}",
    ));
    lab.check("namespaceSelector OR podSelector", |f, t, _, _| {
        t != "x/a" || ns_of(f) == "y" || f == "x/b"
    });
    lab.apply(&to_xa(
        "    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: c}}",
    ));
    lab.check("all namespaces AND podSelector", |f, t, _, _| {
        t != "x/a" || pod_of(f) == "c"
    });
    lab.apply(&to_xa(
        "    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [\"y\", \"z\"]}]}\n      podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}",
    ));
    lab.check("matchExpressions In / NotIn", |f, t, _, _| {
        t != "x/a" || (ns_of(f) != "x" && pod_of(f) != "a")
    });
    lab.apply(&to_xa(
        "    - namespaceSelector: {matchExpressions: [{key: ns, operator: DoesNotExist}]}\n    - podSelector: {matchExpressions: [{key: team, operator: NotIn, values: [red]}, {key: pod, operator: Exists}]}",
    ));
    lab.check(
        "matchExpressions DoesNotExist / NotIn on an absent key / Exists",
        |f, t, _, _| t != "x/a" || ns_of(f) == "x",
    );

    // --- ports
    let to_xa_ports = |ports: &str| {
        np(
            "x",
            "to-a",
            &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - ports: {ports}"),
        )
    };
    lab.apply(&to_xa_ports("[{port: 80}]"));
    lab.check("port 80, protocol defaults to TCP", |_, t, pr, po| {
        t != "x/a" || (pr == TCP && po == 80)
    });
    lab.apply(&to_xa_ports("[{protocol: UDP, port: 81}, {protocol: TCP}]"));
    lab.check("UDP 81 and every TCP port", |_, t, pr, po| {
        t != "x/a" || pr == TCP || po == 81
    });
    lab.apply(&to_xa_ports(
        "[{protocol: UDP, port: serve-81-udp}, {protocol: UDP, port: serve-80-tcp}]",
    ));
    lab.check(
        "named ports (a name defined for another protocol matches nothing)",
        |_, t, pr, po| t != "x/a" || (pr == UDP && po == 81),
    );
    lab.apply(&to_xa_ports("[{protocol: TCP, port: 80, endPort: 81}]"));
    lab.check("endPort (inclusive)", |_, t, pr, _| t != "x/a" || pr == TCP);
    lab.delete_all_policies();
    lab.apply(&np(
        "x",
        "a-out",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: serve-80-tcp}]}]",
    ));
    lab.check(
        "egress named port, resolved on each destination",
        |f, _, pr, po| f != "x/a" || (pr == TCP && po == 80),
    );
    lab.delete_all_policies();

    // --- ipBlock, pod addresses included
    let (xb, yc) = (lab.ip("x/b"), lab.ip("y/c"));
    lab.apply(&to_xa(&format!(
        "    - ipBlock: {{cidr: 10.244.0.0/16, except: [{xb}/32, {yc}/32]}}"
    )));
    lab.check("ipBlock with except, over pod addresses", |f, t, _, _| {
        t != "x/a" || (f != "x/b" && f != "y/c")
    });
    lab.delete_all_policies();
    lab.apply(&np(
        "x",
        "a-out",
        &format!(
            "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{ipBlock: {{cidr: {yc}/32}}}}]}}]"
        ),
    ));
    lab.check("egress ipBlock to one pod address", |f, t, _, _| {
        f != "x/a" || t == "y/c"
    });
    lab.delete_all_policies();

    // --- ingress and egress together, in several namespaces
    lab.apply(&np(
        "x",
        "a-both",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}}]}]\n  egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]",
    ));
    lab.apply(&np(
        "y",
        "out-to-c",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{podSelector: {matchLabels: {pod: c}}, namespaceSelector: {}}]}]",
    ));
    lab.apply(&np(
        "z",
        "in-from-y",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}}]}]",
    ));
    lab.check(
        "egress and ingress together; both ends must allow",
        |f, t, _, _| {
            (t != "x/a" || ns_of(f) == "y")
                && (f != "x/a" || ns_of(t) == "z")
                && (ns_of(f) != "y" || pod_of(t) == "c")
                && (ns_of(t) != "z" || ns_of(f) == "y")
        },
    );
    lab.delete_all_policies();
    lab.check("every policy deleted", |_, _, _, _| true);
}

#[test]
fn label_changes_and_global_policy_truth_tables() {
    let lab = PolicyLab::up(Placement::from_env(), 3, &[]);

    // --- label changes of pods (peers and subjects) and namespaces
    lab.apply(&np(
        "x",
        "to-a",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
    ));
    lab.check("x/a from pod=b", |f, t, _, _| t != "x/a" || f == "x/b");
    lab.kubectl(
        &["label", "pod", "-n", "x", "c", "pod=b", "--overwrite"],
        None,
    );
    lab.check("x/c relabelled pod=b: now a peer", |f, t, _, _| {
        t != "x/a" || f == "x/b" || f == "x/c"
    });
    lab.kubectl(
        &["label", "pod", "-n", "x", "c", "pod=c", "--overwrite"],
        None,
    );
    lab.kubectl(
        &["label", "pod", "-n", "x", "b", "pod=a", "--overwrite"],
        None,
    );
    lab.check(
        "x/b relabelled pod=a: now a subject, and no peer is left",
        |_, t, _, _| t != "x/a" && t != "x/b",
    );
    lab.kubectl(
        &["label", "pod", "-n", "x", "b", "pod=b", "--overwrite"],
        None,
    );
    lab.apply(&np(
        "x",
        "to-a",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}}]}]",
    ));
    lab.check("x/a from ns=y", |f, t, _, _| t != "x/a" || ns_of(f) == "y");
    lab.kubectl(&["label", "namespace", "z", "ns=y", "--overwrite"], None);
    lab.check("namespace z relabelled ns=y", |f, t, _, _| {
        t != "x/a" || ns_of(f) != "x"
    });
    lab.kubectl(&["label", "namespace", "z", "ns=z", "--overwrite"], None);
    lab.check("namespace z labelled back", |f, t, _, _| {
        t != "x/a" || ns_of(f) == "y"
    });
    lab.delete_all_policies();

    // --- GlobalNetworkPolicy against NetworkPolicy (ADR 0003)
    lab.apply(&np("x", "allow-all", "  podSelector: {}\n  ingress: [{}]"));
    lab.apply(&gnp(
        "guard",
        "  order: 10\n  namespaceSelector: ns == 'x'\n  ingress:\n  - action: Deny\n    source: {namespaceSelector: ns == 'y'}\n  - action: Pass",
    ));
    lab.check(
        "GNP before NetworkPolicy: Deny wins over an allow-all",
        |f, t, _, _| ns_of(t) != "x" || ns_of(f) != "y",
    );
    lab.apply(&gnp(
        "allow-ya",
        "  order: 5\n  namespaceSelector: ns == 'x'\n  ingress:\n  - action: Allow\n    source: {selector: pod == 'a', namespaceSelector: ns == 'y'}",
    ));
    lab.check(
        "GNP order: order 5 Allow before order 10 Deny",
        |f, t, _, _| ns_of(t) != "x" || ns_of(f) != "y" || f == "y/a",
    );
    lab.delete_all_policies();

    lab.apply(&gnp(
        "pass-y",
        "  order: 10\n  namespaceSelector: ns == 'x'\n  ingress:\n  - action: Pass\n    source: {namespaceSelector: ns == 'y'}\n  - action: Deny",
    ));
    lab.apply(&np(
        "x",
        "from-b",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}]}]",
    ));
    lab.check(
        "GNP Pass hands over to NetworkPolicy, which still isolates",
        |f, t, _, _| ns_of(t) != "x" || f == "y/b",
    );
    lab.delete_all_policies();

    lab.apply(&gnp(
        "default-deny",
        "  selector: all()\n  types: [Ingress]",
    ));
    lab.apply(&np(
        "x",
        "same-ns",
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]",
    ));
    lab.check(
        "GNP without order after NetworkPolicy: the cluster default deny",
        |f, t, _, _| ns_of(t) == "x" && ns_of(f) == "x",
    );
    lab.kubectl(&["delete", "globalnetworkpolicy", "default-deny"], None);
    lab.apply(&gnp(
        "late",
        "  order: 2000\n  namespaceSelector: ns == 'x'\n  ingress:\n  - action: Deny\n    source: {selector: pod == 'b'}\n  - action: Allow",
    ));
    let late = |f: &str, t: &str, _: Protocol, _: u16| {
        ns_of(t) != "x" || ns_of(f) == "x" || pod_of(f) != "b"
    };
    lab.check(
        "GNP order 2000: NetworkPolicy allows first, then Deny / Allow",
        late,
    );

    // A refused update keeps the previous version in force, and says so.
    lab.apply(&gnp(
        "late",
        "  order: 2000\n  namespaceSelector: ns == 'x'\n  ingress:\n  - action: Deny\n    source: {selector: \"pod ==\"}",
    ));
    let refused = "margay_policy_refused{policy=\"GlobalNetworkPolicy late\"} 1";
    for node in lab.lab.node_names() {
        lab.wait_metrics(&node, "reports the refused policy", |m| m.contains(refused));
    }
    // The explainer has no previous version to keep: it leaves the policy
    // out and says so; the agents' verdicts are the previous version's.
    let explainer = margay_policy::ClusterExplainer::new(&lab.snapshot());
    assert!(
        explainer
            .refused()
            .iter()
            .any(|(p, e)| p.to_string() == "GlobalNetworkPolicy late"
                && e.to_string().contains("selector")),
        "{:?}",
        explainer.refused()
    );
    let events = lab.kubectl(
        &[
            "get",
            "events",
            "-n",
            "default",
            "-o",
            "jsonpath={.items[*].reason}",
        ],
        None,
    );
    assert!(events.contains("PolicyRefused"), "{events}");
    lab.check_probes("refused update: the previous version stays", late);

    lab.apply(&gnp(
        "guard-egress",
        &format!(
            "  order: 10\n  egress:\n  - action: Deny\n    destination: {{nets: [{}/32]}}\n  - action: Pass",
            lab.ip("z/a")
        ),
    ));
    lab.kubectl(&["delete", "globalnetworkpolicy", "late"], None);
    lab.kubectl(&["delete", "networkpolicy", "-n", "x", "same-ns"], None);
    lab.check("GNP egress Deny to a pod address (nets)", |_, t, _, _| {
        t != "z/a"
    });
    for node in lab.lab.node_names() {
        lab.wait_metrics(&node, "no longer reports the deleted policy", |m| {
            !m.contains("GlobalNetworkPolicy late")
        });
    }
    lab.delete_all_policies();
    lab.check("every policy deleted", |_, _, _, _| true);
}
