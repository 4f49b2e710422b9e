//! The API emulator driven by real `kubectl` (v1.32) subprocesses: discovery,
//! get in every output format, watch, create, client-side apply, label,
//! annotate, patch, replace, delete, a CRD and its object in one file, and two
//! writers racing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use margay_lab::apiserver::TestApiServer;
use serde_json::Value;

struct Kubectl<'a> {
    api: &'a TestApiServer,
}

impl Kubectl<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.api.kubectl();
        c.args(args);
        c
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = self.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl finishes")
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and requires failure; returns stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a, None)).expect("kubectl printed JSON")
    }
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: main
    image: nginx:1
    ports: [{containerPort: 80}]
  - name: side
    image: busybox
"#;

#[tokio::test(flavor = "multi_thread")]
async fn get_in_every_format_and_discovery() {
    let api = TestApiServer::start().await.unwrap();
    let k = Kubectl { api: &api };
    let table = k.ok(&["get", "namespaces"], None);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATUS") && lines[0].contains("AGE"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("kube-system") && l.contains("Active")),
        "{table}"
    );
    let ns = k.json(&["get", "ns", "default"]);
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "default"
    );
    let yaml = k.ok(&["get", "ns", "kube-public", "-o", "yaml"], None);
    assert!(
        yaml.contains("name: kube-public") && yaml.contains("phase: Active"),
        "{yaml}"
    );

    k.ok(&["create", "-f", "-"], Some(POD));
    k.ok(
        &[
            "patch",
            "pod",
            "web",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"phase":"Running","podIP":"10.9.0.4"}}"#,
        ],
        None,
    );
    let wide = k.ok(&["get", "pods", "-o", "wide"], None);
    let header = wide.lines().next().unwrap_or("");
    for col in [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ] {
        assert!(header.contains(col), "missing {col}: {wide}");
    }
    let row = wide.lines().nth(1).unwrap_or("");
    assert!(
        row.starts_with("web")
            && row.contains("0/2")
            && row.contains("Running")
            && row.contains("10.9.0.4"),
        "{wide}"
    );
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app=web", "-o", "name"], None)
            .trim(),
        "pod/web"
    );
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app!=web", "-o", "name"], None)
            .trim(),
        ""
    );
    assert_eq!(
        k.ok(
            &[
                "get",
                "pods",
                "--field-selector",
                "status.phase=Running",
                "-o",
                "name"
            ],
            None
        )
        .trim(),
        "pod/web"
    );
    let custom = k.ok(
        &[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.spec.containers[*].name}",
        ],
        None,
    );
    assert_eq!(custom, "main side");
    let resources = k.ok(&["api-resources", "--no-headers"], None);
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("networkpolicies") && l.contains("netpol")),
        "{resources}"
    );
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("leases") && l.contains("coordination.k8s.io/v1")),
        "{resources}"
    );
    let missing = k.fails(&["get", "pod", "nope"], None);
    assert!(
        missing.contains("NotFound") && missing.contains("pods \"nope\" not found"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_label_annotate_patch_replace_delete() {
    let api = TestApiServer::start().await.unwrap();
    let k = Kubectl { api: &api };
    assert!(
        k.ok(&["apply", "-f", "-"], Some(POD))
            .contains("pod/web created")
    );
    let live = k.json(&["get", "pod", "web"]);
    let last = live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap_or("");
    assert!(last.contains("\"nginx:1\""), "last-applied missing: {live}");
    assert!(
        k.ok(&["apply", "-f", "-"], Some(POD))
            .contains("pod/web unchanged")
    );

    // Drop the side container and bump the image: a strategic merge patch with
    // $setElementOrder and a $patch: delete, computed from last-applied.
    let changed = POD
        .replace("nginx:1", "nginx:2")
        .replace("  - name: side\n    image: busybox\n", "");
    assert!(
        k.ok(&["apply", "-f", "-"], Some(&changed))
            .contains("pod/web configured")
    );
    let live = k.json(&["get", "pod", "web"]);
    let names: Vec<&str> = live["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["main"]);
    assert_eq!(live["spec"]["containers"][0]["image"], "nginx:2");
    assert_eq!(live["metadata"]["generation"], 2);

    k.ok(&["label", "pod", "web", "tier=front"], None);
    assert!(
        k.fails(&["label", "pod", "web", "tier=back"], None)
            .contains("already has a value")
    );
    k.ok(&["label", "pod", "web", "tier=back", "--overwrite"], None);
    k.ok(&["annotate", "pod", "web", "note=hello"], None);
    k.ok(
        &[
            "patch",
            "pod",
            "web",
            "-p",
            r#"{"spec":{"containers":[{"name":"main","env":[{"name":"A","value":"1"}]}]}}"#,
        ],
        None,
    );
    k.ok(
        &[
            "patch",
            "pod",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
        ],
        None,
    );
    k.ok(
        &[
            "patch",
            "pod",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/labels/merged"}]"#,
        ],
        None,
    );
    let live = k.json(&["get", "pod", "web"]);
    assert_eq!(
        live["metadata"]["labels"],
        serde_json::json!({"app": "web", "tier": "back"})
    );
    assert_eq!(live["metadata"]["annotations"]["note"], "hello");
    assert_eq!(
        live["spec"]["containers"][0]["env"][0]["name"], "A",
        "strategic patch merged into the named container"
    );
    assert_eq!(live["spec"]["containers"][0]["image"], "nginx:2");
    let bad_json_patch = k.fails(
        &[
            "patch",
            "pod",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/metadata/name","value":"x"}]"#,
        ],
        None,
    );
    assert!(bad_json_patch.contains("is invalid"), "{bad_json_patch}");

    // replace: fresh resourceVersion wins, the same stale object again conflicts.
    let mut obj = k.json(&["get", "pod", "web"]);
    obj["metadata"]["labels"]["replaced"] = "1".into();
    let body = obj.to_string();
    assert!(
        k.ok(&["replace", "-f", "-"], Some(&body))
            .contains("pod/web replaced")
    );
    let conflict = k.fails(&["replace", "-f", "-"], Some(&body));
    assert!(
        conflict.contains("Conflict") && conflict.contains("the object has been modified"),
        "{conflict}"
    );

    assert!(
        k.ok(&["delete", "pod", "web"], None)
            .contains("pod \"web\" deleted")
    );
    assert!(k.fails(&["get", "pod", "web"], None).contains("NotFound"));
    // Typed kubectl commands send protobuf bodies.
    let exists = k.ok(&["create", "configmap", "c1", "--from-literal=a=b"], None);
    assert!(exists.contains("configmap/c1 created"));
    assert_eq!(k.json(&["get", "configmap", "c1"])["data"]["a"], "b");
    k.ok(&["create", "namespace", "team-b"], None);
    k.ok(
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "-n",
            "team-b",
            "--from-literal=pw=hunter2",
        ],
        None,
    );
    assert_eq!(
        k.json(&["get", "secret", "s1", "-n", "team-b"])["data"]["pw"],
        "aHVudGVyMg=="
    );
    k.ok(&["create", "serviceaccount", "robot"], None);
    assert!(
        k.fails(&["create", "configmap", "c1", "--from-literal=a=b"], None)
            .contains("configmaps \"c1\" already exists")
    );
}

const CRD_AND_OBJECT: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.lab.margay.dev
spec:
  group: lab.margay.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              mode: {type: string, default: fast}
---
apiVersion: lab.margay.dev/v1
kind: Widget
metadata:
  name: w1
spec:
  size: 3
"#;

#[tokio::test(flavor = "multi_thread")]
async fn apply_a_crd_and_its_object_from_one_file() {
    let api = TestApiServer::start().await.unwrap();
    let k = Kubectl { api: &api };
    // As against a real cluster: kubectl maps every document before applying
    // any, so the first run creates the CRD and reports the object's kind as
    // unknown; once the CRD is established the same file applies completely.
    let first = k.run(&["apply", "-f", "-"], Some(CRD_AND_OBJECT));
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
    );
    assert!(!first.status.success());
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.lab.margay.dev created"
        ),
        "{out}"
    );
    assert!(
        err.contains("no matches for kind \"Widget\" in version \"lab.margay.dev/v1\"")
            && err.contains("ensure CRDs are installed first"),
        "{err}"
    );
    k.ok(
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.lab.margay.dev",
            "--timeout=10s",
        ],
        None,
    );
    let second = k.ok(&["apply", "-f", "-"], Some(CRD_AND_OBJECT));
    assert!(
        second.contains("widgets.lab.margay.dev unchanged")
            && second.contains("widget.lab.margay.dev/w1 created"),
        "{second}"
    );
    let again = k.ok(&["apply", "-f", "-"], Some(CRD_AND_OBJECT));
    assert!(
        again.contains("widgets.lab.margay.dev unchanged") && again.contains("w1 unchanged"),
        "{again}"
    );
    let table = k.ok(&["get", "wdg"], None);
    assert!(
        table.lines().next().unwrap_or("").contains("SIZE"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("w1") && l.trim_end().ends_with('3')),
        "{table}"
    );
    let w = k.json(&["get", "widget", "w1"]);
    assert_eq!(w["spec"]["mode"], "fast", "schema default applied");
    let invalid = k.fails(
        &["apply", "-f", "-"],
        Some(&CRD_AND_OBJECT.replace("size: 3", "size: 0")),
    );
    assert!(
        invalid.contains("spec.size") && invalid.contains("greater than or equal to 1"),
        "{invalid}"
    );
    let unknown = k.fails(
        &["apply", "-f", "-"],
        Some(&CRD_AND_OBJECT.replace("size: 3", "size: 3\n  colour: red")),
    );
    assert!(
        unknown.contains("unknown field \"spec.colour\""),
        "{unknown}"
    );
    k.ok(&["delete", "crd", "widgets.lab.margay.dev"], None);
    let gone = k.fails(&["get", "widgets.lab.margay.dev"], None);
    assert!(
        gone.contains("the server doesn't have a resource type"),
        "{gone}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_policy_validation_errors_name_the_field() {
    let api = TestApiServer::start().await.unwrap();
    let k = Kubectl { api: &api };
    let np = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8}}]
    ports: [{port: 8000, endPort: 8080}]
"#;
    k.ok(&["apply", "-f", "-"], Some(np));
    let np_out = k.json(&["get", "netpol", "np"]);
    assert_eq!(
        np_out["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let table = k.ok(&["get", "netpol"], None);
    assert!(
        table.contains("POD-SELECTOR") && table.contains("app=web"),
        "{table}"
    );
    let err = k.fails(
        &["apply", "-f", "-"],
        Some(&np.replace("endPort: 8080", "endPort: 80")),
    );
    assert!(
        err.contains("is invalid") && err.contains("spec.egress[0].ports[0].endPort"),
        "{err}"
    );
    let err = k.fails(
        &["apply", "-f", "-"],
        Some(&np.replace("{ipBlock: {cidr: 10.0.0.0/8}}", "{}")),
    );
    assert!(
        err.contains("spec.egress[0].to[0]: Required value: must specify a peer"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_kubectl_writers_racing_exactly_one_wins() {
    let api = TestApiServer::start().await.unwrap();
    let k = Kubectl { api: &api };
    k.ok(
        &["create", "configmap", "shared", "--from-literal=v=0"],
        None,
    );
    for round in 0..5 {
        let base = k.json(&["get", "configmap", "shared"]);
        let children: Vec<_> = (0..2)
            .map(|w| {
                let mut obj = base.clone();
                obj["data"]["v"] = format!("{round}-{w}").into();
                let mut c = k.cmd(&["replace", "-f", "-"]);
                c.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = c.spawn().expect("kubectl runs");
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(obj.to_string().as_bytes())
                    .expect("write");
                child
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("kubectl finishes"))
            .collect();
        let wins = outs.iter().filter(|o| o.status.success()).count();
        let conflicts = outs
            .iter()
            .filter(|o| String::from_utf8_lossy(&o.stderr).contains("Error from server (Conflict)"))
            .count();
        assert_eq!((wins, conflicts), (1, 1), "round {round}: {outs:?}");
    }
}

/// Reads lines from a child's stdout on a thread, so the test can wait for one.
fn line_reader(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.iter().any(|l| want(l)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("timed out; watch printed: {seen:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn get_watch_follows_changes() {
    let api = TestApiServer::start().await.unwrap();
    let k = Kubectl { api: &api };
    k.ok(
        &["create", "configmap", "before", "--from-literal=a=b"],
        None,
    );
    let mut child = k
        .cmd(&[
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "jsonpath={.type} {.object.metadata.name} {.object.data.a}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    let rx = line_reader(&mut child);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, |l| l == "ADDED before b");
    k.ok(
        &["create", "configmap", "during", "--from-literal=a=1"],
        None,
    );
    wait_for_line(&rx, &mut seen, |l| l == "ADDED during 1");
    k.ok(
        &[
            "patch",
            "configmap",
            "during",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
        ],
        None,
    );
    wait_for_line(&rx, &mut seen, |l| l == "MODIFIED during 2");
    k.ok(&["delete", "configmap", "during"], None);
    wait_for_line(&rx, &mut seen, |l| l.starts_with("DELETED during"));
    let _ = child.kill();
    let _ = child.wait();

    // The human-readable form streams Table rows.
    let mut child = k
        .cmd(&["get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl runs");
    let rx = line_reader(&mut child);
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, |l| {
        l.starts_with("NAME") && l.contains("DATA")
    });
    k.ok(
        &[
            "create",
            "configmap",
            "late",
            "--from-literal=x=y",
            "--from-literal=z=w",
        ],
        None,
    );
    wait_for_line(&rx, &mut seen, |l| {
        l.split_whitespace().collect::<Vec<_>>()[..2] == ["late", "2"]
    });
    let _ = child.kill();
    let _ = child.wait();
}
