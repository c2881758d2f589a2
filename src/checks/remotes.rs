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
//!
//! Three sources, one finding per remote (`details.sources` says which found it):
//! - ovsdb-server itself, over its unixctl socket: `ovsdb-server/list-remotes` answers with every
//!   configured remote, one per line, sorted — the `--remote` options of its command line and
//!   those added at run time with `ovsdb-server/add-remote`; `db:` remotes are listed as written,
//!   not expanded into the Manager targets they serve (ovsdb/ovsdb-server.c
//!   `ovsdb_server_list_remotes` prints the names of the `remotes` shash that `parse_options`
//!   fills from `--remote` and `ovsdb_server_add_remote` extends). This needs no /proc, so it
//!   works in a node Job without hostPID (`audit --nodes`, `check --no-proc`).
//! - `/proc/<pid>/cmdline` (unless `--no-proc`).
//! - The `Manager` rows, served when a `db:` remote names them.

use std::path::Path;
use std::time::Duration;

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
/// Largest `ovsdb-server/list-remotes` reply read (its JSON-RPC message).
pub const MAX_LIST_REPLY: usize = 64 * 1024;
/// Most remotes taken from one `ovsdb-server/list-remotes` reply.
pub const MAX_LISTED: usize = 1024;

/// Where a remote was seen (`details.sources`).
pub const FROM_SERVER: &str = "ovsdb-server/list-remotes";
pub const FROM_CMDLINE: &str = "ovsdb-server command line";
pub const FROM_MANAGER: &str = "Manager row";

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

/// Reads the command line of the ovsdb-server named in `<ovs_dir>/ovsdb-server.pid` (`pid`: what [`ovsdb_server_pid`] read from it), checking
/// that the process is ovsdb-server (a stale pidfile may name another process). Every file is
/// read through [`nodefs`].
pub fn cmdline_of(pid: Result<u32, &PidfileError>, accounts: &Accounts) -> Cmdline {
    let pid = match pid {
        Ok(p) => p,
        Err(why) => return Cmdline::Unknown(why.to_string()),
    };
    let host = if comm_is_ovsdb_server(pid, accounts) {
        pid
    } else {
        match find_in_namespaces(pid, accounts) {
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
        accounts,
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

/// The remotes ovsdb-server says it serves (`ovsdb-server/list-remotes`), or why not known.
#[derive(Debug, Clone)]
pub enum Listed {
    Read(Vec<String>),
    Unknown(String),
}

/// What `check` learns of the running ovsdb-server: its command line (unless `--no-proc`) and
/// the remotes it lists (see [`list_remotes`]). `ovsdb-server.pid` is read once, on one blocking
/// thread, for both.
pub async fn server(ovs_dir: &Path, look_in_proc: bool, timeout: Duration) -> (Cmdline, Listed) {
    let dir = ovs_dir.to_owned();
    let found = tokio::task::spawn_blocking(move || {
        let accounts = Accounts::load();
        let pid = ovsdb_server_pid(&dir.join("ovsdb-server.pid"), &accounts);
        let cmd = match look_in_proc {
            true => cmdline_of(pid.as_ref().copied(), &accounts),
            false => Cmdline::Skipped,
        };
        let ctl = crate::fix::ctl_of(&dir, pid.as_ref().copied(), &accounts, look_in_proc);
        (cmd, ctl)
    })
    .await;
    match found {
        Ok((cmd, ctl)) => (cmd, list_remotes(ctl, timeout).await),
        Err(_) => (
            Cmdline::Unknown("the task reading it failed".into()),
            Listed::Unknown("the task finding the control socket failed".into()),
        ),
    }
}

/// Asks the running ovsdb-server for its remotes over its unixctl socket, found as `fix` finds
/// it ([`crate::fix::find_ctl`]: the pidfile, then `ovsdb-server.<pid>.ctl`, opened through
/// [`nodefs`], a root listener by `SO_PEERCRED`; with `look_in_proc` a pid that /proc shows to
/// be another process is rejected). The reply is bounded ([`MAX_LIST_REPLY`]) and parsed by
/// [`parse_listed`].
async fn list_remotes(found: Result<nodefs::Entry, String>, timeout: Duration) -> Listed {
    let ctl = match found {
        Ok(e) => e,
        Err(why) => return Listed::Unknown(format!("no control socket: {why}")),
    };
    let reply = crate::ovsdb::client::unixctl_bounded(
        &ctl,
        "ovsdb-server/list-remotes",
        &[],
        timeout,
        MAX_LIST_REPLY,
    )
    .await;
    match reply {
        Ok(text) => match parse_listed(&text) {
            Ok(v) => Listed::Read(v),
            Err(why) => Listed::Unknown(format!(
                "ovsdb-server/list-remotes through {}: {why}",
                ctl.path.display()
            )),
        },
        Err(e) => Listed::Unknown(format!("ovsdb-server/list-remotes: {e}")),
    }
}

/// The remotes of a `list-remotes` reply: one per line. More than [`MAX_LISTED`], or a line with
/// a control character (a remote never has one), is an error: the reply is not ovsdb-server's.
pub fn parse_listed(text: &str) -> Result<Vec<String>, String> {
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    if lines.len() > MAX_LISTED {
        return Err(format!(
            "the reply lists more than {MAX_LISTED} remotes; not taken"
        ));
    }
    if lines.iter().any(|l| l.chars().any(char::is_control)) {
        return Err("the reply holds control characters; not taken".into());
    }
    Ok(lines.into_iter().map(str::to_owned).collect())
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

/// Whether the `db:DB,TABLE,COLUMN` remote `db` serves Manager row `m` (ovsdb-server.c
/// `query_db_remotes`: a string column's values are remotes, a uuid column serves the Manager rows
/// it references). None when it names neither: it may serve the row through another reference.
fn db_remote_serves(db: &str, m: &Manager) -> Option<bool> {
    let spec = db.strip_prefix("db:")?;
    match spec.split(',').collect::<Vec<_>>().as_slice() {
        [_, "Manager", "target"] => Some(true),
        [_, "Open_vSwitch", "manager_options"] => Some(m.in_manager_options),
        _ => None,
    }
}

/// The remotes ovsdb-server is configured with: as it lists them, else from its command line
/// (which misses those added at run time); None when neither is known.
fn configured(cmd: &Cmdline, listed: &Listed) -> Option<Vec<String>> {
    match (listed, cmd) {
        (Listed::Read(v), _) => Some(v.clone()),
        (_, Cmdline::Read { args, .. }) => Some(remotes_in(args)),
        _ => None,
    }
}

/// Whether the running ovsdb-server serves Manager row `m` now (None: cannot tell).
fn served_now(m: &Manager, configured: Option<&[String]>) -> Option<bool> {
    let mut unknown = false;
    for r in configured?.iter().filter(|r| classify(r) == Kind::FromDb) {
        match db_remote_serves(r, m) {
            Some(true) => return Some(true),
            Some(false) => {}
            None => unknown = true,
        }
    }
    (!unknown).then_some(false)
}

/// One network remote and where it was seen.
struct Seen {
    kind: Kind,
    sources: Vec<&'static str>,
    pid: Option<u32>,
    /// From a Manager row: (in manager_options, served now).
    manager: Option<(bool, Option<bool>)>,
}

/// Adds one `ovsdb-network-remote` finding per network remote found by ovsdb-server itself
/// (`listed`), on its command line (`cmd`) or among the `managers` rows, with the sources that
/// found it; records what could not be looked at.
pub fn analyze(managers: Option<&[Manager]>, cmd: &Cmdline, listed: &Listed, report: &mut Report) {
    let mut seen: std::collections::BTreeMap<String, Seen> = Default::default();
    if let Listed::Read(remotes) = listed {
        for r in remotes {
            seen_entry(&mut seen, r, FROM_SERVER);
        }
    }
    if let Cmdline::Read { pid, args } = cmd {
        for r in remotes_in(args) {
            if let Some(s) = seen_entry(&mut seen, &r, FROM_CMDLINE) {
                s.pid = Some(*pid);
            }
        }
    }
    let conf = configured(cmd, listed);
    for m in managers.unwrap_or_default() {
        let served = served_now(m, conf.as_deref());
        if let Some(s) = seen_entry(&mut seen, &m.target, FROM_MANAGER) {
            s.manager = Some((m.in_manager_options, served));
        }
    }
    for (target, s) in seen {
        let direct = s.sources.iter().any(|x| *x != FROM_MANAGER);
        let served = s.manager.and_then(|(_, served)| served);
        // Served now, or unknown: critical. A Manager row known not to be served waits for the
        // next start of ovsdb-server with ovs-ctl's default options: high.
        let severity = if !direct && served == Some(false) {
            Severity::High
        } else {
            Severity::Critical
        };
        let mut f = network_finding(
            &target,
            s.kind,
            Subject::named("ovsdb-remote", shown(&target)),
            severity,
        )
        .detail("source", s.sources[0])
        .detail("sources", json!(s.sources));
        if let Some(pid) = s.pid {
            f = f.detail("pid", pid);
        }
        if let Some((in_options, served)) = s.manager {
            f = f.detail("in_manager_options", in_options).detail(
                "served_now",
                json!(if direct { Some(true) } else { served }),
            );
        }
        report.push(f);
    }
    not_looked_at(cmd, listed, report);
}

/// The remote `target` in `seen` (added with `source`) when it is a network remote.
fn seen_entry<'a>(
    seen: &'a mut std::collections::BTreeMap<String, Seen>,
    target: &str,
    source: &'static str,
) -> Option<&'a mut Seen> {
    let kind = classify(target);
    if !matches!(kind, Kind::Listens | Kind::ConnectsOut) {
        return None;
    }
    let s = seen.entry(target.to_owned()).or_insert(Seen {
        kind,
        sources: vec![],
        pid: None,
        manager: None,
    });
    if !s.sources.contains(&source) {
        s.sources.push(source);
    }
    Some(s)
}

/// Neither ovsdb-server nor its command line told which remotes it serves: an `incomplete` entry.
fn not_looked_at(cmd: &Cmdline, listed: &Listed, report: &mut Report) {
    let Listed::Unknown(asked) = listed else {
        return;
    };
    let why = match cmd {
        Cmdline::Read { .. } => return,
        Cmdline::Unknown(why) => format!("{asked}; its command line: {why}"),
        Cmdline::Skipped => format!("{asked}; its command line was not read (--no-proc)"),
    };
    report.not_checked("remotes ovsdb-server serves (--remote)", why);
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
