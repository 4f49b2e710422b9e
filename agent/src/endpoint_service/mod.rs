//! The unix socket the CNI plugin calls (protocol: `margay_api::endpoint`):
//! one JSON request line per connection, one JSON response line back. Every
//! connection is served by a task of its own, so many ADDs run at once; the
//! [`handler`] serialises requests per attachment.

pub mod handler;

use crate::metrics::Metrics;
use handler::EndpointHandler;
use margay_api::endpoint::{Request, Response, WireError, codes};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The longest request line accepted (a GC with thousands of attachments fits).
const MAX_REQUEST_BYTES: u64 = 4 << 20;

/// Binds the socket, replacing a stale one left by a previous run.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    // Only root (the container runtime) may ask for addresses.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, handler: Arc<EndpointHandler>, metrics: Metrics) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_one(stream, &handler, &metrics).await {
                        tracing::debug!(error = %e, "endpoint connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting on the endpoint socket failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_one(
    stream: UnixStream,
    handler: &EndpointHandler,
    metrics: &Metrics,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let start = Instant::now();
    let (op, response) = match serde_json::from_str::<Request>(line.trim_end()) {
        Ok(req) => {
            let op = op_name(&req);
            (op, handler.handle(req).await)
        }
        Err(e) => (
            "invalid",
            Response::Error(WireError {
                code: codes::DECODE_FAILURE,
                msg: format!("margay-agent could not decode the request: {e}"),
                details: String::new(),
            }),
        ),
    };
    let result = match &response {
        Response::Ok(_) => "ok".to_string(),
        Response::Error(e) => format!("error_{}", e.code),
    };
    metrics
        .cni_requests
        .get_or_create(&Metrics::op_result(op, &result))
        .inc();
    metrics
        .cni_request_duration
        .get_or_create(&Metrics::op(op))
        .observe(start.elapsed().as_secs_f64());
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::Add { .. } => "add",
        Request::Ready { .. } => "ready",
        Request::Del { .. } => "del",
        Request::Check { .. } => "check",
        Request::Status => "status",
        Request::Gc { .. } => "gc",
    }
}

/// Sends one request to an agent socket and reads its answer (for tests,
/// tools and the lab's readiness wait; the plugin has its own client).
pub async fn call(path: &Path, req: &Request) -> io::Result<Response> {
    let stream = UnixStream::connect(path).await?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reader = BufReader::new(read);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    serde_json::from_str(answer.trim_end())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
