//! The client side of the endpoint protocol (`margay_api::endpoint`): one JSON
//! line out, one back, per connection.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use margay_api::endpoint::{Request, Response, codes};
use serde::de::DeserializeOwned;

use crate::error::CniError;

/// Talks to the agent on this node.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    pub fn new(socket: &Path, timeout: Duration) -> AgentClient {
        AgentClient {
            socket: socket.to_path_buf(),
            timeout,
        }
    }

    /// Sends `req` and returns the `ok` payload.
    pub fn call(&self, req: &Request) -> Result<serde_json::Value, CniError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(&e))?;
        let io_err = |e: io::Error| self.io_error(&e);
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(io_err)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io_err)?;
        let mut line = serde_json::to_vec(req)
            .map_err(|e| CniError::io(format!("encoding the request to the agent: {e}")))?;
        line.push(b'\n');
        stream.write_all(&line).map_err(io_err)?;
        let mut answer = String::new();
        BufReader::new(&stream)
            .read_line(&mut answer)
            .map_err(io_err)?;
        if answer.trim().is_empty() {
            return Err(CniError::new(
                codes::TRY_AGAIN_LATER,
                format!(
                    "the agent at {} closed the connection without answering (is margay-agent restarting? see its log)",
                    self.socket.display()
                ),
            ));
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Error(e)) => Err(e.into()),
            Err(e) => Err(CniError::decode(format!(
                "the agent at {} sent an answer this plugin does not understand ({e}); are margay-cni and margay-agent the same version?",
                self.socket.display()
            ))),
        }
    }

    /// Like [`AgentClient::call`], decoding the payload.
    pub fn call_for<T: DeserializeOwned>(&self, req: &Request) -> Result<T, CniError> {
        let v = self.call(req)?;
        serde_json::from_value(v).map_err(|e| {
            CniError::decode(format!(
                "the agent at {} sent an unexpected answer ({e}); are margay-cni and margay-agent the same version?",
                self.socket.display()
            ))
        })
    }

    fn unreachable(&self, e: &io::Error) -> CniError {
        CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "the agent is not reachable at {} ({e}): is margay-agent running on this node?",
                self.socket.display()
            ),
        )
    }

    fn io_error(&self, e: &io::Error) -> CniError {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return CniError::new(
                codes::TRY_AGAIN_LATER,
                format!(
                    "the agent at {} did not answer within {:?}: is it overloaded or stuck? (see its log)",
                    self.socket.display(),
                    self.timeout
                ),
            );
        }
        CniError::new(
            codes::TRY_AGAIN_LATER,
            format!(
                "talking to the agent at {} failed ({e}): is margay-agent restarting?",
                self.socket.display()
            ),
        )
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use margay_api::endpoint::Attachment;
    use std::os::unix::net::UnixListener;

    fn del() -> Request {
        Request::Del {
            attachment: Attachment {
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            pod: None,
        }
    }

    #[test]
    fn a_missing_agent_is_a_clear_try_again_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("cni.sock");
        let e = AgentClient::new(&sock, Duration::from_secs(1))
            .call(&del())
            .unwrap_err();
        assert_eq!(e.code, codes::TRY_AGAIN_LATER);
        assert!(e.msg.contains(&sock.display().to_string()), "{}", e.msg);
        assert!(
            e.msg.contains("is margay-agent running on this node?"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn passes_agent_errors_through_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            // First connection: an error answer. Second: never answers.
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            assert!(line.contains(r#""op":"del""#));
            (&s).write_all(b"{\"error\":{\"code\":3,\"msg\":\"no such pod\"}}\n")
                .unwrap();
            let (s2, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s2).read_line(&mut line).unwrap();
            // Hold the connection until the client gives up.
            let mut buf = [0u8; 1];
            let _ = std::io::Read::read(&mut &s2, &mut buf);
        });
        let client = AgentClient::new(&sock, Duration::from_millis(200));
        let e = client.call(&del()).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (3, "no such pod"));
        let e = client.call(&del()).unwrap_err();
        assert_eq!(e.code, codes::TRY_AGAIN_LATER);
        assert!(e.msg.contains("did not answer"), "{}", e.msg);
        server.join().unwrap();
    }
}
