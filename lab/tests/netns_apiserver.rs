//! `margay-lab apiserver` as a process: a listener inside a network namespace,
//! the ready file, persistence across SIGTERM and restart. Needs root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use margay_lab::netns::NetnsGuard;
use serde_json::Value;

/// The server process; killed on drop if the test did not stop it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, ns: &str) -> (Server, Value) {
    let ready = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let child = Command::new(env!("CARGO_BIN_EXE_margay-lab"))
        .args([
            "apiserver",
            "--listen",
            "127.0.0.1:0",
            "--listen-netns",
            &format!("{ns}=10.77.0.1:6443"),
        ])
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("margay-lab apiserver starts");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(bytes) = std::fs::read(&ready) {
            return (
                server,
                serde_json::from_slice(&bytes).expect("ready file is JSON"),
            );
        }
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join(format!("kubeconfig-{}", server.replace([':', '.'], "-")));
    let cfg = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("http://{server}")}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        "current-context": "c",
    });
    std::fs::write(&path, cfg.to_string()).expect("write kubeconfig");
    path
}

fn kubectl(ns: Option<&NetnsGuard>, kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let mut cmd = match ns {
        Some(ns) => ns.command("kubectl"),
        None => Command::new("kubectl"),
    };
    let out = cmd
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn listens_in_a_namespace_and_keeps_state_across_sigterm() {
    let ns = NetnsGuard::create_unique("mgy-apitest").expect("create netns");
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    ns.ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");

    let (mut server, ready) = start(dir.path(), ns.name());
    assert_eq!(ready["pid"].as_u64(), Some(u64::from(server.0.id())));
    let listen: Vec<String> = ready["listen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listen.len(), 2, "{ready}");
    assert!(
        listen[0].starts_with("127.0.0.1:") && !listen[0].ends_with(":0"),
        "{ready}"
    );
    assert_eq!(listen[1], "10.77.0.1:6443");

    // From inside the namespace, through the namespace's listener.
    let inner = kubeconfig(dir.path(), &listen[1]);
    let out = kubectl(
        Some(&ns),
        &inner,
        &cache,
        &["create", "configmap", "from-netns", "--from-literal=a=b"],
    );
    assert!(out.contains("configmap/from-netns created"), "{out}");
    // The same store from the root namespace, through loopback.
    let outer = kubeconfig(dir.path(), &listen[0]);
    let before: Value = serde_json::from_str(&kubectl(
        None,
        &outer,
        &cache,
        &["get", "configmap", "from-netns", "-o", "json"],
    ))
    .unwrap();

    // SIGTERM: state written, exit 0.
    // SAFETY: plain kill(2) on the child we spawned.
    assert_eq!(
        unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) },
        0
    );
    let status = server.0.wait().expect("wait for the server");
    assert!(status.success(), "exit status {status:?}");

    let (_server, ready) = start(dir.path(), ns.name());
    let outer = kubeconfig(dir.path(), ready["listen"][0].as_str().unwrap());
    let after: Value = serde_json::from_str(&kubectl(
        None,
        &outer,
        &cache,
        &["get", "configmap", "from-netns", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    let ns_list = kubectl(None, &outer, &cache, &["get", "namespaces", "-o", "name"]);
    assert_eq!(ns_list.lines().count(), 4, "{ns_list}");
}

#[test]
fn bad_flags_are_refused_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_margay-lab"))
        .args([
            "apiserver",
            "--listen-netns",
            "margay-no-such-namespace=10.0.0.1:6443",
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("margay-no-such-namespace"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_margay-lab"))
        .args(["apiserver", "--listen", "nonsense"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid listen address \"nonsense\""));
}
