//! [`TestApiServer`]: the emulator in-process on the caller's tokio runtime, for
//! other crates' tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use super::listen;
use super::persistence;
use super::server::{RunningServer, ServerError, ServerOptions};

/// Options of a [`TestApiServer`] before it starts.
#[derive(Debug, Clone)]
pub struct TestApiServerBuilder {
    options: ServerOptions,
}

impl TestApiServerBuilder {
    /// Delay added to every request.
    pub fn latency(mut self, d: Duration) -> Self {
        self.options.latency = d;
        self
    }

    /// How many changes watches can resume over (older versions get 410 Gone).
    pub fn watch_history(mut self, n: usize) -> Self {
        self.options.watch_history = n;
        self
    }

    /// How often watches that allow bookmarks get one (default 60 s).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.options.bookmark_interval = d;
        self
    }

    pub async fn start(self) -> Result<TestApiServer, ServerError> {
        let dir = tempfile::Builder::new()
            .prefix("margay-apiserver-")
            .tempdir()?;
        let mut options = self.options;
        let options_latency_ms = options.latency.as_millis() as u64;
        options.state_file = Some(dir.path().join("state.json"));
        let listener = listen::bind(
            "127.0.0.1:0"
                .parse()
                .map_err(|_| listen::ListenError::Address("127.0.0.1:0".into()))?,
        )?;
        let server = RunningServer::start(options.clone(), vec![listener])?;
        let addr = server.addrs()[0];
        let url = format!("http://{addr}");
        let uri: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| ServerError::Client {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
        let client =
            kube::Client::try_from(kube::Config::new(uri)).map_err(|e| ServerError::Client {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let kubeconfig = dir.path().join("kubeconfig");
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "margay-lab", "cluster": {"server": url}}],
            "users": [{"name": "margay-lab", "user": {}}],
            "contexts": [{"name": "margay-lab", "context": {"cluster": "margay-lab", "user": "margay-lab", "namespace": "default"}}],
            "current-context": "margay-lab",
        });
        persistence::write_atomic(&kubeconfig, cfg.to_string().as_bytes())?;
        Ok(TestApiServer {
            dir,
            addr,
            options,
            server: Some(server),
            client,
            kubeconfig,
            latency_ms: AtomicU64::new(options_latency_ms),
        })
    }
}

/// An API emulator for tests, listening on a loopback port with its state in a
/// temporary directory (removed on drop, with the server).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use margay_lab::apiserver::TestApiServer;
/// let mut api = TestApiServer::start().await?;
/// let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(api.client());
/// api.set_refusing(true); // every request now gets 503
/// api.set_refusing(false);
/// api.restart().await?; // same port, same objects and versions, watch history gone
/// # Ok(()) }
/// ```
pub struct TestApiServer {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    options: ServerOptions,
    server: Option<RunningServer>,
    client: kube::Client,
    kubeconfig: PathBuf,
    latency_ms: AtomicU64,
}

impl TestApiServer {
    /// Starts a server with default options.
    pub async fn start() -> Result<Self, ServerError> {
        Self::builder().start().await
    }

    pub fn builder() -> TestApiServerBuilder {
        TestApiServerBuilder {
            options: ServerOptions::default(),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig file pointing at this server, for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A `kubectl` command using this server's kubeconfig and a discovery cache
    /// of its own (so no cache from another server on a reused port leaks in).
    pub fn kubectl(&self) -> std::process::Command {
        let mut c = std::process::Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"));
        c
    }

    /// The state file the server persists to.
    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    pub fn set_latency(&self, d: Duration) {
        if let Some(s) = &self.server {
            s.shared()
                .latency_ms
                .store(d.as_millis() as u64, Ordering::SeqCst);
        }
        // Kept for the next start too.
    }

    /// While refusing, every Kubernetes request has its connection reset and
    /// open watches are cut.
    pub fn set_refusing(&self, refuse: bool) {
        if let Some(s) = &self.server {
            s.shared().set_refusing(refuse);
        }
    }

    /// Drops the watch history: watches from any earlier version get 410 Gone.
    pub fn compact(&self) {
        if let Some(s) = &self.server {
            s.shared().lock().compact();
        }
    }

    /// The current cluster-wide resourceVersion.
    pub fn resource_version(&self) -> Option<u64> {
        self.server
            .as_ref()
            .map(|s| s.shared().lock().resource_version())
    }

    /// Stops the server (connections refused from now on), writing its state.
    pub async fn stop(&mut self) -> Result<(), ServerError> {
        if let Some(s) = self.server.take() {
            s.stop().await?;
        }
        Ok(())
    }

    /// Starts again on the same address from the written state.
    pub async fn start_again(&mut self) -> Result<(), ServerError> {
        if self.server.is_some() {
            return Ok(());
        }
        let listener = listen::bind(self.addr)?;
        let mut options = self.options.clone();
        options.latency = Duration::from_millis(self.latency_ms.load(Ordering::SeqCst));
        self.server = Some(RunningServer::start(options, vec![listener])?);
        Ok(())
    }

    /// `stop` then `start_again`.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        self.stop().await?;
        self.start_again().await
    }
}
