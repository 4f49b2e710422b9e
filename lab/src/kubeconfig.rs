//! Kubeconfig files for the lab's API server.

/// A kubeconfig with one cluster, user and context named `margay-lab`, pointing
/// at `server` over plain HTTP (the emulator has no TLS or authentication).
pub fn render(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: margay-lab
  cluster:
    server: {server}
users:
- name: margay-lab
  user: {{}}
contexts:
- name: margay-lab
  context:
    cluster: margay-lab
    user: margay-lab
    namespace: default
current-context: margay-lab
"
    )
}
