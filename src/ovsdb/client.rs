//! One JSON-RPC connection to an OVSDB server (or its unixctl socket).
//!
//! A reader task owns the receive side and the [`FrameBuf`]: replies go to the caller waiting on
//! that id, `echo` requests are answered at once (also while a transact is pending), other
//! notifications go to a bounded channel. When the stream ends or breaks, every pending call fails
//! with the reason. Requests are serialized into an exactly-sized buffer that is wiped after the
//! write, because a transact may carry a key.
//!
//! A caller can hand a decoder along with its request ([`Client::call_with`]): the reader runs it
//! on the `result` bytes while they are still in the frame buffer, so a large reply is parsed
//! once, where it arrived, and never copied.

use std::any::Any;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::frame::{json_error, FrameBuf, FrameError, DEFAULT_MAX_MESSAGE};
use super::types::{op_names, wipe_json, Operation, TransactReply};
use super::Error;
use crate::nodefs;

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

/// Runs in the reader on a reply's `result` bytes (borrowed from the frame buffer).
type Decoder = Box<dyn FnOnce(&[u8]) -> Box<dyn Any + Send> + Send>;

/// A reply's `result`: its raw bytes (wiped on drop), or what the caller's decoder made of them.
enum ResultBody {
    Raw(Zeroizing<Vec<u8>>),
    Decoded(Box<dyn Any + Send>),
}

/// A reply: its `result`, or the server's `error`.
struct ReplyBody {
    result: ResultBody,
    error: Option<Json>,
}

type Reply = Result<ReplyBody, Broken>;

/// The outer shape of every message, with the payloads left as raw JSON in the frame.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

/// What the reader does with one message, decided while the frame is borrowed.
enum Action {
    Reply(u64, ReplyBody),
    Answer(Zeroizing<Vec<u8>>),
    Notify(Notification),
    Ignore,
}

fn exact_copy(b: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(b.len()));
    v.extend_from_slice(b);
    v
}

/// Decides what to do with one message. `decoder` hands out the decoder a caller registered for
/// a reply id, if any; it runs here, on the bytes in the frame, when the reply has no error.
fn classify(
    bytes: &[u8],
    offset: u64,
    decoder: &mut dyn FnMut(u64) -> Option<Decoder>,
) -> Result<Action, FrameError> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| json_error(&e, offset))?;
    let id_null = env.id.is_none_or(|r| r.get() == "null");
    match env.method {
        Some(method) if id_null => {
            let params = match env.params {
                Some(p) => serde_json::from_str(p.get()).map_err(|e| json_error(&e, offset))?,
                None => Json::Null,
            };
            Ok(Action::Notify(Notification { method, params }))
        }
        Some(method) => {
            // Answer `echo` with its own params; refuse anything else.
            let id = env.id.map(RawValue::get).unwrap_or("null");
            let reply = if method == "echo" {
                let params = env.params.map(RawValue::get).unwrap_or("[]");
                format!("{{\"id\":{id},\"result\":{params},\"error\":null}}")
            } else {
                format!("{{\"id\":{id},\"result\":null,\"error\":\"unknown method\"}}")
            };
            Ok(Action::Answer(Zeroizing::new(reply.into_bytes())))
        }
        None => {
            let Some(id) = env.id.and_then(|r| r.get().parse::<u64>().ok()) else {
                return Ok(Action::Ignore);
            };
            let error = match env.error {
                Some(e) if e.get() != "null" => {
                    Some(serde_json::from_str(e.get()).map_err(|e| json_error(&e, offset))?)
                }
                _ => None,
            };
            let raw = env.result.map(RawValue::get).unwrap_or("null").as_bytes();
            let result = match decoder(id) {
                Some(decode) if error.is_none() => ResultBody::Decoded(decode(raw)),
                _ => ResultBody::Raw(exact_copy(raw)),
            };
            Ok(Action::Reply(id, ReplyBody { result, error }))
        }
    }
}

/// A caller waiting for a reply, and the decoder it wants run on the reply's `result`.
struct Waiter {
    tx: oneshot::Sender<Reply>,
    decode: Option<Decoder>,
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, Waiter>,
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

/// A request's `params` encoded ahead of time (a key written at an instant goes out without
/// being encoded then); the bytes are wiped on drop.
pub struct Prepared {
    db: String,
    params: Zeroizing<Vec<u8>>,
    /// The request carries a key: the server's error details, which can quote the request, are
    /// left out of its errors.
    carries_key: bool,
}

impl Prepared {
    /// The `params` of a `transact` of `ops` on `db`.
    pub fn transact(db: &str, ops: &[Operation]) -> Prepared {
        let mut params = vec![json!(db)];
        params.extend(ops.iter().map(Operation::to_json));
        let mut params = Json::Array(params);
        let encoded = encode(&params);
        wipe_json(&mut params);
        Prepared {
            db: db.to_owned(),
            params: encoded,
            carries_key: false,
        }
    }

    /// [`Prepared::transact`] of operations that carry a key (a key write): an error says what
    /// failed, never the server's details.
    pub fn transact_carrying_key(db: &str, ops: &[Operation]) -> Prepared {
        Prepared {
            carries_key: true,
            ..Prepared::transact(db, ops)
        }
    }
}

/// `{"id":ID,"method":METHOD,"params":PARAMS}` with `params` already encoded, into a buffer of
/// exactly its size, wiped on drop.
fn frame_request(method: &str, params: &[u8], id: u64) -> Zeroizing<Vec<u8>> {
    let method = Json::String(method.to_owned()).to_string();
    let id = id.to_string();
    let parts: [&[u8]; 7] = [
        b"{\"id\":",
        id.as_bytes(),
        b",\"method\":",
        method.as_bytes(),
        b",\"params\":",
        params,
        b"}",
    ];
    let mut out = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
    parts.iter().for_each(|p| out.extend_from_slice(p));
    out
}

/// The decoder's value out of a reply decoded in the reader.
fn decoded<T: 'static>(body: ResultBody) -> Result<T, Error> {
    match body {
        ResultBody::Decoded(v) => v.downcast::<T>().map(|b| *b).map_err(|_| Error::Protocol {
            method: "call",
            what: "the decoded reply has another type".into(),
        }),
        ResultBody::Raw(_) => Err(Error::Protocol {
            method: "call",
            what: "the reply was not decoded".into(),
        }),
    }
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
    /// Connects to the server socket at `path` on this node, the one way psk-guard connects:
    /// the socket is opened through [`nodefs::open_server_socket`] (a root-owned socket reached
    /// without links under root-controlled directories), then [`Client::connect_entry`]. Never
    /// `connect(2)` by name: a non-root user who can write in a directory on the way could plant
    /// their own listener there and receive what is sent (a key, for `push-key`) or answer with
    /// made-up rows.
    pub async fn connect(path: &Path, opts: Options) -> Result<Client, Error> {
        let p = path.to_owned();
        let opened = tokio::task::spawn_blocking(move || {
            nodefs::open_server_socket(&p, &nodefs::Accounts::load())
        });
        let sock = match tokio::time::timeout(opts.timeout, opened).await {
            Err(_) => {
                return Err(Error::ConnectTimeout {
                    path: path.to_owned(),
                    secs: opts.timeout.as_secs_f64(),
                })
            }
            Ok(Err(_)) => {
                return Err(Error::Protocol {
                    method: "connect",
                    what: "the task opening the socket failed".into(),
                })
            }
            Ok(Ok(r)) => r.map_err(|e| Error::open(path, e))?,
        };
        Client::connect_entry(&sock, opts).await
    }

    /// Connects to a socket already opened (and checked) through [`crate::nodefs`]: through its
    /// descriptor (`/proc/self/fd/N`, which names the verified inode whatever happens to the name
    /// meanwhile), then checks who listens ([`verify_peer`]). Errors name the socket's path.
    pub async fn connect_entry(sock: &nodefs::Entry, opts: Options) -> Result<Client, Error> {
        let path = sock.path.as_path();
        let stream =
            match tokio::time::timeout(opts.timeout, UnixStream::connect(sock.fd_path())).await {
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
        verify_peer(&stream, path)?;
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
                        // A peer that closes with bytes of ours unread resets the connection
                        // instead of ending it (Linux `unix_release_sock`): still a close.
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                            break Broken::Closed {
                                mid_message: buf.has_partial(),
                            }
                        }
                        Err(e) => break Broken::Io(e.kind()),
                    };
                    if n == 0 {
                        break Broken::Closed {
                            mid_message: buf.has_partial(),
                        };
                    }
                    let mut failed = None;
                    let mut decoder = |id: u64| {
                        lock(&pending)
                            .waiting
                            .get_mut(&id)
                            .and_then(|w| w.decode.take())
                    };
                    loop {
                        match buf.with_next(|b, off| classify(b, off, &mut decoder)) {
                            Ok(Some(Ok(action))) => act(action, &pending, &writer, &ntx).await,
                            Ok(Some(Err(e))) | Err(e) => {
                                failed = Some(Broken::Frame(e));
                                break;
                            }
                            Ok(None) => break,
                        }
                    }
                    if let Some(b) = failed {
                        break b;
                    }
                };
                let mut p = lock(&pending);
                for (_, w) in p.waiting.drain() {
                    let _ = w.tx.send(Err(broken.clone()));
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

    /// Sends a request and waits for its reply; returns the raw bytes of `result`, wiped on drop.
    /// `params` must be an array.
    pub async fn call_raw(&self, method: &str, params: Json) -> Result<Zeroizing<Vec<u8>>, Error> {
        match self.request(method, params, None).await? {
            ResultBody::Raw(bytes) => Ok(bytes),
            ResultBody::Decoded(_) => Err(Error::Protocol {
                method: "call",
                what: "a reply was decoded although no decoder was registered".into(),
            }),
        }
    }

    /// Sends a request and waits for its reply; `decode` runs in the reader on the bytes of
    /// `result` while they are in the frame buffer (which wipes them right after), so nothing is
    /// copied. `params` must be an array.
    pub async fn call_with<T: Send + 'static>(
        &self,
        method: &str,
        params: Json,
        decode: impl FnOnce(&[u8]) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let decoder: Decoder = Box::new(move |b| Box::new(decode(b)));
        decoded(self.request(method, params, Some(decoder)).await?)
    }

    async fn request(
        &self,
        method: &str,
        params: Json,
        decode: Option<Decoder>,
    ) -> Result<ResultBody, Error> {
        debug_assert!(params.is_array(), "JSON-RPC params must be an array");
        let mut params = params;
        let encoded = encode(&params);
        wipe_json(&mut params);
        self.request_encoded(method, &encoded, decode, false).await
    }

    /// Sends a request whose `params` are already encoded (a JSON array) and waits for its reply.
    /// With `carries_key`, an error reply's details are left out of the error: the server's
    /// details can quote the request.
    async fn request_encoded(
        &self,
        method: &str,
        params: &[u8],
        decode: Option<Decoder>,
        carries_key: bool,
    ) -> Result<ResultBody, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            if let Some(b) = p.broken.clone() {
                return Err(self.broken_error(b));
            }
            p.waiting.insert(id, Waiter { tx, decode });
        }
        let bytes = frame_request(method, params, id);
        let timeout = self.timeout;
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
        let reply = match outcome {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                method: method.to_owned(),
                secs: timeout.as_secs_f64(),
            }),
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                lock(&self.pending).waiting.remove(&id);
                return Err(e);
            }
        };
        if let Some(mut error) = reply.error {
            // Server text: bounded and escaped here, where it enters psk-guard.
            use crate::report::sanitize::{bounded, name, text};
            let message = match &error {
                _ if carries_key => {
                    let e = error.get("error").and_then(Json::as_str).unwrap_or("error");
                    format!("{} ({})", name(e), super::types::WITHHELD)
                }
                Json::String(s) => text(s),
                Json::Object(o) => {
                    let e = name(o.get("error").and_then(Json::as_str).unwrap_or("error"));
                    match o.get("details").and_then(Json::as_str) {
                        Some(d) => format!("{e} ({})", bounded(d, 300)),
                        None => e,
                    }
                }
                other => bounded(&other.to_string(), 300).into_owned(),
            };
            wipe_json(&mut error);
            let error = message;
            return Err(Error::Rpc {
                method: method.to_owned(),
                error,
            });
        }
        Ok(reply.result)
    }

    /// Like [`Client::call_raw`], with `result` parsed as a JSON tree.
    pub async fn call(&self, method: &str, params: Json) -> Result<Json, Error> {
        let raw = self.call_raw(method, params).await?;
        serde_json::from_slice(&raw).map_err(|e| Error::Frame {
            path: self.path.clone(),
            source: json_error(&e, 0),
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
                db: crate::report::sanitize::name(db),
                available: available_dbs(&dbs),
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
        let names = op_names(ops);
        self.transact_with(db, ops, move |bytes| {
            let mut rows = super::types::CollectRows::new(names.len());
            let reply = super::types::decode_transact(&names, bytes, &mut rows)?;
            Ok(rows.fill(reply))
        })
        .await
    }

    /// `transact` with the reply decoded by `decode` in the reader, on the frame bytes (see
    /// [`Client::call_with`]); typically `decode` calls [`super::types::decode_transact`] with a
    /// [`super::types::RowSink`] that keeps only what it needs of each row.
    pub async fn transact_with<T: Send + 'static>(
        &self,
        db: &str,
        ops: &[Operation],
        decode: impl FnOnce(&[u8]) -> Result<T, super::types::ValueError> + Send + 'static,
    ) -> Result<T, Error> {
        self.transact_prepared_with(&Prepared::transact(db, ops), decode)
            .await
    }

    /// [`Client::transact_with`] for a transaction encoded ahead of time ([`Prepared::transact`]).
    pub async fn transact_prepared_with<T: Send + 'static>(
        &self,
        prepared: &Prepared,
        decode: impl FnOnce(&[u8]) -> Result<T, super::types::ValueError> + Send + 'static,
    ) -> Result<T, Error> {
        let decoder: Decoder = Box::new(move |b| Box::new(decode(b)));
        let sent = self
            .request_encoded(
                "transact",
                &prepared.params,
                Some(decoder),
                prepared.carries_key,
            )
            .await
            .and_then(decoded::<Result<T, super::types::ValueError>>);
        sent.map_err(|e| unknown_db(e, &prepared.db))?
            .map_err(|e| Error::Protocol {
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

    /// [`Client::transact_ok`] for `ops` encoded ahead of time as `prepared`
    /// ([`Prepared::transact`] of the same `ops`): sending it costs a copy of its bytes, no
    /// encoding, so a write meant for an instant goes out as soon as the instant comes.
    pub async fn transact_prepared_ok(
        &self,
        prepared: &Prepared,
        ops: &[Operation],
    ) -> Result<Vec<super::OpResult>, Error> {
        let names = op_names(ops);
        let carries_key = prepared.carries_key;
        self.transact_prepared_with(prepared, move |bytes| {
            let mut rows = super::types::CollectRows::new(names.len());
            let mut reply = super::types::decode_transact(&names, bytes, &mut rows)?;
            if carries_key {
                // The server's details could quote the key.
                reply.withhold_details();
            }
            Ok(rows.fill(reply))
        })
        .await?
        .into_results(ops)
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

/// The server's database names for an error message: each bounded and escaped, at most
/// [`SHOWN_DBS`] of them (a hostile server can send any number of names of any length).
fn available_dbs(dbs: &[String]) -> String {
    if dbs.is_empty() {
        return "none".into();
    }
    let mut shown: Vec<String> = dbs
        .iter()
        .take(SHOWN_DBS)
        .map(|d| crate::report::sanitize::name(d))
        .collect();
    if dbs.len() > SHOWN_DBS {
        shown.push(format!("and {} more", dbs.len() - SHOWN_DBS));
    }
    shown.join(", ")
}

/// How many database names an error lists.
const SHOWN_DBS: usize = 8;

fn unknown_db(e: Error, db: &str) -> Error {
    match e {
        Error::Rpc { error, .. } if error.starts_with("unknown database") => {
            Error::UnknownDatabase {
                db: crate::report::sanitize::name(db),
                available: "see list_dbs".into(),
            }
        }
        other => other,
    }
}

async fn act(
    action: Action,
    pending: &Mutex<Pending>,
    writer: &tokio::sync::Mutex<OwnedWriteHalf>,
    notifications: &mpsc::Sender<Notification>,
) {
    match action {
        Action::Reply(id, body) => {
            let w = lock(pending).waiting.remove(&id);
            if let Some(w) = w {
                let _ = w.tx.send(Ok(body));
            }
        }
        Action::Answer(bytes) => {
            let mut w = writer.lock().await;
            let _ = w.write_all(&bytes).await;
        }
        // A full queue drops the notification (wiped on drop) rather than stall replies.
        Action::Notify(n) => {
            let _ = notifications.try_send(n);
        }
        Action::Ignore => tracing::debug!("ignored a reply with an id nobody waits for"),
    }
}

/// The process listening on a node socket must run as root: ovsdb-server does (in antrea-agent's
/// pod), and a non-root user cannot make a root process listen on a socket of their choosing.
/// `SO_PEERCRED` gives the credentials of the process that called `listen(2)`, as the kernel
/// recorded them (not something the peer can claim).
pub fn verify_peer(stream: &UnixStream, path: &Path) -> Result<(), Error> {
    let cred = stream.peer_cred().map_err(|source| Error::Connect {
        path: path.to_owned(),
        source,
    })?;
    if cred.uid() != 0 {
        return Err(Error::PeerNotRoot {
            path: path.to_owned(),
            uid: cred.uid(),
            pid: cred.pid().filter(|p| *p > 0),
        });
    }
    Ok(())
}

/// Runs one unixctl command (what `ovs-appctl -t PATH METHOD ARGS...` does) on a socket opened
/// through [`nodefs::open_server_socket`], and returns its output.
pub async fn unixctl(
    sock: &nodefs::Entry,
    method: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<String, Error> {
    unixctl_bounded(sock, method, args, timeout, Options::default().max_message).await
}

/// [`unixctl`] with the reply bounded to `max_reply` bytes (a longer one is an error).
pub async fn unixctl_bounded(
    sock: &nodefs::Entry,
    method: &str,
    args: &[&str],
    timeout: Duration,
    max_reply: usize,
) -> Result<String, Error> {
    let client = Client::connect_entry(
        sock,
        Options {
            timeout,
            max_message: max_reply,
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

/// Decodes one message the way the reader does (for the fuzz tests). True when it is usable.
#[doc(hidden)]
pub fn fuzz_classify(bytes: &[u8]) -> bool {
    classify(bytes, 0, &mut |_| None).is_ok()
}
