//! `psk-guard check`: everything that can be judged on one node.
//!
//! The file checks run first and always; then OVSDB is queried for the tunnel keys. When the
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

pub async fn run(cfg: &CheckConfig, fp_key: &FingerprintKey) -> Report {
    let mut report = Report::new("check", fp_key.origin());
    report.target.insert("db".into(), cfg.db_target.clone());
    report
        .target
        .insert("run_dir".into(), cfg.paths.run_dir.display().to_string());
    report
        .target
        .insert("conf_db".into(), cfg.paths.conf_db.display().to_string());
    let reasons = files::check(&cfg.paths, &mut report).await;
    let exposure = tunnels::KeyExposure { reasons };

    let opts = Options {
        timeout: cfg.timeout,
        ..Options::default()
    };
    // The history scan reads conf.db on a blocking thread while ovsdb-server answers the query.
    let history = cfg
        .history
        .then(|| crate::forensics::start_history(&cfg.paths.conf_db, fp_key));
    let queried = async {
        let client = Client::connect(&cfg.db_sock, opts).await?;
        client.require_db(VSWITCH_DB).await?;
        let tunnels = tunnels::read(&client, fp_key).await?;
        let managers = remotes::read(&client).await?;
        Ok::<_, crate::ovsdb::Error>((tunnels, managers))
    }
    .await;
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
    let ovs_dir = cfg.paths.ovs_dir.clone();
    let cmd = if cfg.proc {
        tokio::task::spawn_blocking(move || remotes::cmdline(&ovs_dir))
            .await
            .unwrap_or_else(|_| remotes::Cmdline::Unknown("the task reading it failed".into()))
    } else {
        remotes::Cmdline::Skipped
    };
    let listed = remotes::list_remotes(&cfg.paths.ovs_dir, cfg.proc, cfg.timeout).await;
    remotes::analyze(managers.as_deref(), &cmd, &listed, &mut report);
    certkeys::check(&[&cfg.paths.run_dir, &cfg.cert_dir], cert_mode, &mut report).await;
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
