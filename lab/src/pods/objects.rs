//! The Kubernetes objects the pod runtime writes: the Pod as a user would
//! create it (scheduled to a node), and the status a kubelet would report.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::spec::PodSpec;

/// The image name lab pods claim to run.
pub const POD_IMAGE: &str = "margay-lab/pod-server";

/// The Pod object for `spec`: one container whose ports are the served ports,
/// with names and host ports where asked (so named ports resolve).
pub fn pod_object(spec: &PodSpec) -> Value {
    let ports: Vec<Value> = spec
        .served_ports()
        .into_iter()
        .map(|p| {
            let mut port = json!({"containerPort": p.port, "protocol": p.protocol.k8s()});
            if let Some((name, _)) = spec.named_ports.iter().find(|(_, np)| **np == p) {
                port["name"] = name.clone().into();
            }
            if let Some((host, _)) = spec.host_ports.iter().find(|(_, hp)| **hp == p) {
                port["hostPort"] = (*host).into();
            }
            port
        })
        .collect();
    let mut container = json!({"name": "server", "image": POD_IMAGE});
    if !ports.is_empty() {
        container["ports"] = Value::Array(ports);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": spec.labels,
            "annotations": spec.annotations,
        },
        "spec": {
            "nodeName": spec.node,
            "containers": [container],
        },
    })
}

/// The status a kubelet reports for a running, ready pod.
pub fn running_status(
    pod_ips: &[IpAddr],
    host_ips: &[IpAddr],
    container_id: &str,
    started_at: &str,
) -> Value {
    let ips =
        |v: &[IpAddr]| -> Vec<Value> { v.iter().map(|ip| json!({"ip": ip.to_string()})).collect() };
    let condition = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": started_at});
    json!({
        "status": {
            "phase": "Running",
            "podIP": pod_ips.first().map(ToString::to_string),
            "podIPs": ips(pod_ips),
            "hostIP": host_ips.first().map(ToString::to_string),
            "hostIPs": ips(host_ips),
            "startTime": started_at,
            "conditions": [
                condition("PodReadyToStartContainers"),
                condition("Initialized"),
                condition("Ready"),
                condition("ContainersReady"),
                condition("PodScheduled"),
            ],
            "containerStatuses": [{
                "name": "server",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "image": POD_IMAGE,
                "imageID": "",
                "containerID": format!("margay-lab://{container_id}"),
                "state": {"running": {"startedAt": started_at}},
            }],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::spec::Protocol;

    #[test]
    fn the_pod_carries_named_and_host_ports() {
        let spec = PodSpec::new("x", "a", "node1")
            .label("app", "web")
            .serve(Protocol::Udp, 81)
            .named_port("http", Protocol::Tcp, 80)
            .host_port(8080, Protocol::Tcp, 80);
        let pod = pod_object(&spec);
        assert_eq!(pod["spec"]["nodeName"], "node1");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(
            pod["spec"]["containers"][0]["ports"],
            json!([
                {"containerPort": 80, "protocol": "TCP", "name": "http", "hostPort": 8080},
                {"containerPort": 81, "protocol": "UDP"},
            ])
        );
    }

    #[test]
    fn running_status_lists_every_ip() {
        let s = running_status(
            &[
                "10.244.0.5".parse().unwrap(),
                "fd00:244::5".parse().unwrap(),
            ],
            &["10.0.0.1".parse().unwrap()],
            "abc",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(s["status"]["podIP"], "10.244.0.5");
        assert_eq!(s["status"]["podIPs"][1]["ip"], "fd00:244::5");
        assert_eq!(s["status"]["hostIP"], "10.0.0.1");
        assert_eq!(s["status"]["phase"], "Running");
        assert_eq!(s["status"]["containerStatuses"][0]["ready"], true);
    }
}
