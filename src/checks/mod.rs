//! `psk-guard check`: everything that can be judged on one node.
//!
//! The file checks always run; OVSDB is queried for the tunnel keys at the same time. When the
//! server cannot be reached the report says so (finding `ovsdb-unreachable` and an `incomplete`
//! entry) and keeps what the file checks found.

pub mod certkeys;
pub mod downgrade;
pub mod files;
pub mod logs;
pub mod remotes;
pub mod tunnels;

use std::path::PathBuf;
use std::time::Duration;

use crate::ovsdb::{client::Options, Client, VSWITCH_DB};
use crate::report::{Code, Finding, Report, Severity, Subject};
use crate::secret::{Fingerprint, FingerprintKey};

/// Validated configuration of one `check` run.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub db_target: String,
    pub db_sock: PathBuf,
    pub paths: files::Paths,
    pub timeout: Duration,
    pub expect: Option<Fingerprint>,
    /// Scan conf.db's history for old keys (the forensics reader).
    pub history: bool,
    /// Where Antrea keeps the IPsec certificate and private key (certificate mode).
    pub cert_dir: PathBuf,
    /// The log scan (`None` with `--no-logs`).
    pub logs: Option<logs::LogConfig>,
    /// Read ovsdb-server's command line from /proc (off with `--no-proc`).
    pub proc: bool,
}

/// Opens the OVSDB socket through [`crate::nodefs`] (its directory chain checked, a root
/// listener by `SO_PEERCRED`) and connects, before anything else of `check` starts: the server
/// can then answer while the file checks, the history scan and /proc run.
async fn connect(cfg: &CheckConfig) -> Result<Client, crate::ovsdb::Error> {
    let opts = Options {
        timeout: cfg.timeout,
        ..Options::default()
    };
    Client::connect(&cfg.db_sock, opts).await
}

/// The tunnels and Manager rows, asked for on the connection with every request sent before
/// the first reply is awaited (the server answers them in order; `list_dbs` is still judged
/// first). The requests go out on this future's first poll.
async fn query(
    connected: Result<Client, crate::ovsdb::Error>,
    fp_key: &FingerprintKey,
) -> Result<(Vec<tunnels::Tunnel>, Vec<remotes::Manager>), crate::ovsdb::Error> {
    let client = connected?;
    let (db, ts, managers) = tokio::join!(
        client.require_db(VSWITCH_DB),
        tunnels::read(&client, fp_key),
        remotes::read(&client),
    );
    db?;
    Ok((ts?, managers?))
}

pub async fn run(cfg: &CheckConfig, fp_key: &FingerprintKey) -> Report {
    let mut report = Report::new("check", fp_key.origin());
    report.target.insert("db".into(), cfg.db_target.clone());
    report
        .target
        .insert("run_dir".into(), cfg.paths.run_dir.display().to_string());
    report
        .target
        .insert("conf_db".into(), cfg.paths.conf_db.display().to_string());
    // The OVSDB socket is opened (its chain checked) and connected first, alone, and the
    // requests are sent on the join's first poll (`query` comes first in it): the server computes
    // its replies while everything else that waits on the disk, /proc or a server runs at once:
    // the history scan (a blocking thread reading conf.db), the file checks, ovsdb-server's
    // command line and remotes, the key files. Their findings are added below one part after
    // another, in a fixed order, so the report is the same as when they ran in turn.
    let connected = connect(cfg).await;
    let key_dirs = [cfg.paths.run_dir.as_path(), cfg.cert_dir.as_path()];
    let (queried, history, (obs, accounts), (cmd, listed), looked) = tokio::join!(
        query(connected, fp_key),
        async {
            cfg.history
                .then(|| crate::forensics::start_history(&cfg.paths.conf_db, fp_key))
        },
        files::observe_async(&cfg.paths),
        remotes::server(&cfg.paths.ovs_dir, cfg.proc, cfg.timeout),
        certkeys::look_async(&key_dirs),
    );
    let exposure = tunnels::KeyExposure {
        reasons: files::add(&obs, &accounts, &mut report),
    };
    drop((obs, accounts));
    let mut cert_mode = false;
    let mut keys = logs::Keys::default();
    let managers = match queried {
        Ok((ts, managers)) => {
            let mut last = None;
            for k in ts.iter().filter_map(|t| t.key.as_ref()) {
                // Tunnels sharing a key share its probes: add each set once.
                if last.is_none_or(|l| !std::sync::Arc::ptr_eq(l, &k.probes)) {
                    keys.add(k.probes.iter().cloned(), true);
                    last = Some(&k.probes);
                }
            }
            downgrade::analyze(&ts, &mut report);
            cert_mode = ts.iter().any(|t| t.remote_name);
            tunnels::analyze(ts, &exposure, cfg.expect, &mut report);
            Some(managers)
        }
        Err(e) if e.is_untrusted() => {
            report.push(
                Finding::new(Code::OvsdbServerUntrusted, Severity::High, Subject::path(&cfg.db_sock))
                    .observed(e.to_string())
                    .expected("a root-owned socket under root-owned directories only root may write in, with a process running as root listening on it")
                    .remediation("find who created the socket or controls the directory (see path-chain-not-root-controlled and the owner findings), remove their access, restart antrea-agent's ovsdb-server, then check again"),
            );
            report.not_checked("tunnel keys in OVSDB", e.to_string());
            report.not_checked("OVSDB Manager rows", e.to_string());
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "OVSDB query failed");
            report.push(
                Finding::new(Code::OvsdbUnreachable, Severity::Medium, Subject::ovsdb(&cfg.db_target))
                    .observed(e.to_string())
                    .expected("ovsdb-server answers on the socket")
                    .remediation("check that antrea-agent's ovsdb-server runs on this node and that --db points at its socket; run as root"),
            );
            report.not_checked("tunnel keys in OVSDB", e.to_string());
            report.not_checked("OVSDB Manager rows", e.to_string());
            None
        }
    };
    remotes::analyze(managers.as_deref(), &cmd, &listed, &mut report);
    certkeys::add(looked, cert_mode, &mut report);
    if let Some(task) = history {
        let old = crate::forensics::finish_history(&cfg.paths.conf_db, task, &mut report).await;
        keys.add(old, false);
    }
    if let Some(l) = &cfg.logs {
        logs::check(l, keys, fp_key, &mut report).await;
    }
    report.sort();
    report
}
