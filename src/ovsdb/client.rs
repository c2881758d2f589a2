//! One JSON-RPC connection to an OVSDB server (or its unixctl socket).
//!
//! A reader task owns the receive side and the [`FrameBuf`]: replies go to the caller waiting on
//! that id, `echo` requests are answered at once (also while a transact is pending), other
//! notifications go to a bounded channel. When the stream ends or breaks, every pending call fails
//! with the reason. Requests are serialized into an exactly-sized buffer that is wiped after the
//! write, because a transact may carry a key.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::frame::{FrameBuf, FrameError, DEFAULT_MAX_MESSAGE};
use super::types::{wipe_json, Operation, TransactReply};
use super::Error;

/// A message the server sent without being asked (`update`, `update2`, `locked`, ...).
#[derive(Debug)]
pub struct Notification {
    pub method: String,
    pub params: Json,
}

impl Drop for Notification {
    fn drop(&mut self) {
        wipe_json(&mut self.params);
    }
}

#[derive(Clone, Debug)]
enum Broken {
    Closed { mid_message: bool },
    Frame(FrameError),
    Io(ErrorKind),
}

type Reply = Result<Json, Broken>;

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    broken: Option<Broken>,
}

/// Options for a connection.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bound on connecting and on each call.
    pub timeout: Duration,
    /// Bound on one incoming message.
    pub max_message: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(10),
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

pub struct Client {
    path: PathBuf,
    writer: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    timeout: Duration,
    notifications: mpsc::Receiver<Notification>,
    reader: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock(p: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // A poisoned lock only means a panic elsewhere; the map itself is still consistent.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serializes `msg` into a buffer of exactly its size (no reallocation leaves copies behind),
/// wiped on drop.
fn encode(msg: &Json) -> Zeroizing<Vec<u8>> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a serde_json::Value to an in-memory sink cannot fail.
    let _ = serde_json::to_writer(&mut count, msg);
    let mut out = Zeroizing::new(Vec::with_capacity(count.0));
    let _ = serde_json::to_writer(&mut *out, msg);
    out
}

impl Client {
    /// Connects to the unix socket at `path`.
    pub async fn connect(path: &Path, opts: Options) -> Result<Client, Error> {
        let stream = match tokio::time::timeout(opts.timeout, UnixStream::connect(path)).await {
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    path: path.to_owned(),
                    secs: opts.timeout.as_secs_f64(),
                })
            }
            Ok(Err(e)) => {
                let path = path.to_owned();
                return Err(match e.kind() {
                    ErrorKind::NotFound => Error::SocketMissing { path },
                    ErrorKind::PermissionDenied => Error::PermissionDenied { path },
                    ErrorKind::ConnectionRefused => Error::Refused { path },
                    _ => Error::Connect { path, source: e },
                });
            }
            Ok(Ok(s)) => s,
        };
        let (mut rd, wr) = stream.into_split();
        let writer = Arc::new(tokio::sync::Mutex::new(wr));
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (ntx, nrx) = mpsc::channel(64);
        let reader = {
            let writer = writer.clone();
            let pending = pending.clone();
            let max = opts.max_message;
            tokio::spawn(async move {
                let mut buf = FrameBuf::new(max);
                let broken = loop {
                    let n = match rd.read_buf(buf.spare(64 * 1024)).await {
                        Ok(n) => n,
                        Err(e) => break Broken::Io(e.kind()),
                    };
                    if n == 0 {
                        break Broken::Closed {
                            mid_message: buf.has_partial(),
                        };
                    }
                    let mut failed = None;
                    loop {
                        match buf.next_message() {
                            Ok(Some(msg)) => dispatch(msg, &pending, &writer, &ntx).await,
                            Ok(None) => break,
                            Err(e) => {
                                failed = Some(Broken::Frame(e));
                                break;
                            }
                        }
                    }
                    if let Some(b) = failed {
                        break b;
                    }
                };
                let mut p = lock(&pending);
                for (_, tx) in p.waiting.drain() {
                    let _ = tx.send(Err(broken.clone()));
                }
                p.broken = Some(broken);
            })
        };
        Ok(Client {
            path: path.to_owned(),
            writer,
            pending,
            next_id: AtomicU64::new(1),
            timeout: opts.timeout,
            notifications: nrx,
            reader,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn broken_error(&self, b: Broken) -> Error {
        let path = self.path.clone();
        match b {
            Broken::Closed { mid_message } => Error::Closed { path, mid_message },
            Broken::Frame(source) => Error::Frame { path, source },
            Broken::Io(kind) => Error::Io { path, kind },
        }
    }

    /// Sends a request and waits for its reply's `result`. `params` must be an array.
    pub async fn call(&self, method: &str, params: Json) -> Result<Json, Error> {
        debug_assert!(params.is_array(), "JSON-RPC params must be an array");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if let Some(b) = p.broken.clone() {
                return Err(self.broken_error(b));
            }
            p.waiting.insert(id, tx);
        }
        let mut msg = json!({"method": method, "params": params, "id": id});
        let bytes = encode(&msg);
        wipe_json(&mut msg);
        let timeout = self.timeout;
        let method_name = method.to_owned();
        let outcome = tokio::time::timeout(timeout, async {
            {
                let mut w = self.writer.lock().await;
                if let Err(e) = w.write_all(&bytes).await {
                    return Err(match e.kind() {
                        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset => Error::Closed {
                            path: self.path.clone(),
                            mid_message: false,
                        },
                        kind => Error::Io {
                            path: self.path.clone(),
                            kind,
                        },
                    });
                }
            }
            drop(bytes);
            match rx.await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(b)) => Err(self.broken_error(b)),
                Err(_) => Err(Error::Closed {
                    path: self.path.clone(),
                    mid_message: false,
                }),
            }
        })
        .await;
        let result = match outcome {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                method: method_name.clone(),
                secs: timeout.as_secs_f64(),
            }),
        };
        if result.is_err() {
            lock(&self.pending).waiting.remove(&id);
        }
        result.and_then(|mut reply| {
            let error = reply.get("error").cloned().unwrap_or(Json::Null);
            if !error.is_null() {
                wipe_json(&mut reply);
                let error = match &error {
                    Json::String(s) => s.clone(),
                    Json::Object(o) => {
                        let e = o.get("error").and_then(Json::as_str).unwrap_or("error");
                        match o.get("details").and_then(Json::as_str) {
                            Some(d) => format!("{e} ({})", d.chars().take(300).collect::<String>()),
                            None => e.to_owned(),
                        }
                    }
                    other => other.to_string().chars().take(300).collect(),
                };
                return Err(Error::Rpc {
                    method: method_name,
                    error,
                });
            }
            let result = reply
                .get_mut("result")
                .map(std::mem::take)
                .unwrap_or(Json::Null);
            wipe_json(&mut reply);
            Ok(result)
        })
    }

    /// `list_dbs`: the databases this server serves.
    pub async fn list_dbs(&self) -> Result<Vec<String>, Error> {
        let r = self.call("list_dbs", json!([])).await?;
        match r {
            Json::Array(a) => a
                .into_iter()
                .map(|v| match v {
                    Json::String(s) => Ok(s),
                    _ => Err(Error::Protocol {
                        method: "list_dbs",
                        what: "a database name is not a string".into(),
                    }),
                })
                .collect(),
            _ => Err(Error::Protocol {
                method: "list_dbs",
                what: "the result is not an array".into(),
            }),
        }
    }

    /// Fails with [`Error::UnknownDatabase`] unless the server serves `db`.
    pub async fn require_db(&self, db: &str) -> Result<(), Error> {
        let dbs = self.list_dbs().await?;
        if dbs.iter().any(|d| d == db) {
            Ok(())
        } else {
            Err(Error::UnknownDatabase {
                db: db.to_owned(),
                available: if dbs.is_empty() {
                    "none".into()
                } else {
                    dbs.join(", ")
                },
            })
        }
    }

    /// `get_schema`: the schema of `db`, as JSON.
    pub async fn get_schema(&self, db: &str) -> Result<Json, Error> {
        self.call("get_schema", json!([db]))
            .await
            .map_err(|e| unknown_db(e, db))
    }

    /// `transact`: runs `ops` atomically and returns each op's outcome and any commit error.
    pub async fn transact(&self, db: &str, ops: &[Operation]) -> Result<TransactReply, Error> {
        let mut params = vec![json!(db)];
        params.extend(ops.iter().map(Operation::to_json));
        let mut params = Json::Array(params);
        let sent = self.call("transact", std::mem::take(&mut params)).await;
        let mut result = sent.map_err(|e| unknown_db(e, db))?;
        let decoded = TransactReply::from_json(ops, &mut result);
        wipe_json(&mut result);
        decoded.map_err(|e| Error::Protocol {
            method: "transact",
            what: e.to_string(),
        })
    }

    /// `transact` where any failed op or commit is an error.
    pub async fn transact_ok(
        &self,
        db: &str,
        ops: &[Operation],
    ) -> Result<Vec<super::OpResult>, Error> {
        self.transact(db, ops).await?.into_results(ops)
    }

    /// `echo`: a round trip, for liveness.
    pub async fn echo(&self) -> Result<(), Error> {
        self.call("echo", json!(["psk-guard"])).await.map(|_| ())
    }

    /// The next notification, if one is queued, without waiting.
    pub fn try_notification(&mut self) -> Option<Notification> {
        self.notifications.try_recv().ok()
    }

    /// Waits up to `wait` for the next notification.
    pub async fn next_notification(&mut self, wait: Duration) -> Option<Notification> {
        tokio::time::timeout(wait, self.notifications.recv())
            .await
            .ok()
            .flatten()
    }
}

fn unknown_db(e: Error, db: &str) -> Error {
    match e {
        Error::Rpc { error, .. } if error.starts_with("unknown database") => {
            Error::UnknownDatabase {
                db: db.to_owned(),
                available: "see list_dbs".into(),
            }
        }
        other => other,
    }
}

async fn dispatch(
    mut msg: Json,
    pending: &Mutex<Pending>,
    writer: &tokio::sync::Mutex<OwnedWriteHalf>,
    notifications: &mpsc::Sender<Notification>,
) {
    let method = msg.get("method").and_then(Json::as_str).map(str::to_owned);
    let id = msg.get("id").cloned().unwrap_or(Json::Null);
    match method {
        Some(method) if id.is_null() => {
            let params = msg
                .get_mut("params")
                .map(std::mem::take)
                .unwrap_or(Json::Null);
            // A full queue drops the notification (it is wiped on drop) rather than stall replies.
            let _ = notifications.try_send(Notification { method, params });
        }
        Some(method) => {
            let reply = if method == "echo" {
                let params = msg
                    .get_mut("params")
                    .map(std::mem::take)
                    .unwrap_or(json!([]));
                json!({"id": id, "result": params, "error": null})
            } else {
                json!({"id": id, "result": null, "error": "unknown method"})
            };
            let bytes = encode(&reply);
            let mut w = writer.lock().await;
            let _ = w.write_all(&bytes).await;
        }
        None => {
            if let Some(id) = id.as_u64() {
                let tx = lock(pending).waiting.remove(&id);
                if let Some(tx) = tx {
                    let _ = tx.send(Ok(std::mem::take(&mut msg)));
                }
            }
            tracing::trace!("OVSDB reply handled");
        }
    }
    wipe_json(&mut msg);
}

/// Runs one unixctl command (what `ovs-appctl -t PATH METHOD ARGS...` does) and returns its output.
pub async fn unixctl(
    path: &Path,
    method: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, Error> {
    let client = Client::connect(
        path,
        Options {
            timeout,
            ..Options::default()
        },
    )
    .await?;
    let result = client.call(method, json!(args)).await?;
    match result {
        Json::String(s) => Ok(s),
        Json::Null => Ok(String::new()),
        _ => Err(Error::Protocol {
            method: "unixctl",
            what: "the result is not a string".into(),
        }),
    }
}
