//! Shared by the margayctl tests: an API server with Margay's CRDs, running
//! margayctl against it, and golden files.
#![allow(dead_code)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use margay_lab::apiserver::TestApiServer;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// An emulated API server with every margay.dev CRD installed.
pub async fn api_with_crds() -> TestApiServer {
    let api = TestApiServer::start().await.expect("API server starts");
    let crds: Api<CustomResourceDefinition> = Api::all(api.client());
    for crd in margay_api::crds::all_crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("CRD created");
    }
    api
}

pub fn margayctl_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_margayctl"))
}

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Requires exit code `code`; returns self for chaining.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `program args` with `stdin`, blocking (callers use a multi-thread runtime).
pub fn run_program(mut cmd: Command, stdin: Option<&str>) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("program starts");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    Run::from(child.wait_with_output().expect("program finishes"))
}

/// margayctl with `--kubeconfig` of `api`.
pub fn ctl(api: &TestApiServer, args: &[&str]) -> Run {
    ctl_in(api, args, None)
}

pub fn ctl_in(api: &TestApiServer, args: &[&str], stdin: Option<&str>) -> Run {
    let mut c = Command::new(margayctl_path());
    c.arg("--kubeconfig").arg(api.kubeconfig_path()).args(args);
    c.env_remove("KUBECONFIG");
    run_program(c, stdin)
}

/// Writes `text` to a file in `dir`, returns its path.
pub fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Compares `actual` with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites it.
#[track_caller]
pub fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert!(
        want == actual,
        "output differs from {} (UPDATE_GOLDEN=1 rewrites it)\n--- want\n{want}\n--- got\n{actual}",
        path.display()
    );
}

/// Masks what changes from run to run: ages in tables (the AGE column, last),
/// and uid / resourceVersion / creationTimestamp / server URLs in YAML or JSON.
pub fn stable(text: &str, server_url: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut age_table = false;
    for l in text.lines() {
        let l = l.replace(server_url, "http://API");
        if l.starts_with("NAME") {
            age_table = l.trim_end().ends_with("AGE");
            lines.push(l);
            continue;
        }
        if l.trim().is_empty() {
            age_table = false;
        }
        let masked = if age_table {
            match l.trim_end().rsplit_once(' ') {
                Some((head, _)) => format!("{head} <age>"),
                None => l.clone(),
            }
        } else {
            let mut m = l.clone();
            for key in ["uid", "resourceVersion", "creationTimestamp", "checkedAt"] {
                for (pat, quote) in [(format!("{key}: "), ""), (format!("\"{key}\": "), "\"")] {
                    if let Some(i) = m.find(&pat)
                        && !m[i + pat.len()..].starts_with("\"\"")
                    {
                        let tail = if m.trim_end().ends_with(',') { "," } else { "" };
                        m = format!("{}{pat}{quote}<{key}>{quote}{tail}", &m[..i]);
                    }
                }
            }
            m
        };
        lines.push(masked);
    }
    lines.join("\n") + if text.ends_with('\n') { "\n" } else { "" }
}
