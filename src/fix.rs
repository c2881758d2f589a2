//! `psk-guard fix`: the remediations a node can get without a person choosing a value.
//!
//! It plans first (and prints the plan), then, unless `--dry-run`, compacts the live database
//! through ovsdb-server's unixctl socket so old keys are rewritten out of conf.db, and tightens
//! modes. It never loosens a bit: every new mode is the current one minus the rule's forbidden
//! bits (setuid/setgid always among them), computed from an `fstat` of the descriptor opened
//! while planning just before the change, and the modes compaction resets are restored. Every
//! path is opened through [`crate::nodefs`] and changed through that descriptor; nothing is
//! changed when a directory on the way is controlled by a non-root user, nor any link, FIFO or
//! device. Then it verifies: a fresh file check and a re-scan of the file must show nothing it set
//! out to fix, and every check must have run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::checks::files::{self, Paths};
use crate::forensics;
use crate::nodefs::{self, Accounts, Entry, Kind};
use crate::ovsdb::client::unixctl;
use crate::report::{Code, Report, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::secret::FingerprintKey;

#[derive(Debug, Clone)]
pub struct FixConfig {
    pub paths: Paths,
    pub db_target: String,
    /// unixctl socket override; otherwise found from `ovsdb-server.pid`.
    pub ctl: Option<PathBuf>,
    pub dry_run: bool,
    /// Only compaction (what a rotation asks for): no mode changes.
    pub only_compact: bool,
    pub timeout: Duration,
}

/// One planned change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Chmod {
        path: PathBuf,
        from: u32,
        to: u32,
        mask: u32,
    },
    Compact {
        ctl: PathBuf,
        old_keys: usize,
    },
}

impl Action {
    pub fn describe(&self) -> String {
        match self {
            Action::Chmod { path, from, to, .. } => {
                format!("chmod {:04o} {} (was {:04o})", to, path.display(), from)
            }
            Action::Compact { ctl, old_keys } => format!(
                "compact conf.db through {} (ovsdb-server/compact) to remove {old_keys} old key(s)",
                ctl.display()
            ),
        }
    }
}

/// The `incomplete` entry of a `--only-compact` run whose read-only mount could not restore
/// conf.db's mode after compaction; `rotate` reads it back from the node's result.
pub const MODE_AFTER_COMPACTION: &str = "conf.db mode after compaction";

/// Is `pid` a running ovsdb-server? By the basename of `/proc/<pid>/exe` (the binary, which a
/// process cannot rename itself to), or its `comm` when `exe` is not readable. A pid that is not
/// visible here is accepted: ovsdb-server runs in antrea-agent's pod, whose pid namespace a node
/// Job (no hostPID) does not share. The pidfile itself is then the evidence, and it was checked
/// to be a small root-owned file under root-controlled directories.
fn is_ovsdb_server(pid: u32) -> Result<(), String> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !proc_dir.exists() {
        tracing::debug!(
            pid,
            "the pidfile's process is not visible in this pid namespace"
        );
        return Ok(());
    }
    let name = match std::fs::read_link(proc_dir.join("exe")) {
        Ok(exe) => exe
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_owned()
            })
            .unwrap_or_default(),
        Err(_) => std::fs::File::open(proc_dir.join("comm"))
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nodefs::read_bounded(f, 64, &proc_dir.join("comm")).map_err(|e| e.to_string())
            })
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .map_err(|e| format!("cannot tell what process {pid} is: {e}"))?,
    };
    if name == "ovsdb-server" {
        Ok(())
    } else {
        Err(format!(
            "process {pid} is not ovsdb-server (its executable is {:?})",
            name.chars().take(64).collect::<String>()
        ))
    }
}

/// Opens a unixctl socket the way every server socket is opened ([`nodefs::open_server_socket`]).
fn verified_ctl(path: &Path, accounts: &Accounts) -> Result<Entry, String> {
    nodefs::open_server_socket(path, accounts).map_err(|e| e.to_string())
}

/// Finds ovsdb-server's unixctl socket the way Open vSwitch names it:
/// `<ovs_dir>/ovsdb-server.pid` (a small regular file owned by root, holding the pid of a
/// running ovsdb-server), then `<ovs_dir>/ovsdb-server.<pid>.ctl`. With `look_in_proc` the pid
/// must not be a visible process other than ovsdb-server (`check --no-proc` leaves /proc alone;
/// the socket is still root's, reached without links, with a root listener).
pub fn find_ctl(ovs_dir: &Path, accounts: &Accounts, look_in_proc: bool) -> Result<Entry, String> {
    let pidfile = ovs_dir.join("ovsdb-server.pid");
    let pid = crate::checks::remotes::ovsdb_server_pid(&pidfile, accounts);
    ctl_of(ovs_dir, pid.as_ref().copied(), accounts, look_in_proc)
}

/// [`find_ctl`] with the pidfile already read (`pid`: what
/// [`crate::checks::remotes::ovsdb_server_pid`] gave), so `check` reads it once for both the
/// command line and the control socket.
pub fn ctl_of(
    ovs_dir: &Path,
    pid: Result<u32, &crate::checks::remotes::PidfileError>,
    accounts: &Accounts,
    look_in_proc: bool,
) -> Result<Entry, String> {
    let pidfile = ovs_dir.join("ovsdb-server.pid");
    use crate::checks::remotes::PidfileError;
    let pid = pid.map_err(|e| match e {
        PidfileError::Open(e) => format!(
            "no readable {} ({e}): ovsdb-server does not seem to run",
            pidfile.display()
        ),
        PidfileError::Invalid(why) => why.clone(),
    })?;
    if look_in_proc {
        is_ovsdb_server(pid).map_err(|e| format!("{} names pid {pid}: {e}", pidfile.display()))?;
    }
    let ctl = ovs_dir.join(format!("ovsdb-server.{pid}.ctl"));
    verified_ctl(&ctl, accounts).map_err(|e| match e {
        e if e.contains("is absent") => format!(
            "{} is absent: ovsdb-server (pid {pid}) uses another --unixctl path (psk-guard fix takes that path with --ctl)",
            ctl.display()
        ),
        e => e,
    })
}

/// Removes the rule's forbidden bits from the opened inode's current mode; never adds a bit.
fn tighten(e: &Entry, forbidden: u32) -> Result<Option<(u32, u32)>, String> {
    let now = e.restat().map_err(|e| e.to_string())?;
    let from = now.mode;
    let to = from & !forbidden;
    if to == from {
        return Ok(None);
    }
    e.chmod(to)
        .map_err(|err| format!("{err} (to {to:04o}, from {from:04o})"))?;
    Ok(Some((from, to)))
}

async fn scan_conf_db(cfg: &FixConfig, fp_key: &FingerprintKey) -> Result<forensics::Scan, String> {
    let (conf_db, k) = (cfg.paths.conf_db.clone(), fp_key.clone());
    tokio::task::spawn_blocking(move || {
        forensics::scan_file(&conf_db, forensics::log::DEFAULT_MAX_RECORD, &k)
    })
    .await
    .map_err(|_| "the scan task failed".to_string())
    .and_then(|r| r.map_err(|e| e.to_string()))
}

fn print_plan(out: &mut dyn std::io::Write, plan: &[Action], dry_run: bool) {
    let _ = writeln!(
        out,
        "psk-guard fix: plan ({} change(s){}):",
        plan.len(),
        if dry_run {
            ", dry run: nothing will be changed"
        } else {
            ""
        }
    );
    for a in plan {
        // Paths come from the node (names listed from openvswitch/): escaped like every report text.
        let _ = writeln!(out, "  - {}", crate::report::sanitize::text(&a.describe()));
    }
    if plan.is_empty() {
        let _ = writeln!(out, "  (nothing to fix)");
    }
}

/// Stops before changing anything: says why, records it, fills the report; exit 2.
async fn refuse(
    out: &mut dyn std::io::Write,
    report: &mut Report,
    cfg: &FixConfig,
    plan: &[Action],
    scan: Option<&forensics::Scan>,
    what: &str,
    why: String,
) -> u8 {
    let _ = writeln!(
        out,
        "psk-guard fix: {}. Changed nothing.",
        crate::report::sanitize::text(&why)
    );
    report.not_checked(what, why);
    finish(report, cfg, scan, plan, false).await;
    EXIT_ERROR
}

/// Runs `fix`. Returns the report (what remains after the fix) and the exit status: 0 when
/// everything it set out to fix is fixed and verified, 1 when something remains, 2 when
/// something it set out to check or change could not be (nothing changed when it refused).
pub async fn run(
    cfg: &FixConfig,
    fp_key: &FingerprintKey,
    plan_out: &mut dyn std::io::Write,
) -> (Report, u8) {
    let mut report = Report::new("fix", fp_key.origin());
    report.target.insert("db".into(), cfg.db_target.clone());
    report
        .target
        .insert("run_dir".into(), cfg.paths.run_dir.display().to_string());

    // 1. Observe and plan. Nothing is changed below a directory a non-root user controls.
    let (obs, accounts) = files::observe_async(&cfg.paths).await;
    let mut plan = vec![];
    let mut targets = vec![];
    if let Some((dir, (why, _))) = files::untrusted_dirs(&obs, &accounts).into_iter().next() {
        let why = format!(
            "refusing to change anything: {} is {why}, so what lies below it could be swapped for a link between a check and a change",
            dir.display()
        );
        let code = refuse(plan_out, &mut report, cfg, &plan, None, "fix", why).await;
        return (report, code);
    }
    for o in obs.iter().filter(|_| !cfg.only_compact) {
        if let Some(e) = o.judged() {
            if e.meta.mode & o.rule.forbidden != 0 {
                plan.push(Action::Chmod {
                    path: o.path.clone(),
                    from: e.meta.mode,
                    to: e.meta.mode & !o.rule.forbidden,
                    mask: o.rule.forbidden,
                });
                targets.push(o);
            }
        }
    }
    let scan = scan_conf_db(cfg, fp_key).await;
    let old_keys = match &scan {
        Ok(s) => s.old_keys().count(),
        Err(e) => {
            report.not_checked("conf.db history", e.clone());
            0
        }
    };
    let mut ctl_entry = None;
    if old_keys > 0 {
        let ctl = match &cfg.ctl {
            Some(c) => verified_ctl(c, &accounts).map(|e| (c.clone(), e)),
            None => find_ctl(&cfg.paths.ovs_dir, &accounts, true).map(|e| (e.path.clone(), e)),
        };
        match ctl {
            Ok((ctl, e)) => {
                plan.insert(0, Action::Compact { ctl, old_keys });
                ctl_entry = Some(e);
            }
            Err(why) => {
                let why = format!("{old_keys} old key(s) remain in {}, but compaction needs the running ovsdb-server: {why}", cfg.paths.conf_db.display());
                let s = scan.as_ref().ok();
                let code = refuse(
                    plan_out,
                    &mut report,
                    cfg,
                    &plan,
                    s,
                    "compaction of conf.db",
                    why,
                )
                .await;
                return (report, code);
            }
        }
    }
    print_plan(plan_out, &plan, cfg.dry_run);
    if cfg.dry_run {
        finish(&mut report, cfg, scan.as_ref().ok(), &plan, false).await;
        let code = match (report.incomplete.is_empty(), plan.is_empty()) {
            (false, _) => EXIT_ERROR,
            (true, false) => EXIT_FINDINGS,
            (true, true) => EXIT_OK,
        };
        return (report, code);
    }
    if !plan.is_empty() && !nix::unistd::geteuid().is_root() {
        let why = "these changes need root (run psk-guard fix as root, in a Job: runAsUser 0)"
            .to_string();
        let code = refuse(
            plan_out,
            &mut report,
            cfg,
            &plan,
            scan.as_ref().ok(),
            "fix",
            why,
        )
        .await;
        return (report, code);
    }

    // 2. Apply: compaction first (it recreates conf.db with a default mode), then modes, each
    // through the descriptor opened while planning.
    let mut failures = vec![];
    if let (Some(ctl), Some(Action::Compact { ctl: shown, .. })) = (&ctl_entry, plan.first()) {
        failures.extend(compact(cfg, ctl, shown, &obs, &accounts, &mut report).await);
    }
    for o in targets {
        if let Some(e) = o.judged() {
            if let Err(err) = tighten(e, o.rule.forbidden) {
                failures.push(err);
            }
        }
    }
    for f in &failures {
        report.not_checked("fix", f.clone());
    }

    // 3. Verify with fresh eyes.
    let rescan = scan_conf_db(cfg, fp_key).await.ok();
    let remaining = finish(&mut report, cfg, rescan.as_ref(), &plan, true).await;
    // A mode a read-only mount could not restore after a rotation's compaction is reported, but
    // the compaction it set out to do stands (see `compact`).
    let could_not = report
        .incomplete
        .iter()
        .filter(|i| i.check != MODE_AFTER_COMPACTION)
        .count();
    let code = if could_not > 0 {
        EXIT_ERROR
    } else if remaining > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    (report, code)
}

/// Compacts through the verified control socket, then gives the new conf.db (compaction writes
/// a fresh file) at most the bits the old one had, minus the forbidden ones. With
/// `--only-compact` (a rotation's Job, whose `/var/run/antrea` mount is read-only) it restores
/// exactly the bits conf.db had and calls chmod only if compaction added one; if it did and the
/// mount is read-only, the compaction still stands and the mode is reported as not restored
/// (`rotate` turns that into `conf-db-mode-too-open` for the node). Returns failures.
async fn compact(
    cfg: &FixConfig,
    ctl: &Entry,
    shown: &Path,
    obs: &[files::Observed],
    accounts: &Accounts,
    report: &mut Report,
) -> Vec<String> {
    let before = obs
        .iter()
        .find(|o| o.rule.loc == files::Loc::ConfDb)
        .and_then(|o| o.judged().map(|e| (e.meta.mode, o.rule.forbidden)));
    if let Err(e) = unixctl(ctl, "ovsdb-server/compact", &[], cfg.timeout).await {
        return vec![format!(
            "compaction failed (through {}): {e}",
            shown.display()
        )];
    }
    let Some((mode, forbidden)) = before else {
        return vec![];
    };
    let fresh = match nodefs::open(&cfg.paths.conf_db, accounts) {
        Ok(e) if e.meta.kind == Kind::Regular && e.untrusted(accounts).is_none() => e,
        Ok(e) => {
            return vec![format!(
                "{} after compaction is {} or under a directory a non-root user controls: its mode was not restored",
                e.path.display(),
                e.meta.kind
            )]
        }
        Err(e) => return vec![format!("reopening conf.db after compaction: {e}")],
    };
    // Keep at most the bits it had before (never let compaction loosen it); a full fix also
    // drops the rule's forbidden bits, a rotation's compaction changes nothing else.
    let keep = if cfg.only_compact {
        mode
    } else {
        mode & !forbidden
    };
    let (from, to) = match fresh.restat() {
        Ok(now) => (now.mode, now.mode & keep & 0o7777),
        Err(e) => return vec![format!("conf.db after compaction: {e}")],
    };
    if to == from {
        return vec![];
    }
    match fresh.chmod(to) {
        Ok(()) => vec![],
        Err(nodefs::FsError::Io { source, .. })
            if cfg.only_compact && source.raw_os_error() == Some(libc::EROFS) =>
        {
            report.not_checked(
                MODE_AFTER_COMPACTION,
                format!(
                    "ovsdb-server recreated {} with mode {from:04o}, looser than the {:04o} it had, and this read-only mount cannot restore it; run psk-guard fix on the node",
                    cfg.paths.conf_db.display(),
                    mode & 0o7777
                ),
            );
            vec![]
        }
        Err(err) => vec![format!("{err} (to {to:04o}, from {from:04o})")],
    }
}

/// Fills the report with what remains (file findings and history findings) and the plan.
/// Returns how many remaining findings are ones the plan set out to fix.
async fn finish(
    report: &mut Report,
    cfg: &FixConfig,
    scan: Option<&forensics::Scan>,
    plan: &[Action],
    applied: bool,
) -> usize {
    let paths = &cfg.paths;
    if !cfg.only_compact {
        files::check(paths, report).await;
    }
    if let Some(s) = scan {
        forensics::findings(&paths.conf_db, s, report);
    }
    report.sort();
    let fixable: Vec<Code> = files::RULES
        .iter()
        .map(|r| r.mode_code)
        .chain([Code::PskHistoryOnDisk])
        .collect();
    let remaining = report
        .findings
        .iter()
        .filter(|f| f.code_enum.is_some_and(|c| fixable.contains(&c)))
        .count();
    report.set_data(json!({
        "plan": plan.iter().map(Action::describe).collect::<Vec<_>>(),
        "applied": applied,
        // Verified only when everything it set out to check could be checked, and nothing of it
        // remains.
        "verified": applied && remaining == 0 && report.incomplete.is_empty(),
        "remaining_fixable": remaining,
        "history": scan.map(forensics::scan_data),
    }));
    remaining
}
