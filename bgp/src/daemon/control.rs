//! The control socket of `margay-bgpd`: one JSON request per connection,
//! one JSON response, both a single line. The CLI side
//! (`margay-bgpd --control SOCK peers`) and tests use [`request`].

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

use super::config::Announcement;
use crate::config::AddressFamily;
use crate::rib::RouteView;
use crate::speaker::{RouteQuery, ShutdownMode, SpeakerHandle};
use crate::status::PeerStatus;

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    /// Every peer's status.
    Peers,
    /// A routing table: the Loc-RIB, or one peer's Adj-RIB-In / -Out.
    Routes {
        /// Which table.
        query: RouteQuery,
    },
    /// Originate a route.
    Announce(Announcement),
    /// Stop originating a route.
    Withdraw {
        /// The prefix.
        #[serde(with = "crate::config::serde_prefix")]
        prefix: crate::codec::Prefix,
    },
    /// Send ROUTE-REFRESH to a peer.
    Refresh {
        /// The peer.
        peer: IpAddr,
        /// The family.
        family: AddressFamily,
    },
    /// Stop the daemon.
    Shutdown {
        /// Close sessions without NOTIFICATION (peers keep our routes).
        graceful_restart: bool,
    },
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    /// Peer statuses.
    Peers(Vec<PeerStatus>),
    /// Routes.
    Routes(Vec<RouteView>),
    /// Done.
    Ok,
    /// Failed, with the reason.
    Error(String),
}

/// Errors talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Socket trouble.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer was not understood.
    #[error("control socket {path}: bad response: {message}")]
    Protocol {
        /// The socket path.
        path: String,
        /// What.
        message: String,
    },
    /// The daemon refused.
    #[error("margay-bgpd: {0}")]
    Refused(String),
}

/// Sends `req` to the daemon at `path` and returns its answer.
pub async fn request(path: &Path, req: &Request) -> Result<Response, ControlError> {
    let p = path.display().to_string();
    let io = |source| ControlError::Io {
        path: p.clone(),
        source,
    };
    let mut s = UnixStream::connect(path).await.map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::Protocol {
        path: p.clone(),
        message: e.to_string(),
    })?;
    line.push('\n');
    s.write_all(line.as_bytes()).await.map_err(io)?;
    let mut r = BufReader::new(s);
    let mut answer = String::new();
    r.read_line(&mut answer).await.map_err(io)?;
    let resp: Response = serde_json::from_str(&answer).map_err(|e| ControlError::Protocol {
        path: p.clone(),
        message: e.to_string(),
    })?;
    match resp {
        Response::Error(e) => Err(ControlError::Refused(e)),
        other => Ok(other),
    }
}

/// Serves requests on `listener` until the speaker stops. Returns when a
/// shutdown request has been answered.
pub async fn serve(listener: UnixListener, speaker: SpeakerHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (rd, mut wr) = stream.into_split();
        let mut line = String::new();
        let mut rd = BufReader::new(rd);
        if rd.read_line(&mut line).await.is_err() {
            continue;
        }
        let (resp, stop) = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let stop = matches!(req, Request::Shutdown { .. });
                (handle(&speaker, req).await, stop)
            }
            Err(e) => (Response::Error(format!("bad request: {e}")), false),
        };
        let mut out = serde_json::to_string(&resp)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode response: {e}\"}}"));
        out.push('\n');
        if let Err(e) = wr.write_all(out.as_bytes()).await {
            warn!("control socket: {e}");
        }
        if stop {
            return;
        }
    }
}

async fn handle(speaker: &SpeakerHandle, req: Request) -> Response {
    let r = match req {
        Request::Peers => speaker.peers().await.map(Response::Peers),
        Request::Routes { query } => speaker.routes(query).await.map(Response::Routes),
        Request::Announce(a) => match a.to_local_route() {
            Ok(route) => speaker
                .announce(a.prefix, route)
                .await
                .map(|()| Response::Ok),
            Err(e) => return Response::Error(e),
        },
        Request::Withdraw { prefix } => speaker.withdraw(prefix).await.map(|()| Response::Ok),
        Request::Refresh { peer, family } => {
            speaker.refresh(peer, family).await.map(|()| Response::Ok)
        }
        Request::Shutdown { graceful_restart } => {
            let mode = if graceful_restart {
                ShutdownMode::GracefulRestart
            } else {
                ShutdownMode::Notify
            };
            speaker.shutdown(mode).await.map(|()| Response::Ok)
        }
    };
    r.unwrap_or_else(|e| Response::Error(e.to_string()))
}
