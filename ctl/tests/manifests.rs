//! The install manifests in deploy/: the kustomize base and every overlay
//! render offline (`kubectl kustomize`), the Helm chart lints and renders
//! with default and other values (a real helm, installed by
//! scripts/install-helm.sh), everything rendered validates — built-in kinds
//! against the Kubernetes 1.32 schemas (PyPI kubernetes-validate, strict),
//! margay.dev objects with margayctl's own validation (the CRD schema and the
//! Rust-only checks) — and applies with kubectl to the lab's API server.
//! The CRD files themselves are checked by api's drift test; here only that
//! deploy/crds/kustomization.yml lists exactly them.

mod common;

use common::{api_with_crds, ctl, run_program};
use margay_ctl::manifest::{Document, parse_documents};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

const OVERLAYS: &[&str] = &[
    "vxlan-always",
    "cross-subnet",
    "route-reflectors",
    "tor-peering",
];

/// Runs an installer script; returns the tool path it prints last.
fn install(script: &str) -> PathBuf {
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts").join(script));
    let out = run_program(c, None).expect(0);
    PathBuf::from(
        out.stdout
            .lines()
            .last()
            .expect("the script prints the tool's path"),
    )
}

fn kustomize(dir: &Path) -> String {
    let mut c = Command::new("kubectl");
    c.arg("kustomize").arg(dir);
    run_program(c, None).expect(0).stdout
}

fn helm_template(helm: &Path, values: Option<&Path>) -> String {
    let mut c = Command::new(helm);
    c.args(["template", "margay"])
        .arg(deploy().join("helm/margay"))
        .args(["--namespace", "kube-system", "--include-crds"]);
    if let Some(v) = values {
        c.arg("--values").arg(v);
    }
    run_program(c, None).expect(0).stdout
}

fn docs(name: &str, yaml: &str) -> Vec<Document> {
    parse_documents(name, yaml).expect("rendered YAML parses")
}

fn kind_name(d: &Document) -> (String, String) {
    (
        d.value["kind"].as_str().unwrap_or("").to_string(),
        d.value["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

fn find<'a>(docs: &'a [Document], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|d| kind_name(d) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("{kind} {name} not rendered"))
        .value
}

/// Built-in kinds through kubernetes-validate (strict: unknown fields fail);
/// margay.dev objects through margayctl's validation.
fn validate(validator: &Path, name: &str, docs: &[Document]) {
    let (ours, builtin): (Vec<&Document>, Vec<&Document>) = docs.iter().partition(|d| {
        d.value["apiVersion"]
            .as_str()
            .is_some_and(|a| a.starts_with("margay.dev/"))
    });
    let checked =
        margay_ctl::check::check_documents(&ours.into_iter().cloned().collect::<Vec<_>>());
    assert!(
        checked.is_ok(),
        "{name}: margay.dev objects invalid: {:?}",
        checked.err()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{}.yaml", name.replace('/', "_")));
    let yaml: Vec<String> = builtin
        .iter()
        .map(|d| margay_ctl::output::yaml(&d.value).unwrap())
        .collect();
    std::fs::write(&file, yaml.join("---\n")).unwrap();
    let mut c = Command::new(validator);
    c.args(["--strict", "-k", "1.32.0"]).arg(&file);
    let out = run_program(c, None);
    assert_eq!(
        out.code, 0,
        "{name}: kubernetes-validate failed:\n{}{}",
        out.stdout, out.stderr
    );
    let passed = format!("{}{}", out.stdout, out.stderr)
        .matches(" passed for resource ")
        .count();
    assert_eq!(
        passed,
        builtin.len(),
        "{name}: every built-in object validated:\n{}",
        out.stderr
    );
}

/// Applies `yaml` to a fresh lab API server with kubectl: CRDs first (as
/// kubectl needs them Established to map the objects), then everything;
/// again for idempotence. Returns the server for further checks.
async fn apply(name: &str, yaml: &str) -> margay_lab::apiserver::TestApiServer {
    // The server starts with the CRDs (as `kubectl apply -f deploy/crds` would).
    let api = api_with_crds().await;
    for round in ["first", "second"] {
        let mut c = api.kubectl();
        c.args(["apply", "-f", "-"]);
        let out = run_program(c, Some(yaml));
        assert_eq!(
            out.code, 0,
            "{name}: kubectl apply ({round}) failed:\n{}\n{}",
            out.stdout, out.stderr
        );
        if round == "second" {
            for line in out.stdout.lines() {
                assert!(
                    line.ends_with(" unchanged"),
                    "{name}: re-applying changed something: {line}"
                );
            }
        }
    }
    api
}

#[test]
fn crd_kustomization_lists_exactly_the_generated_crds() {
    let text = std::fs::read_to_string(deploy().join("crds/kustomization.yml")).unwrap();
    let k: Value = serde_saphyr::from_str(&text).unwrap();
    let listed: BTreeSet<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let generated: BTreeSet<String> = margay_api::crds::render_crd_files()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(listed, generated);
}

#[tokio::test(flavor = "multi_thread")]
async fn kustomize_base_and_overlays_render_validate_and_apply() {
    let validator = install("install-kubernetes-validate.sh");
    // The validator must fail on a broken object, or its pass means nothing.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec: {selectr: {}}\n",
    )
    .unwrap();
    let mut c = Command::new(&validator);
    c.args(["--strict", "-k", "1.32.0"]).arg(&bad);
    assert_ne!(
        run_program(c, None).code,
        0,
        "kubernetes-validate accepted a broken DaemonSet"
    );

    let base = kustomize(&deploy().join("base"));
    let base_docs = docs("base", &base);
    let kinds: BTreeSet<(String, String)> = base_docs.iter().map(kind_name).collect();
    for want in [
        ("ServiceAccount", "margay-agent"),
        ("ClusterRole", "margay-agent"),
        ("ClusterRoleBinding", "margay-agent"),
        ("Role", "margay-agent"),
        ("ConfigMap", "margay-config"),
        ("DaemonSet", "margay-agent"),
        ("IPPool", "default-ipv4-ippool"),
        ("BGPConfiguration", "default"),
        ("CustomResourceDefinition", "ippools.margay.dev"),
    ] {
        assert!(
            kinds.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} missing"
        );
    }
    assert_eq!(
        base_docs
            .iter()
            .filter(|d| d.value["kind"] == "CustomResourceDefinition")
            .count(),
        margay_api::crds::all_crds().len()
    );
    let ds = find(&base_docs, "DaemonSet", "margay-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
    assert_eq!(
        pod["containers"][0]["livenessProbe"]["httpGet"]["path"],
        "/livez"
    );
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["port"],
        9099
    );
    assert!(
        pod["initContainers"][0]["command"][2]
            .as_str()
            .unwrap()
            .contains("/host/opt/cni/bin/margay")
    );
    validate(&validator, "base", &base_docs);
    let api = apply("base", &base).await;
    let out = ctl(&api, &["get", "ippools"]).expect(0);
    assert!(out.stdout.contains("10.244.0.0/16"), "{}", out.stdout);

    for o in OVERLAYS {
        let yaml = kustomize(&deploy().join("overlays").join(o));
        let d = docs(o, &yaml);
        let pool = &find(&d, "IPPool", "default-ipv4-ippool")["spec"];
        let bgp = &find(&d, "BGPConfiguration", "default")["spec"];
        match *o {
            "vxlan-always" => assert_eq!(pool["vxlanMode"], "Always"),
            "cross-subnet" => assert_eq!(pool["vxlanMode"], "CrossSubnet"),
            "route-reflectors" => {
                assert_eq!(bgp["nodeToNodeMeshEnabled"], false);
                let peer = &find(&d, "BGPPeer", "peer-with-route-reflectors")["spec"];
                assert_eq!(peer["peerSelector"], "margay.dev/route-reflector == 'true'");
                let rr = find(&d, "DaemonSet", "margay-route-reflector");
                assert!(
                    rr["spec"]["template"]["spec"]["containers"][0]["args"][0]
                        == "--role=route-reflector"
                );
                let agent = find(&d, "DaemonSet", "margay-agent");
                assert!(agent["spec"]["template"]["spec"]["affinity"].is_object());
            }
            "tor-peering" => {
                assert_eq!(bgp["nodeToNodeMeshEnabled"], true);
                let peer = &find(&d, "BGPPeer", "tor")["spec"];
                assert_eq!(peer["password"]["secretKeyRef"]["name"], "margay-bgp-tor");
                let role = find(&d, "Role", "margay-bgp-passwords");
                assert_eq!(role["rules"][0]["resourceNames"][0], "margay-bgp-tor");
            }
            other => panic!("no expectations for overlay {other}"),
        }
        validate(&validator, o, &d);
        apply(o, &yaml).await;
    }
}

const OTHER_VALUES: &str = "
image: {repository: registry.example/margay, tag: test}
agent: {logLevel: debug, mtu: 1400, extraEnv: {MARGAY_IPAM_GC_INTERVAL: 30s}}
encapsulation: {type: VXLAN, mode: CrossSubnet}
ipPools:
- {name: pool-a, cidr: 10.50.0.0/16, blockSize: 24, natOutgoing: true}
- {name: pool-v6, cidr: 'fd00:50::/48', blockSize: 122, vxlanMode: Always}
bgp: {asNumber: 65010, nodeToNodeMesh: true}
routeReflectors: {enabled: true, clusterID: 244.0.0.9}
torPeers:
- {name: tor-a, peerIP: 192.0.2.1, asNumber: 65000, keepaliveTime: 10s,
   passwordSecret: {name: tor-secret, key: password}}
- {name: tor-b, peerIP: '[2001:db8::1]:179', asNumber: 65001, nodeSelector: \"rack == 'b'\"}
";

#[tokio::test(flavor = "multi_thread")]
async fn helm_chart_lints_renders_validates_and_applies() {
    let helm = install("install-helm.sh");
    let validator = install("install-kubernetes-validate.sh");
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, OTHER_VALUES).unwrap();
    for v in [None, Some(values.as_path())] {
        let mut c = Command::new(&helm);
        c.args(["lint", "--strict"])
            .arg(deploy().join("helm/margay"));
        if let Some(v) = v {
            c.arg("--values").arg(v);
        }
        let out = run_program(c, None);
        assert_eq!(
            out.code, 0,
            "helm lint {v:?}:\n{}{}",
            out.stdout, out.stderr
        );
    }

    // Defaults: the same objects as the kustomize base.
    let default = helm_template(&helm, None);
    let d = docs("helm default", &default);
    let base = docs("base", &kustomize(&deploy().join("base")));
    let names = |ds: &[Document]| ds.iter().map(kind_name).collect::<BTreeSet<_>>();
    assert_eq!(
        names(&d),
        names(&base),
        "helm defaults and deploy/base differ"
    );
    for (kind, name) in [
        ("IPPool", "default-ipv4-ippool"),
        ("BGPConfiguration", "default"),
        ("ConfigMap", "margay-config"),
    ] {
        let (h, k) = (find(&d, kind, name), find(&base, kind, name));
        let field = if kind == "ConfigMap" { "data" } else { "spec" };
        for (key, value) in k[field].as_object().unwrap() {
            assert_eq!(&h[field][key], value, "{kind} {name} {field}.{key}");
        }
    }
    validate(&validator, "helm-default", &d);
    apply("helm default", &default).await;

    // Other values: every choice shows in the output.
    let other = helm_template(&helm, Some(&values));
    let d = docs("helm values", &other);
    assert_eq!(
        find(&d, "IPPool", "pool-a")["spec"]["vxlanMode"],
        "CrossSubnet"
    );
    assert_eq!(find(&d, "IPPool", "pool-v6")["spec"]["vxlanMode"], "Always");
    assert_eq!(
        find(&d, "BGPConfiguration", "default")["spec"]["nodeToNodeMeshEnabled"],
        false
    );
    assert_eq!(
        find(&d, "BGPConfiguration", "default")["spec"]["asNumber"],
        65010
    );
    assert_eq!(
        find(&d, "BGPPeer", "tor-a")["spec"]["password"]["secretKeyRef"]["name"],
        "tor-secret"
    );
    assert_eq!(
        find(&d, "BGPPeer", "tor-b")["spec"]["nodeSelector"],
        "rack == 'b'"
    );
    assert_eq!(
        find(&d, "Role", "margay-bgp-passwords")["rules"][0]["resourceNames"],
        serde_json::json!(["tor-secret"])
    );
    assert!(find(&d, "DaemonSet", "margay-route-reflector").is_object());
    let agent = find(&d, "DaemonSet", "margay-agent");
    assert_eq!(
        agent["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/margay:test"
    );
    let cm = &find(&d, "ConfigMap", "margay-config")["data"];
    assert_eq!(cm["MARGAY_MTU"], "1400");
    assert_eq!(cm["MARGAY_ROUTE_REFLECTOR_CLUSTER_ID"], "244.0.0.9");
    validate(&validator, "helm-values", &d);
    let api = apply("helm values", &other).await;
    let out = ctl(&api, &["get", "bgppeers"]).expect(0);
    assert_eq!(out.stdout.lines().count(), 4, "{}", out.stdout);

    // Bad values fail the render with the value named.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "encapsulation: {type: GRE}\n").unwrap();
    let mut c = Command::new(&helm);
    c.args(["template", "margay"])
        .arg(deploy().join("helm/margay"))
        .arg("--values")
        .arg(&bad);
    let out = run_program(c, None);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("encapsulation.type \"GRE\""),
        "{}",
        out.stderr
    );
}

/// The dashboard shows every metric the agent exports, and nothing else.
#[test]
fn grafana_dashboard_matches_the_agent_metrics() {
    let source = [
        "agent/src/metrics.rs",
        "agent/src/dataplane/policy/metrics.rs",
    ]
    .map(|f| std::fs::read_to_string(repo().join(f)).unwrap())
    .join("\n");
    // r.register("margay_...", ...)
    let registered: BTreeSet<String> = source
        .split("r.register(")
        .skip(1)
        .filter_map(|s| {
            s.trim_start()
                .strip_prefix('"')?
                .split('"')
                .next()
                .map(str::to_string)
        })
        .collect();
    assert!(registered.len() >= 10, "{registered:?}");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/margay-agent.json")).unwrap(),
    )
    .unwrap();
    let mut used = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("margay_") {
                    let base = ["_total", "_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    used.insert(base.to_string());
                }
            }
        }
    }
    let unknown: Vec<&String> = used.difference(&registered).collect();
    let missing: Vec<&String> = registered.difference(&used).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics the agent does not export: {unknown:?}"
    );
    assert!(
        missing.is_empty(),
        "agent metrics without a panel: {missing:?}"
    );
}
