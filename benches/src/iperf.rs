//! iperf3 inside lab namespaces.

use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use margay_lab::netns::Netns;

/// An `iperf3 -s` running in a namespace; stopped when dropped.
pub struct IperfServer {
    child: Child,
}

impl IperfServer {
    pub fn start(ns: &Netns, port: u16) -> anyhow::Result<IperfServer> {
        let child = ns
            .command("iperf3")
            .args(["-s", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s (is iperf3 installed? run scripts/install-deps.sh)")?;
        Ok(IperfServer { child })
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// TCP throughput in bit/s from `client` to an iperf3 server at `to:port`,
/// retrying the connection until the server listens.
pub fn tcp_throughput(client: &Netns, to: IpAddr, port: u16, secs: u32) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = client
            .command("iperf3")
            .args([
                "-c",
                &to.to_string(),
                "-p",
                &port.to_string(),
                "-t",
                &secs.to_string(),
                "-J",
            ])
            .output()
            .context("running iperf3 -c")?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = json
            .pointer("/end/sum_received/bits_per_second")
            .and_then(|v| v.as_f64())
        {
            return Ok(bps);
        }
        let error = json
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("no JSON output");
        if Instant::now() > deadline {
            bail!("iperf3 from {} to {to}:{port}: {error}", client.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
