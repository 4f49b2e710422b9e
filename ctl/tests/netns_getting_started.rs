//! docs/getting-started.md, run in the lab: every command of its `sh` blocks,
//! in document order, in one shell, each checked for its exit code (0, or the
//! `# exit N` its comment announces). The YAML blocks are the files the
//! commands apply, written under their `metadata.name`. The commands that
//! cannot run in the lab are listed in [`NOT_IN_LAB`] with the reason, which
//! the page says too; a listed command that the page no longer has fails the
//! test, so page and test cannot drift apart.

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::margayctl_path;

/// Commands (by prefix) the lab cannot run, and why.
const NOT_IN_LAB: &[(&str, &str)] = &[
    (
        "make build",
        "the test runs on the binaries its own build made",
    ),
    (
        "kubectl -n kube-system rollout status ds/margay-agent",
        "nothing runs DaemonSets in the lab: its agents are processes",
    ),
    (
        "helm install ",
        "the lab has no Helm release storage (the chart is checked by tests/manifests.rs)",
    ),
    (
        "cargo build --release --bins",
        "the test uses the margayctl its build made",
    ),
    (
        "install target/release/margayctl ",
        "would change the machine: the test puts margayctl on PATH",
    ),
    (
        "ln -s margayctl /usr/local/bin/kubectl-margay",
        "would change the machine: the test puts kubectl-margay on PATH",
    ),
    (
        "kubectl -n kube-system exec ds/margay-agent -- ",
        "the lab's agents are processes, not pods (diags is tested by netns_diags.rs)",
    ),
];

/// How long the whole page may take (a 3-node lab, three pods).
const PAGE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, PartialEq)]
struct DocCommand {
    text: String,
    exit: i32,
}

#[derive(Debug, Default)]
struct Page {
    commands: Vec<DocCommand>,
    /// (file name, YAML) for every `yaml` block.
    files: Vec<(String, String)>,
}

/// The commands and files of a Markdown page.
fn parse(markdown: &str) -> Result<Page, String> {
    let mut page = Page::default();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let lang = match line.trim_end().strip_prefix("```") {
            Some(l) if !l.is_empty() => l.to_string(),
            _ => continue,
        };
        let mut block = Vec::new();
        for l in lines.by_ref() {
            if l.trim_end() == "```" {
                break;
            }
            block.push(l);
        }
        match lang.as_str() {
            "sh" => page.commands.extend(shell_commands(&block)?),
            "yaml" => {
                let text = block.join("\n") + "\n";
                let name = yaml_name(&text)
                    .ok_or_else(|| format!("a yaml block without metadata.name:\n{text}"))?;
                page.files.push((format!("{name}.yaml"), text));
            }
            _ => {}
        }
    }
    Ok(page)
}

/// Commands of one `sh` block: comments stripped, `\` continuations joined,
/// the expected exit code from a comment that starts with `exit N`.
fn shell_commands(block: &[&str]) -> Result<Vec<DocCommand>, String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for raw in block {
        let (code, comment) = match raw.find(" #").or_else(|| raw.find('#').filter(|i| *i == 0)) {
            Some(i) => (
                &raw[..i],
                raw[i..].trim_start().trim_start_matches('#').trim(),
            ),
            None => (*raw, ""),
        };
        let code = code.trim();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head.trim());
            pending.push(' ');
            continue;
        }
        pending.push_str(code);
        let text = std::mem::take(&mut pending).trim().to_string();
        if text.is_empty() {
            continue;
        }
        let exit = match comment.strip_prefix("exit ") {
            Some(rest) => {
                let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                n.parse()
                    .map_err(|_| format!("`{text}`: comment {comment:?} has no exit code"))?
            }
            None => 0,
        };
        out.push(DocCommand { text, exit });
    }
    Ok(out)
}

fn yaml_name(text: &str) -> Option<String> {
    let mut in_metadata = false;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("metadata:") {
            let rest = rest.trim();
            if let Some(inline) = rest.strip_prefix('{') {
                let name = inline.split("name:").nth(1)?;
                return Some(name.trim().split([',', '}']).next()?.trim().to_string());
            }
            in_metadata = true;
        } else if in_metadata && let Some(name) = line.trim_start().strip_prefix("name:") {
            return Some(name.trim().to_string());
        }
    }
    None
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `margay-lab down` for the test's state directory, whatever happens.
struct LabDown {
    lab: PathBuf,
    state: PathBuf,
}

impl Drop for LabDown {
    fn drop(&mut self) {
        let _ = Command::new(&self.lab)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("down")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn the_page_parses_into_commands_and_files() {
    let page = parse(
        "x\n```sh\nmake build   # exit 2: why\nhelm install a b \\\n  --set c=d\n\n```\n```yaml\nkind: X\nmetadata:\n  name: n1\n```\n```yaml\nmetadata: {name: n2, namespace: s}\n```\n",
    )
    .expect("parses");
    assert_eq!(
        page.commands,
        vec![
            DocCommand {
                text: "make build".into(),
                exit: 2
            },
            DocCommand {
                text: "helm install a b --set c=d".into(),
                exit: 0
            },
        ]
    );
    let names: Vec<&str> = page.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["n1.yaml", "n2.yaml"]);
}

#[test]
fn every_getting_started_command_works_in_the_lab() {
    let page_path = repo().join("docs/getting-started.md");
    let markdown = std::fs::read_to_string(&page_path).expect("docs/getting-started.md");
    let page = parse(&markdown).expect("the page parses");

    // Which commands run, and whether every exception is still on the page.
    let skipped = |c: &DocCommand| NOT_IN_LAB.iter().any(|(p, _)| c.text.starts_with(p));
    for (prefix, why) in NOT_IN_LAB {
        assert!(
            page.commands.iter().any(|c| c.text.starts_with(prefix)),
            "NOT_IN_LAB lists `{prefix}` ({why}), which the page no longer has"
        );
    }
    let runs: Vec<&DocCommand> = page.commands.iter().filter(|c| !skipped(c)).collect();
    assert!(
        runs.iter().any(|c| c.text.contains("margay-lab up")),
        "the page no longer brings a lab up: {runs:?}"
    );

    // The page's working directory: its YAML files, and the repository's
    // `deploy/` and `target/` it refers to.
    let work = tempfile::tempdir().expect("tempdir");
    let margayctl = margayctl_path();
    let target_debug = margayctl.parent().expect("target/debug").to_path_buf();
    let target = target_debug.parent().expect("target").to_path_buf();
    std::os::unix::fs::symlink(repo().join("deploy"), work.path().join("deploy")).expect("link");
    std::os::unix::fs::symlink(&target, work.path().join("target")).expect("link");
    for (name, text) in &page.files {
        std::fs::write(work.path().join(name), text).expect("write yaml");
    }
    // margayctl and the kubectl plugin on PATH, as the page's install does.
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    std::os::unix::fs::symlink(&margayctl, bin.join("margayctl")).expect("link");
    std::os::unix::fs::symlink(&margayctl, bin.join("kubectl-margay")).expect("link");
    let state = work.path().join("lab");
    let _down = LabDown {
        lab: target_debug.join("margay-lab"),
        state: state.clone(),
    };

    let mut script = String::from("set -u\nunset KUBECONFIG\n");
    for c in &runs {
        let quoted = c.text.replace('\'', "'\\''");
        script.push_str(&format!(
            "echo '+ {quoted}' >&2\n{}\nrc=$?\nif [ $rc -ne {} ]; then echo 'getting-started: `{quoted}` exited '$rc', the page says {}' >&2; exit 1; fi\n",
            c.text, c.exit, c.exit
        ));
    }
    let script_path = work.path().join("page.sh");
    std::fs::write(&script_path, &script).expect("script");

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg(&script_path)
        .current_dir(work.path())
        .env("PATH", path)
        .env("MARGAY_LAB_STATE_DIR", &state)
        .env("HOME", work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    // Read both pipes on threads so a chatty command cannot block on them.
    let (mut so, mut se) = (
        child.stdout.take().expect("stdout"),
        child.stderr.take().expect("stderr"),
    );
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + PAGE_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the page's commands failed (status {status:?}, limit {PAGE_TIMEOUT:?})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("getting-started:"),
        "a command failed:\n{stderr}"
    );
    let ran = stderr.lines().filter(|l| l.starts_with("+ ")).count();
    assert_eq!(ran, runs.len(), "not every command ran:\n{stderr}");
}
