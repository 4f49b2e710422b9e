//! One TCP connection of a session: a reader task that frames incoming
//! bytes and a writer task that drains a bounded queue of encoded
//! messages. Both report to the session task over its event channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::codec::{DecodeError, Frame, Framer};
use crate::fsm::ConnId;

/// Encoded messages waiting for the writer. Small: the session only
/// encodes a batch when there is room, so a peer that stops reading holds
/// at most this many batches (plus the kernel's socket buffer).
pub const WRITE_QUEUE: usize = 4;

/// What the connection tasks report.
#[derive(Debug)]
pub enum ConnEvent {
    /// An outgoing attempt finished.
    Connected(u64, std::io::Result<TcpStream>),
    /// Whole messages arrived (all those one read completed: batching
    /// keeps task wake-ups per message low when a peer sends a table).
    Frames(ConnId, Vec<Frame>),
    /// The byte stream could not be framed.
    Malformed(ConnId, DecodeError),
    /// The connection ended (EOF, reset or write error).
    Closed(ConnId, String),
}

/// A live connection.
#[derive(Debug)]
pub struct Connection {
    /// Its id in the FSM.
    pub id: ConnId,
    /// We initiated it.
    pub outgoing: bool,
    /// Our end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    writer_tx: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    /// Milliseconds since `epoch` of the last completed write.
    progress: Arc<AtomicU64>,
    epoch: Instant,
}

impl Connection {
    /// Starts the reader and writer tasks for `stream`.
    pub fn spawn(
        id: ConnId,
        stream: TcpStream,
        outgoing: bool,
        events: mpsc::Sender<ConnEvent>,
        epoch: Instant,
    ) -> std::io::Result<Connection> {
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
        let (mut rd, mut wr) = stream.into_split();
        let (writer_tx, mut writer_rx) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let progress = Arc::new(AtomicU64::new(0));

        let ev = events.clone();
        let reader = tokio::spawn(async move {
            let mut framer = Framer::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => {
                        let _ = ev
                            .send(ConnEvent::Closed(id, "closed by peer".into()))
                            .await;
                        return;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        let _ = ev.send(ConnEvent::Closed(id, format!("read: {e}"))).await;
                        return;
                    }
                };
                framer.push(&buf[..n]);
                let mut frames = Vec::new();
                let error = loop {
                    match framer.next_frame() {
                        Ok(Some(frame)) => frames.push(frame),
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                };
                if !frames.is_empty() && ev.send(ConnEvent::Frames(id, frames)).await.is_err() {
                    return;
                }
                if let Some(e) = error {
                    let _ = ev.send(ConnEvent::Malformed(id, e)).await;
                    return;
                }
            }
        });

        let prog = Arc::clone(&progress);
        let writer = tokio::spawn(async move {
            while let Some(bytes) = writer_rx.recv().await {
                if let Err(e) = wr.write_all(&bytes).await {
                    let _ = events
                        .send(ConnEvent::Closed(id, format!("write: {e}")))
                        .await;
                    return;
                }
                prog.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            let _ = wr.shutdown().await;
        });

        progress.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        Ok(Connection {
            id,
            outgoing,
            local,
            remote,
            writer_tx,
            reader,
            writer,
            progress,
            epoch,
        })
    }

    /// Queues a small control message (OPEN, KEEPALIVE, NOTIFICATION,
    /// ROUTE-REFRESH). When the queue is full the peer is not reading; the
    /// message is dropped (the send hold timer will end the session).
    pub fn send_now(&self, bytes: Vec<u8>) -> bool {
        self.writer_tx.try_send(bytes).is_ok()
    }

    /// A sender for reserving room before encoding a batch.
    pub fn writer(&self) -> mpsc::Sender<Vec<u8>> {
        self.writer_tx.clone()
    }

    /// When the last write completed.
    pub fn last_progress(&self) -> Instant {
        self.epoch + Duration::from_millis(self.progress.load(Ordering::Relaxed))
    }

    /// Closes the connection: stops reading at once, lets the writer flush
    /// what is queued (a final NOTIFICATION) for up to `linger`, then drops
    /// the socket.
    pub fn close(self, linger: Duration) {
        self.reader.abort();
        drop(self.writer_tx);
        let writer = self.writer;
        tokio::spawn(async move {
            let abort = writer.abort_handle();
            if tokio::time::timeout(linger, writer).await.is_err() {
                abort.abort();
            }
        });
    }

    /// Drops the connection without flushing anything (graceful restart:
    /// the peer must see the TCP session end without a NOTIFICATION).
    pub fn abort(self) {
        self.reader.abort();
        self.writer.abort();
    }
}
