//! get / apply / create / replace / delete / label against the lab's API
//! server, with golden output where it is stable.

mod common;

use common::{api_with_crds, ctl, ctl_in, file, golden, stable};
use kube::api::{Api, ListParams};
use margay_api::{BGPPeer, IPPool};

const POOLS: &str = "\
apiVersion: margay.dev/v1
kind: IPPool
metadata:
  name: pool-a
  labels: {zone: east}
spec:
  cidr: 10.10.0.0/16
  vxlanMode: CrossSubnet
  natOutgoing: true
---
apiVersion: margay.dev/v1
kind: IPPool
metadata:
  name: pool-v6
spec:
  cidr: fd00:10::/64
  blockSize: 122
  nodeSelector: \"zone == 'east'\"
---
apiVersion: margay.dev/v1
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  peerIP: 192.0.2.1
  asNumber: 65001
  nodeSelector: rack == 'r1'
";

async fn pool_names(api: &margay_lab::apiserver::TestApiServer) -> Vec<String> {
    let pools: Api<IPPool> = Api::all(api.client());
    let mut names: Vec<String> = pools
        .list(&ListParams::default())
        .await
        .expect("list pools")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_get_replace_label_delete_round_trip() {
    let api = api_with_crds().await;
    let dir = tempfile::tempdir().unwrap();
    let f = file(dir.path(), "objects.yaml", POOLS);
    let f = f.to_str().unwrap();
    let url = api.url();

    let out = ctl(&api, &["apply", "-f", f]).expect(0);
    golden("apply-created.txt", &out.stdout);
    // Applying the same file again changes nothing.
    let out = ctl(&api, &["apply", "-f", f]).expect(0);
    golden("apply-unchanged.txt", &out.stdout);
    assert_eq!(pool_names(&api).await, ["pool-a", "pool-v6"]);

    let out = ctl(&api, &["get", "ippools"]).expect(0);
    golden("get-ippools.txt", &stable(&out.stdout, &url));
    let out = ctl(&api, &["get", "pools", "-o", "wide"]).expect(0);
    golden("get-ippools-wide.txt", &stable(&out.stdout, &url));
    let out = ctl(&api, &["get", "ippool", "pool-a", "-o", "yaml"]).expect(0);
    golden("get-ippool-yaml.txt", &stable(&out.stdout, &url));
    let out = ctl(&api, &["get", "bgpp", "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"][0]["spec"]["asNumber"], 65001);
    let out = ctl(&api, &["get", "-f", f]).expect(0);
    golden("get-from-file.txt", &stable(&out.stdout, &url));
    let out = ctl(&api, &["get", "ippools", "-l", "zone=east"]).expect(0);
    assert!(
        out.stdout.contains("pool-a") && !out.stdout.contains("pool-v6"),
        "{}",
        out.stdout
    );

    // The exported YAML applies again as it is ("unchanged"), and edits of it
    // are written as a compare-and-swap on the exported resourceVersion.
    let exported = ctl(&api, &["get", "ippools", "-o", "yaml"])
        .expect(0)
        .stdout;
    let out = ctl_in(&api, &["apply", "-f", "-"], Some(&exported)).expect(0);
    assert_eq!(out.stdout.matches("unchanged").count(), 2, "{}", out.stdout);
    let edited = exported.replace("natOutgoing: true", "natOutgoing: false");
    let out = ctl_in(&api, &["replace", "-f", "-"], Some(&edited)).expect(0);
    assert!(
        out.stdout.contains("ippool.margay.dev/pool-a configured"),
        "{}",
        out.stdout
    );
    // The same stale export again: the server refuses it, nothing changes.
    let stale = exported.replace(
        "natOutgoing: true",
        "natOutgoing: true\n    nodeSelector: all()",
    );
    let out = ctl_in(&api, &["replace", "-f", "-"], Some(&stale)).expect(1);
    assert!(out.stderr.contains("conflict"), "{}", out.stderr);
    let pools: Api<IPPool> = Api::all(api.client());
    let a = pools.get("pool-a").await.unwrap();
    assert!(
        !a.spec.nat_outgoing && a.spec.node_selector.is_none(),
        "{:?}",
        a.spec
    );

    // create refuses existing objects unless --skip-exists.
    let out = ctl(&api, &["create", "-f", f]).expect(1);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    let out = ctl(&api, &["create", "-f", f, "--skip-exists"]).expect(0);
    assert_eq!(
        out.stdout.matches("skipped (exists)").count(),
        3,
        "{}",
        out.stdout
    );

    // label: set, refuse to overwrite, overwrite, remove.
    let out = ctl(&api, &["label", "ippool", "pool-a", "tier=gold"]).expect(0);
    assert_eq!(out.stdout, "ippool.margay.dev/pool-a labeled\n");
    let out = ctl(&api, &["label", "ippool", "pool-a", "zone=west"]).expect(1);
    assert!(out.stderr.contains("--overwrite"), "{}", out.stderr);
    ctl(
        &api,
        &["label", "ippool", "pool-a", "zone=west", "--overwrite"],
    )
    .expect(0);
    ctl(&api, &["label", "ippool", "pool-a", "tier-"]).expect(0);
    let labels = pools.get("pool-a").await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels.get("zone").map(String::as_str), Some("west"));
    assert!(!labels.contains_key("tier"));
    ctl(&api, &["label", "-f", f, "owner=netops"]).expect(0);
    let peers: Api<BGPPeer> = Api::all(api.client());
    let peer = peers.get("rack1-tor").await.unwrap();
    assert_eq!(peer.metadata.labels.unwrap()["owner"], "netops");
    let out = ctl(&api, &["label", "ippool", "pool-a", "bad key=1"]).expect(2);
    assert!(out.stderr.contains("label key"), "{}", out.stderr);

    // delete: by name, dry run first, missing objects.
    let out = ctl(&api, &["delete", "ippool", "pool-v6", "--dry-run"]).expect(0);
    assert!(out.stdout.contains("(server dry run)"), "{}", out.stdout);
    assert_eq!(pool_names(&api).await, ["pool-a", "pool-v6"]);
    let out = ctl(&api, &["delete", "ippool", "pool-v6"]).expect(0);
    assert_eq!(out.stdout, "ippool.margay.dev/pool-v6 deleted\n");
    let out = ctl(&api, &["delete", "ippool", "pool-v6"]).expect(1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    ctl(&api, &["delete", "-f", f, "--skip-not-found"]).expect(0);
    assert!(pool_names(&api).await.is_empty());
    let out = ctl(&api, &["get", "ippool", "pool-a"]).expect(1);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_names_the_field_and_writes_nothing() {
    let api = api_with_crds().await;
    let dir = tempfile::tempdir().unwrap();
    // The first two objects are fine; the third is not: nothing may be written.
    let bad = format!(
        "{POOLS}---\napiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {{name: broken}}\nspec: {{cidr: 10.20.0.0/16, blockSize: 40}}\n"
    );
    let f = file(dir.path(), "bad.yaml", &bad);
    let out = ctl(&api, &["apply", "-f", f.to_str().unwrap()]).expect(1);
    golden(
        "apply-invalid.txt",
        &out.stderr.replace(f.to_str().unwrap(), "bad.yaml"),
    );
    assert!(pool_names(&api).await.is_empty());

    for (text, expect) in [
        (
            "spec: {cidr: 10.20.0.0/16, blockSize: large}",
            "spec.blockSize: invalid type",
        ),
        (
            "spec: {cidr: 10.20.0.0/16, vxlanMode: Sometimes}",
            "spec.vxlanMode",
        ),
        (
            "spec: {cidr: 10.20.0.0/16, natOutgoingg: true}",
            "spec.natOutgoingg: unknown field",
        ),
        ("spec: {cidr: 10.20.0.1/16}", "spec.cidr"),
        ("spec: {cidr: 127.0.0.0/16}", "loopback"),
        ("spec: {cidr: fd00::/64, ipipMode: Always}", "spec.ipipMode"),
    ] {
        let doc =
            format!("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {{name: p}}\n{text}\n");
        let out = ctl_in(&api, &["create", "-f", "-"], Some(&doc)).expect(1);
        assert!(
            out.stderr.contains("stdin, document 1")
                && out.stderr.contains(expect)
                && out.stderr.contains("nothing was written"),
            "{text}: {}",
            out.stderr
        );
    }
    assert!(pool_names(&api).await.is_empty());

    // A pool overlapping a stored one is refused before writing.
    ctl_in(&api, &["create", "-f", "-"], Some("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: big}\nspec: {cidr: 10.0.0.0/8}\n")).expect(0);
    let out = ctl_in(&api, &["apply", "-f", "-"], Some("apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: small}\nspec: {cidr: 10.1.0.0/16}\n")).expect(1);
    assert!(
        out.stderr.contains("overlaps IPPool \"big\""),
        "{}",
        out.stderr
    );
    assert_eq!(pool_names(&api).await, ["big"]);

    // BGPPeer rules, a singleton name, a foreign kind.
    for (doc, expect) in [
        (
            "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 192.0.2.1}",
            "spec.asNumber",
        ),
        (
            "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerIP: 192.0.2.1, asNumber: 1, peerSelector: all()}",
            "spec.peerSelector",
        ),
        (
            "kind: BGPPeer\nmetadata: {name: p}\nspec: {peerSelector: \"rr ==\"}",
            "spec.peerSelector",
        ),
        (
            "kind: BGPConfiguration\nmetadata: {name: mine}\nspec: {}",
            "metadata.name",
        ),
        (
            "kind: GlobalNetworkPolicy\nmetadata: {name: g}\nspec: {selector: all(), ingress: [{action: Allow, destination: {ports: [99999]}}]}",
            "spec.ingress[0].destination.ports[0]",
        ),
        (
            "kind: IPAMBlock\nmetadata: {name: b}\nspec: {cidr: 10.0.0.0/26}",
            "metadata.name",
        ),
    ] {
        let doc = format!("apiVersion: margay.dev/v1\n{doc}\n");
        let out = ctl_in(&api, &["apply", "-f", "-"], Some(&doc)).expect(1);
        assert!(out.stderr.contains(expect), "{doc}\n{}", out.stderr);
    }
    let out = ctl_in(
        &api,
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"),
    )
    .expect(1);
    assert!(out.stderr.contains("use kubectl"), "{}", out.stderr);

    // IPAM-internal kinds need a flag to be written by hand.
    let block = "apiVersion: margay.dev/v1\nkind: IPAMBlock\nmetadata: {name: 10-9-0-0-26}\nspec: {cidr: 10.9.0.0/26, affinity: \"host:n1\", allocations: [], inUse: 0}\n";
    let out = ctl_in(&api, &["apply", "-f", "-"], Some(block)).expect(1);
    assert!(out.stderr.contains("--allow-ipam-writes"), "{}", out.stderr);
    let out = ctl_in(
        &api,
        &["apply", "--allow-ipam-writes", "-f", "-"],
        Some(block),
    )
    .expect(0);
    assert!(
        out.stdout
            .contains("ipamblock.margay.dev/10-9-0-0-26 created"),
        "{}",
        out.stdout
    );

    // Usage errors: exit code 2.
    let out = ctl(&api, &["get", "widgets"]).expect(2);
    assert!(
        out.stderr.contains("unknown kind \"widgets\""),
        "{}",
        out.stderr
    );
    ctl(&api, &["delete", "ippool"]).expect(2);
    ctl(&api, &["apply"]).expect(2);
    ctl(&api, &["get", "--bogus"]).expect(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_can_be_written_and_read_by_every_name() {
    let api = api_with_crds().await;
    let all = "\
apiVersion: margay.dev/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64512, nodeToNodeMeshEnabled: false}
---
apiVersion: margay.dev/v1
kind: GlobalNetworkPolicy
metadata: {name: deny-db}
spec:
  order: 10
  selector: role == 'db'
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination: {ports: [5432]}
---
apiVersion: margay.dev/v1
kind: AgentConfiguration
metadata: {name: default}
spec: {logLevel: Debug, mtu: 1400}
---
apiVersion: margay.dev/v1
kind: IPAMConfiguration
metadata: {name: default}
spec: {strictAffinity: true}
";
    ctl_in(&api, &["apply", "-f", "-"], Some(all)).expect(0);
    for name in [
        "bgpconfig",
        "bgpconfigurations",
        "gnp",
        "globalnetworkpolicy",
        "agentconfig",
        "AgentConfiguration",
        "ipamconfig",
        "ipamconfigurations.margay.dev",
    ] {
        let out = ctl(&api, &["get", name]).expect(0);
        assert!(out.stdout.starts_with("NAME"), "{name}: {}", out.stdout);
        assert_eq!(out.stdout.lines().count(), 2, "{name}: {}", out.stdout);
    }
    let out = ctl(&api, &["get", "gnp", "-o", "wide"]).expect(0);
    golden("get-gnp-wide.txt", &stable(&out.stdout, &api.url()));
    for empty in ["ipamblocks", "blockaffinities", "ipamhandles", "bgppeers"] {
        let out = ctl(&api, &["get", empty]).expect(0);
        assert!(
            out.stderr.contains("No ") && out.stdout.is_empty(),
            "{empty}: {out:?}"
        );
    }
}
