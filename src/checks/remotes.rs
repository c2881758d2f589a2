//! OVSDB on the network: remotes that let something beyond this node read and write the whole
//! database, the PSK included.
//!
//! ovsdb-server takes its remotes from `--remote` options on its command line, and from database
//! rows when one of them is `db:DB,TABLE,COLUMN` (ovs-ctl, which Antrea's start scripts use,
//! passes `--remote=db:Open_vSwitch,Open_vSwitch,manager_options`, so every `Manager` row's
//! `target` that `Open_vSwitch:manager_options` references is served). Passive `ptcp:`/`pssl:`
//! remotes listen on a TCP port; active `tcp:`/`ssl:` remotes connect out to a manager. Either
//! way the database is reachable without the unix socket's permissions: critical. `punix:`/`unix:`
//! remotes are local files and are judged by the file checks. (Remote syntax: ovsdb-server(1),
//! "Remote Connection Methods"; `db:` remotes: ovsdb/ovsdb-server.c `query_db_remotes`.)

use std::path::Path;

use serde_json::json;

use crate::nodefs::{self, Accounts, FsError};
use crate::ovsdb::{Client, OpResult, Operation, Value, VSWITCH_DB};
use crate::report::{Code, Finding, Report, Severity, Subject};

/// Longest remote string put into a report.
const MAX_SHOWN: usize = 256;
/// `/proc/PID/cmdline` is read up to this many bytes.
const MAX_CMDLINE: u64 = 64 * 1024;
/// `/proc/PID/status` is read up to this many bytes.
const MAX_STATUS: u64 = 16 * 1024;
/// The most bytes of `ovsdb-server.pid` read: a pid and a newline.
const MAX_PIDFILE: u64 = 32;
/// Processes looked at when the pidfile's pid is from another pid namespace.
const MAX_PROCS: usize = 100_000;

/// What kind of connection a remote opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ptcp:` / `pssl:` — listens on TCP.
    Listens,
    /// `tcp:` / `ssl:` — connects out to a manager.
    ConnectsOut,
    /// `punix:` / `unix:` — a local socket file.
    Local,
    /// `db:DB,TABLE,COLUMN` — the targets come from database rows.
    FromDb,
    Unknown,
}

/// Classifies one remote string (ovsdb-server(1) syntax).
pub fn classify(target: &str) -> Kind {
    let method = target.split(':').next().unwrap_or("");
    match method {
        "ptcp" | "pssl" => Kind::Listens,
        "tcp" | "ssl" => Kind::ConnectsOut,
        "punix" | "unix" => Kind::Local,
        "db" => Kind::FromDb,
        _ => Kind::Unknown,
    }
}

fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_SHOWN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}

/// Where a passive remote listens: `ptcp:PORT[:IP]` binds all addresses when IP is left out.
fn listen_address(target: &str) -> String {
    let mut parts = target.splitn(3, ':');
    let _method = parts.next();
    let port = parts.next().unwrap_or("");
    match parts.next() {
        Some(ip) if !ip.is_empty() => format!("{ip} port {port}"),
        _ => format!("every address, port {port}"),
    }
}

fn is_loopback(target: &str) -> bool {
    let host = target.splitn(3, ':').nth(2).unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.starts_with("127.") || host == "::1" || host == "localhost"
}

/// A `Manager` row.
#[derive(Debug, Clone)]
pub struct Manager {
    pub uuid: String,
    pub target: String,
    /// Referenced from `Open_vSwitch:manager_options` (what ovs-ctl's `db:` remote serves).
    pub in_manager_options: bool,
}

/// Reads the Manager rows and `Open_vSwitch:manager_options` in one transaction.
pub async fn read(client: &Client) -> Result<Vec<Manager>, crate::ovsdb::Error> {
    let ops = [
        Operation::select("Manager", vec![], &["_uuid", "target"]),
        Operation::select("Open_vSwitch", vec![], &["manager_options"]),
    ];
    let mut results = client.transact_ok(VSWITCH_DB, &ops).await?;
    let roots = match results.pop() {
        Some(OpResult::Select { rows }) => rows,
        _ => vec![],
    };
    let managers = match results.pop() {
        Some(OpResult::Select { rows }) => rows,
        _ => vec![],
    };
    let referenced: Vec<String> = roots
        .iter()
        .filter_map(|r| r.get("manager_options"))
        .flat_map(|v| v.as_set())
        .filter_map(|a| a.as_uuid().map(str::to_owned))
        .collect();
    let mut out: Vec<Manager> = managers
        .iter()
        .map(|r| {
            let uuid = r
                .get("_uuid")
                .and_then(Value::as_atom)
                .and_then(|a| a.as_uuid())
                .unwrap_or_default()
                .to_owned();
            Manager {
                in_manager_options: referenced.contains(&uuid),
                target: r
                    .get("target")
                    .and_then(Value::as_atom)
                    .and_then(|a| a.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                uuid,
            }
        })
        .collect();
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

/// ovsdb-server's command line, as far as it could be read.
#[derive(Debug, Clone)]
pub enum Cmdline {
    Read {
        pid: u32,
        args: Vec<String>,
    },
    /// Why it could not be read (goes into the report's `incomplete`).
    Unknown(String),
    /// Not looked at (`--no-proc`).
    Skipped,
}

/// The `--remote` values of an ovsdb-server command line (`--remote=X` and `--remote X`).
pub fn remotes_in(args: &[String]) -> Vec<String> {
    let mut out = vec![];
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--remote=") {
            out.push(v.to_owned());
        } else if a == "--remote" {
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        }
    }
    out
}

/// Reads a small file through [`nodefs`]: reached from `/` without following a link a non-root
/// user controls, the last component never followed, a regular file only (procfs files are
/// regular files of size 0), read through the descriptor, more than `max` bytes an error.
fn read_small(path: &Path, max: u64, accounts: &Accounts) -> Result<Vec<u8>, FsError> {
    nodefs::open(path, accounts)?.read_bounded(max)
}

fn comm_is_ovsdb_server(pid: u32, accounts: &Accounts) -> bool {
    read_small(Path::new(&format!("/proc/{pid}/comm")), 64, accounts)
        .is_ok_and(|c| c.trim_ascii() == b"ovsdb-server")
}

/// The host pid of the ovsdb-server whose pid in its own namespace is `pid` (the pidfile holds
/// the pid as the agent container sees it): the process named ovsdb-server whose `NSpid` ends in
/// `pid`. Bounded to [`MAX_PROCS`] entries of /proc.
fn find_in_namespaces(pid: u32, accounts: &Accounts) -> Option<u32> {
    let (names, _) = nodefs::open(Path::new("/proc"), accounts)
        .ok()?
        .list_bounded(MAX_PROCS)
        .ok()?;
    for name in names {
        let Some(host) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if !comm_is_ovsdb_server(host, accounts) {
            continue;
        }
        let status = read_small(
            Path::new(&format!("/proc/{host}/status")),
            MAX_STATUS,
            accounts,
        )
        .ok()?;
        let text = String::from_utf8_lossy(&status);
        let last = text
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|p| p.parse::<u32>().ok());
        if last == Some(pid) {
            return Some(host);
        }
    }
    None
}

/// Why `ovsdb-server.pid` gave no pid.
#[derive(Debug)]
pub enum PidfileError {
    /// It could not be opened (absent, a link, under a link a non-root user controls, ...).
    Open(FsError),
    /// It is there but is not ovsdb-server's, or holds no pid.
    Invalid(String),
}

impl std::fmt::Display for PidfileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidfileError::Open(e) => e.fmt(f),
            PidfileError::Invalid(why) => f.write_str(why),
        }
    }
}

/// The pid in `pidfile` (`<ovs_dir>/ovsdb-server.pid`), a small regular file that ovsdb-server,
/// running as root, writes: opened through [`nodefs`], owned by root, at most 32 bytes. Used by
/// `check` (the command line) and `fix` (the unixctl socket).
pub fn ovsdb_server_pid(pidfile: &Path, accounts: &Accounts) -> Result<u32, PidfileError> {
    let e = nodefs::open(pidfile, accounts).map_err(PidfileError::Open)?;
    if e.meta.uid != 0 {
        return Err(PidfileError::Invalid(format!(
            "{} is owned by uid {}, not root: not ovsdb-server's",
            pidfile.display(),
            e.meta.uid
        )));
    }
    let b = e
        .read_bounded(MAX_PIDFILE)
        .map_err(|e| PidfileError::Invalid(e.to_string()))?;
    std::str::from_utf8(&b)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| {
            PidfileError::Invalid(format!("{} does not hold a process id", pidfile.display()))
        })
}

/// Reads the command line of the ovsdb-server named in `<ovs_dir>/ovsdb-server.pid`, checking
/// that the process is ovsdb-server (a stale pidfile may name another process). Every file is
/// read through [`nodefs`].
pub fn cmdline(ovs_dir: &Path) -> Cmdline {
    let accounts = Accounts::load();
    let pid = match ovsdb_server_pid(&ovs_dir.join("ovsdb-server.pid"), &accounts) {
        Ok(p) => p,
        Err(why) => return Cmdline::Unknown(why.to_string()),
    };
    let host = if comm_is_ovsdb_server(pid, &accounts) {
        pid
    } else {
        match find_in_namespaces(pid, &accounts) {
            Some(h) => h,
            None => {
                return Cmdline::Unknown(format!(
                    "no ovsdb-server process with pid {pid} is visible (run psk-guard on the host, or in a pod with hostPID)"
                ))
            }
        }
    };
    match read_small(
        Path::new(&format!("/proc/{host}/cmdline")),
        MAX_CMDLINE,
        &accounts,
    ) {
        Ok(b) => {
            let args: Vec<String> = b
                .split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let argv0 = args.first().map(String::as_str).unwrap_or("");
            if Path::new(argv0).file_name() != Some(std::ffi::OsStr::new("ovsdb-server")) {
                return Cmdline::Unknown(format!("process {host} is not ovsdb-server"));
            }
            Cmdline::Read { pid: host, args }
        }
        Err(e) => Cmdline::Unknown(format!("cannot read ovsdb-server's command line: {e}")),
    }
}

fn network_finding(target: &str, kind: Kind, subject: Subject, severity: Severity) -> Finding {
    let (how, place) = match kind {
        Kind::Listens => (
            format!("listens on {}", listen_address(target)),
            if is_loopback(target) {
                "every process on the node (including hostNetwork pods) can connect without the unix socket's permissions"
            } else {
                "anyone who can reach the node's address can connect"
            },
        ),
        _ => (
            "connects out to a manager".to_owned(),
            "the manager at the other end can read and write the database",
        ),
    };
    Finding::new(Code::OvsdbNetworkRemote, severity, subject)
        .observed(format!("OVSDB remote {} {how}: {place}", shown(target)))
        .expected("only punix: remotes (the unix socket db.sock)")
        .remediation("remove the remote (ovs-vsctl del-manager, or drop --remote from ovsdb-server's command line), then rotate the PSK (psk-guard rotate): whoever could connect may have read it")
        .detail("remote", shown(target))
}

/// Adds the findings for network remotes among `managers` and on ovsdb-server's command line.
pub fn analyze(managers: Option<&[Manager]>, cmd: &Cmdline, report: &mut Report) {
    let served_from_db = match cmd {
        Cmdline::Read { args, .. } => {
            Some(remotes_in(args).iter().any(|r| classify(r) == Kind::FromDb))
        }
        Cmdline::Unknown(_) | Cmdline::Skipped => None,
    };
    for m in managers.unwrap_or_default() {
        let kind = classify(&m.target);
        if !matches!(kind, Kind::Listens | Kind::ConnectsOut) {
            continue;
        }
        // Served now, or unknown: critical. Known not served (no db: remote): the row waits for
        // the next start of ovsdb-server with ovs-ctl's default options.
        let severity = if served_from_db == Some(false) {
            Severity::High
        } else {
            Severity::Critical
        };
        report.push(
            network_finding(
                &m.target,
                kind,
                Subject::named("ovsdb-remote", shown(&m.target)),
                severity,
            )
            .detail("source", "Manager row")
            .detail("in_manager_options", m.in_manager_options)
            .detail("served_now", json!(served_from_db)),
        );
    }
    match cmd {
        Cmdline::Read { pid, args } => {
            for r in remotes_in(args) {
                let kind = classify(&r);
                if matches!(kind, Kind::Listens | Kind::ConnectsOut) {
                    report.push(
                        network_finding(
                            &r,
                            kind,
                            Subject::named("ovsdb-remote", shown(&r)),
                            Severity::Critical,
                        )
                        .detail("source", "ovsdb-server command line")
                        .detail("pid", *pid),
                    );
                }
            }
        }
        Cmdline::Unknown(why) => {
            report.not_checked("ovsdb-server command line (--remote)", why.clone())
        }
        Cmdline::Skipped => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_kinds_and_parsing() {
        assert_eq!(classify("ptcp:6640"), Kind::Listens);
        assert_eq!(classify("pssl:6640:10.0.0.1"), Kind::Listens);
        assert_eq!(classify("tcp:10.0.0.9:6640"), Kind::ConnectsOut);
        assert_eq!(classify("ssl:10.0.0.9:6640"), Kind::ConnectsOut);
        assert_eq!(classify("punix:/var/run/openvswitch/db.sock"), Kind::Local);
        assert_eq!(
            classify("db:Open_vSwitch,Open_vSwitch,manager_options"),
            Kind::FromDb
        );
        let args: Vec<String> = [
            "ovsdb-server",
            "/x/conf.db",
            "--remote=punix:/s",
            "--remote",
            "ptcp:0:127.0.0.1",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(remotes_in(&args), vec!["punix:/s", "ptcp:0:127.0.0.1"]);
        assert!(is_loopback("ptcp:0:127.0.0.1"));
        assert!(!is_loopback("ptcp:6640"));
        assert_eq!(listen_address("ptcp:6640"), "every address, port 6640");
    }
}
