//! The generated reference pages in docs/reference/ match what margayctl
//! generates (`UPDATE_GOLDEN=1` rewrites them), and `margayctl docs` prints them.

mod common;

use common::{margayctl_path, run_program};
use std::path::PathBuf;
use std::process::Command;

fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/reference")
}

#[track_caller]
fn same_as_file(name: &str, generated: &str) {
    let path = docs_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, generated).expect("write reference page");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/reference/{name} is out of date: run `UPDATE_GOLDEN=1 cargo nextest run -p margay-ctl docs`"
    );
}

#[test]
fn cli_reference_is_up_to_date() {
    let page = margay_ctl::docs::cli_reference();
    for cmd in [
        "get",
        "apply",
        "create",
        "replace",
        "delete",
        "label",
        "ipam show",
        "ipam check",
        "ipam release",
        "ipam configure",
        "node status",
        "bgp peers",
        "bgp routes",
        "version",
        "diags",
    ] {
        assert!(
            page.contains(&format!("## `margayctl {cmd}`")),
            "{cmd} missing"
        );
    }
    assert!(
        !page.contains("## `margayctl docs`"),
        "the hidden docs command is not documented"
    );
    same_as_file("margayctl.md", &page);
    let mut c = Command::new(margayctl_path());
    c.args(["docs", "cli"]);
    assert_eq!(run_program(c, None).expect(0).stdout, page);
}

#[test]
fn resources_reference_is_up_to_date() {
    let page = margay_ctl::docs::resources_reference();
    for crd in margay_api::crds::all_crds() {
        assert!(page.contains(&format!("## {}\n", crd.spec.names.kind)));
    }
    for field in [
        "`cidr`",
        "`blockSize`",
        "`peerIP`",
        "`password.secretKeyRef.name`",
        "`ingress[].destination.ports`",
        "`strictAffinity`",
    ] {
        assert!(page.contains(field), "{field} missing");
    }
    same_as_file("resources.md", &page);
    let mut c = Command::new(margayctl_path());
    c.args(["docs", "resources"]);
    assert_eq!(run_program(c, None).expect(0).stdout, page);
}
