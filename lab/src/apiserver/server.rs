//! A running server: accept loops on its listeners, one hyper HTTP/1.1
//! connection task per client, the state writer, and an orderly stop (listeners
//! closed, connections and watches cut, state written).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::http::{Shared, handle};
use super::persistence::{self, PersistError};
use super::store::Store;

/// How a server behaves (independent of where it listens).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Load at start if present; written after changes and at stop.
    pub state_file: Option<PathBuf>,
    /// Added to every Kubernetes request.
    pub latency: Duration,
    /// Changes retained for watches to resume from; older versions get 410.
    pub watch_history: usize,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            state_file: None,
            latency: Duration::ZERO,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error(transparent)]
    Listen(#[from] super::listen::ListenError),
    #[error("cannot use listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("kube client for {url}: {message}")]
    Client { url: String, message: String },
}

pub struct RunningServer {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    options: ServerOptions,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Closes once every connection task has ended (each holds a sender).
    connections_done: mpsc::Receiver<()>,
}

impl RunningServer {
    /// Loads the state (if any) and serves on `listeners` (non-blocking std
    /// listeners, already bound) on the current tokio runtime.
    pub fn start(
        options: ServerOptions,
        listeners: Vec<std::net::TcpListener>,
    ) -> Result<Self, ServerError> {
        let store = match &options.state_file {
            Some(p) => match persistence::load(p)? {
                Some(state) => Store::from_state(state, options.watch_history),
                None => Store::new(options.watch_history),
            },
            None => Store::new(options.watch_history),
        };
        let shared = Arc::new(Shared::new(
            store,
            options.latency,
            options.bookmark_interval,
        ));
        let (stop, _) = watch::channel(false);
        let (conn_tx, connections_done) = mpsc::channel(1);
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for l in listeners {
            let l = TcpListener::from_std(l)?;
            addrs.push(l.local_addr()?);
            let accept = accept_loop(l, shared.clone(), stop.subscribe(), conn_tx.clone());
            tasks.push(tokio::spawn(accept));
        }
        drop(conn_tx);
        if let Some(p) = &options.state_file {
            // Write the initial state at once so a fresh server's file exists.
            persistence::save(&shared, p)?;
            let (s, p) = (shared.clone(), p.clone());
            let mut stopped = stop.subscribe();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = persistence::persist_loop(s, p) => {}
                    _ = stopped.changed() => {}
                }
            }));
        }
        Ok(Self {
            shared,
            addrs,
            options,
            stop,
            tasks,
            connections_done,
        })
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops serving: listeners closed, every connection and watch cut, and the
    /// state written a last time.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        // Every connection is closed (and no request can commit) before the
        // final write.
        let _ = self.connections_done.recv().await;
        if let Some(p) = &self.options.state_file {
            let (s, p) = (self.shared.clone(), p.clone());
            tokio::task::spawn_blocking(move || persistence::save(&s, &p))
                .await
                .map_err(|e| ServerError::Io(std::io::Error::other(e)))??;
        }
        Ok(())
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // Dropping without stop(): still end every task of this server.
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        let (shared, conn_stop) = (shared.clone(), stop.clone());
        let mut stopped = stop.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let svc = service_fn(move |req| handle(shared.clone(), conn_stop.clone(), fd, req));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                biased;
                _ = stopped.changed() => {}
                _ = conn => {}
            }
        });
    }
}
