//! The binary as a whole: `version`, the kubectl plugin (`kubectl margay ...`
//! through the real kubectl), help and exit codes, the kubeconfig like kubectl
//! (KUBECONFIG, --context).

mod common;

use common::{api_with_crds, ctl, golden, margayctl_path, run_program, stable};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn version_shows_client_server_and_agents() {
    let api = api_with_crds().await;
    let nodes: Api<Node> = Api::all(api.client());
    for (name, ann) in [("node1", Some("0.1.0")), ("node2", None)] {
        let mut meta = json!({"name": name});
        if let Some(v) = ann {
            meta["annotations"] = json!({"margay.dev/agent-version": v});
        }
        let n: Node = serde_json::from_value(json!({"metadata": meta})).unwrap();
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(api.client(), "kube-system");
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "margay-agent-x", "labels": {"app.kubernetes.io/name": "margay-agent"}},
        "spec": {"nodeName": "node1", "containers": [{"name": "margay-agent", "image": "ghcr.io/margay-dev/margay:0.1.0"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();

    let out = ctl(&api, &["version"]).expect(0);
    let text =
        stable(&out.stdout, &format!("{}/", api.url())).replace(std::env::consts::ARCH, "ARCH");
    golden("version.txt", &text);
    let out = ctl(&api, &["version", "-o", "json"]).expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["client"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["agents"][0]["version"], "0.1.0");
    assert_eq!(v["agents"][1]["version"], "unknown");
    assert_eq!(v["agents"][0]["image"], "ghcr.io/margay-dev/margay:0.1.0");
    // --client needs no server at all.
    let mut c = Command::new(margayctl_path());
    c.args(["version", "--client", "--kubeconfig", "/nonexistent"]);
    let out = run_program(c, None).expect(0);
    assert!(out.stdout.starts_with("Client version:") && !out.stdout.contains("API server"));
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_margay_runs_the_plugin() {
    let api = api_with_crds().await;
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(margayctl_path(), bin.path().join("kubectl-margay")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new("kubectl");
        c.arg("margay")
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", api.kubeconfig_path());
        run_program(c, stdin)
    };
    let pool =
        "apiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.5.0.0/16}\n";
    let out = kubectl(&["apply", "-f", "-"], Some(pool)).expect(0);
    assert_eq!(out.stdout, "ippool.margay.dev/p created\n");
    let out = kubectl(&["get", "ippools"], None).expect(0);
    assert!(out.stdout.contains("10.5.0.0/16"), "{}", out.stdout);
    // Exit codes pass through kubectl.
    kubectl(&["get", "widgets"], None).expect(2);
    kubectl(&["get", "ippool", "missing"], None).expect(1);
    // Help names the plugin as the user typed it.
    let out = kubectl(&["--help"], None).expect(0);
    assert!(
        out.stdout.contains("Usage: kubectl margay"),
        "{}",
        out.stdout
    );
    // kubectl itself lists the plugin.
    let mut c = Command::new("kubectl");
    c.args(["plugin", "list"]).env("PATH", &path);
    let out = run_program(c, None);
    assert!(out.stdout.contains("kubectl-margay"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubeconfig_contexts_like_kubectl() {
    let api = api_with_crds().await;
    let dir = tempfile::tempdir().unwrap();
    // A kubeconfig whose current context points nowhere, with a second
    // context for the real server.
    let kc = dir.path().join("config");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster: {{server: http://127.0.0.1:9}}\n- name: lab\n  cluster: {{server: {}}}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: dead\n  context: {{cluster: dead, user: u}}\n- name: lab\n  context: {{cluster: lab, user: u}}\ncurrent-context: dead\n",
            api.url()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut c = Command::new(margayctl_path());
        c.args(args).env("KUBECONFIG", &kc);
        run_program(c, None)
    };
    let out = run(&["get", "ippools"]).expect(1);
    assert!(out.stderr.contains("127.0.0.1:9"), "{}", out.stderr);
    run(&["get", "ippools", "--context", "lab"]).expect(0);
    run(&["--context", "nope", "get", "ippools"]).expect(1);
    // --kubeconfig wins over KUBECONFIG.
    let mut c = Command::new(margayctl_path());
    c.args(["get", "ippools", "--kubeconfig"])
        .arg(api.kubeconfig_path())
        .env("KUBECONFIG", &kc);
    run_program(c, None).expect(0);
}

#[test]
fn every_command_has_help_with_examples() {
    let cmd = margay_ctl::cli::command("margayctl");
    let mut missing = Vec::new();
    fn walk(c: &clap::Command, path: String, missing: &mut Vec<String>) {
        for s in c.get_subcommands() {
            if s.get_name() == "help" || s.is_hide_set() {
                continue;
            }
            let p = format!("{path} {}", s.get_name());
            if s.has_subcommands() {
                walk(s, p, missing);
            } else if !s
                .get_after_help()
                .is_some_and(|h| h.to_string().contains("Examples:"))
            {
                missing.push(p);
            }
        }
    }
    walk(&cmd, "margayctl".into(), &mut missing);
    assert!(missing.is_empty(), "commands without examples: {missing:?}");
    let mut c = Command::new(margayctl_path());
    c.args(["ipam", "check", "--help"]);
    let out = run_program(c, None).expect(0);
    assert!(out.stdout.contains("Exit code 0"), "{}", out.stdout);
}
