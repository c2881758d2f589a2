//! Our OVSDB client (RFC 7047 over a unix socket), written because no usable crate exists.
//!
//! - [`frame`]: where one JSON-RPC message ends in the byte stream; the buffer that wipes what it
//!   releases.
//! - [`types`]: OVSDB values, rows, transact operations and results.
//! - [`client`]: the connection: requests matched to replies by id, the server's `echo` answered,
//!   notifications routed, every wait bounded by a timeout. Also used for the unixctl socket
//!   (`ovs-appctl`'s protocol), which speaks the same JSON-RPC.

pub mod client;
pub mod frame;
pub mod types;

use std::path::PathBuf;

pub use client::{Client, Notification, Prepared};
pub use frame::FrameError;
pub use types::{Atom, Condition, Mutation, OpError, OpResult, Operation, Row, Value};

/// The database Antrea's agent (and Open vSwitch) uses.
pub const VSWITCH_DB: &str = "Open_vSwitch";

/// Everything that can go wrong talking to an OVSDB (or unixctl) server. Messages say what failed,
/// on what, and what to do; none carries row data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to OVSDB at {}: the socket does not exist (is ovsdb-server running? pass --db unix:PATH to point at it)", path.display())]
    SocketMissing { path: PathBuf },
    #[error("cannot connect to OVSDB at {}: permission denied (run as root or in the socket's group)", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("cannot connect to OVSDB at {}: connection refused (the socket exists but no ovsdb-server listens on it)", path.display())]
    Refused { path: PathBuf },
    #[error("cannot connect to OVSDB at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to OVSDB at {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    #[error("refusing to connect to OVSDB at {}: {reason}; a non-root user could have put their own listener there, so psk-guard sends nothing to it and trusts no reply (make every directory from / to the socket root-owned and writable only by root)", path.display())]
    Untrusted { path: PathBuf, reason: String },
    #[error("refusing the server on {}: the process listening there runs as uid {uid}{}, not root; ovsdb-server runs as root, so this is not it (find that process: a non-root user may have planted the socket)", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    PeerNotRoot {
        path: PathBuf,
        uid: u32,
        pid: Option<i32>,
    },
    #[error("timed out after {secs:.1}s connecting to OVSDB at {}", path.display())]
    ConnectTimeout { path: PathBuf, secs: f64 },
    #[error("the OVSDB server at {} closed the connection {}", path.display(), if *mid_message { "in the middle of a reply" } else { "before replying" })]
    Closed { path: PathBuf, mid_message: bool },
    #[error("the OVSDB server at {} sent an unusable message: {source}", path.display())]
    Frame {
        path: PathBuf,
        #[source]
        source: FrameError,
    },
    #[error("reading from the OVSDB server at {} failed: {kind}", path.display())]
    Io {
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
    #[error(
        "OVSDB {method} got no reply within {secs:.1}s (raise --timeout if the server is busy)"
    )]
    Timeout { method: String, secs: f64 },
    #[error("the OVSDB server has no database {db:?} (it has: {available}); is this an Open vSwitch database?")]
    UnknownDatabase { db: String, available: String },
    #[error("OVSDB {method} failed: {error}")]
    Rpc { method: String, error: String },
    #[error("unexpected reply to OVSDB {method}: {what}")]
    Protocol { method: &'static str, what: String },
    #[error("transact operation {index} ({op}) failed: {error}")]
    OpFailed {
        index: usize,
        op: &'static str,
        error: OpError,
    },
    #[error("transaction failed at commit: {0}")]
    CommitFailed(OpError),
}

impl Error {
    /// Why [`crate::nodefs::open_server_socket`] refused or failed, as a connection error.
    pub fn open(path: &std::path::Path, e: crate::nodefs::FsError) -> Error {
        use crate::nodefs::FsError;
        let path = path.to_owned();
        match e {
            FsError::Absent { .. } => Error::SocketMissing { path },
            e if e.is_permission_denied() => Error::PermissionDenied { path },
            e @ (FsError::NotRootOwned { .. }
            | FsError::UntrustedChain { .. }
            | FsError::UntrustedLink { .. }) => Error::Untrusted {
                path,
                reason: e.to_string(),
            },
            e => Error::Open {
                path,
                reason: e.to_string(),
            },
        }
    }

    /// True when psk-guard refused the server because it cannot be verified as root's
    /// ovsdb-server (the socket's owner, the directories above it, or the listening process).
    pub fn is_untrusted(&self) -> bool {
        matches!(self, Error::Untrusted { .. } | Error::PeerNotRoot { .. })
    }

    /// True when the server could not be reached at all (as opposed to failing mid-conversation).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::SocketMissing { .. }
                | Error::PermissionDenied { .. }
                | Error::Refused { .. }
                | Error::Connect { .. }
                | Error::Open { .. }
                | Error::ConnectTimeout { .. }
        )
    }
}

/// Parses `--db`: `unix:PATH` (the only transport psk-guard speaks; OVSDB's own default for Antrea).
pub fn parse_db_target(s: &str) -> Result<PathBuf, String> {
    match s.strip_prefix("unix:") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(format!(
            "unsupported OVSDB target {s:?}: use unix:PATH, e.g. unix:/var/run/antrea/openvswitch/db.sock"
        )),
    }
}
