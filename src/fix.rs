//! `psk-guard fix`: the remediations a node can get without a person choosing a value.
//!
//! It plans first (and prints the plan), then, unless `--dry-run`, compacts the live database
//! through ovsdb-server's unixctl socket so old keys are rewritten out of conf.db, and tightens
//! modes. It never loosens a bit: every new mode is the current one minus bits, computed from a
//! fresh `lstat` just before the change, and the modes compaction resets are restored. Then it
//! verifies: a fresh file check and a re-scan of the file must show nothing it set out to fix.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::checks::files::{self, Paths, State};
use crate::forensics;
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

/// Bits that must not be set on each path (the same rules `check` applies).
fn rules(paths: &Paths) -> Vec<(PathBuf, u32)> {
    vec![
        (paths.run_dir.clone(), 0o027),
        (paths.ovs_dir.clone(), 0o022),
        (paths.conf_db.clone(), 0o137),
        (paths.db_sock.clone(), 0o007),
        (paths.ovs_dir.join(".conf.db.~lock~"), 0o022),
    ]
}

async fn all_rules(paths: &Paths) -> Vec<(PathBuf, u32)> {
    let mut r = rules(paths);
    if let Ok(mut rd) = tokio::fs::read_dir(&paths.ovs_dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            if e.file_name().to_string_lossy().ends_with(".ctl") {
                r.push((e.path(), 0o007));
            }
        }
    }
    r.sort();
    r
}

/// Finds ovsdb-server's unixctl socket the way Open vSwitch names it:
/// `<ovs_dir>/ovsdb-server.pid`, then `<ovs_dir>/ovsdb-server.<pid>.ctl`.
pub async fn find_ctl(ovs_dir: &Path) -> Result<PathBuf, String> {
    let pidfile = ovs_dir.join("ovsdb-server.pid");
    let text = tokio::fs::read_to_string(&pidfile).await.map_err(|e| {
        format!(
            "no readable {} ({}): ovsdb-server does not seem to run",
            pidfile.display(),
            e.kind()
        )
    })?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{} does not hold a process id", pidfile.display()))?;
    let ctl = ovs_dir.join(format!("ovsdb-server.{pid}.ctl"));
    match tokio::fs::symlink_metadata(&ctl).await {
        Ok(_) => Ok(ctl),
        Err(_) => Err(format!("{} is absent: ovsdb-server (pid {pid}) is not running or uses another --unixctl path (pass --ctl)", ctl.display())),
    }
}

/// Removes `mask` bits from `path`'s current mode; refuses symlinks; never adds a bit.
async fn tighten(path: &Path, keep_at_most: u32) -> Result<Option<(u32, u32)>, String> {
    let meta = tokio::fs::symlink_metadata(path)
        .await
        .map_err(|e| format!("{}: {}", path.display(), e.kind()))?;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "{} is a symbolic link: not changed",
            path.display()
        ));
    }
    let from = meta.permissions().mode() & 0o7777;
    let to = from & keep_at_most;
    if to == from {
        return Ok(None);
    }
    debug_assert_eq!(to & !from, 0, "never add a permission bit");
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(to))
        .await
        .map_err(|e| format!("chmod {:04o} {}: {}", to, path.display(), e.kind()))?;
    Ok(Some((from, to)))
}

/// Runs `fix`. Returns the report (what remains after the fix) and the exit status.
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

    // 1. Plan.
    let mut plan = vec![];
    let rules = if cfg.only_compact {
        vec![]
    } else {
        all_rules(&cfg.paths).await
    };
    for (path, mask) in rules {
        if let State::Present { mode, .. } = files::stat(&path).await {
            if mode & mask != 0 {
                plan.push(Action::Chmod {
                    path,
                    from: mode,
                    to: mode & !mask,
                    mask,
                });
            }
        }
    }
    let (conf_db, k) = (cfg.paths.conf_db.clone(), fp_key.clone());
    let scan = tokio::task::spawn_blocking(move || {
        forensics::scan_file(&conf_db, forensics::log::DEFAULT_MAX_RECORD, &k)
    })
    .await
    .map_err(|_| "the scan task failed".to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let old_keys = match &scan {
        Ok(s) => s.old_keys().count(),
        Err(e) => {
            report.not_checked("conf.db history", e.clone());
            0
        }
    };
    if old_keys > 0 {
        let ctl = match &cfg.ctl {
            Some(c) => Ok(c.clone()),
            None => find_ctl(&cfg.paths.ovs_dir).await,
        };
        match ctl {
            Ok(ctl) => plan.insert(0, Action::Compact { ctl, old_keys }),
            Err(why) => {
                let _ = writeln!(plan_out, "psk-guard fix: {old_keys} old key(s) remain in {}, but compaction needs the running ovsdb-server: {why}. Changed nothing.", cfg.paths.conf_db.display());
                report.not_checked("compaction of conf.db", why);
                finish(&mut report, cfg, scan.ok().as_ref(), &plan, false).await;
                return (report, EXIT_ERROR);
            }
        }
    }
    let _ = writeln!(
        plan_out,
        "psk-guard fix: plan ({} change(s){}):",
        plan.len(),
        if cfg.dry_run {
            ", dry run: nothing will be changed"
        } else {
            ""
        }
    );
    for a in &plan {
        let _ = writeln!(plan_out, "  - {}", a.describe());
    }
    if plan.is_empty() {
        let _ = writeln!(plan_out, "  (nothing to fix)");
    }
    if cfg.dry_run {
        finish(&mut report, cfg, scan.ok().as_ref(), &plan, false).await;
        let code = if plan.is_empty() {
            EXIT_OK
        } else {
            EXIT_FINDINGS
        };
        return (report, code);
    }

    // 2. Apply: compaction first (it recreates conf.db with a default mode), then modes.
    let mut failures = vec![];
    let before_conf = files::stat(&cfg.paths.conf_db).await;
    for a in &plan {
        if let Action::Compact { ctl, .. } = a {
            match unixctl(ctl, "ovsdb-server/compact", &[], cfg.timeout).await {
                Ok(_) => {
                    // Never let compaction loosen conf.db: keep at most the bits it had before.
                    if let State::Present { mode, .. } = before_conf {
                        let keep = mode & !0o137;
                        if let Err(e) = tighten(&cfg.paths.conf_db, keep).await {
                            failures.push(e);
                        }
                    }
                }
                Err(e) => failures.push(format!("compaction failed: {e}")),
            }
        }
    }
    for a in &plan {
        if let Action::Chmod { path, mask, .. } = a {
            if let Err(e) = tighten(path, 0o7777 & !mask).await {
                failures.push(e);
            }
        }
    }
    for f in &failures {
        report.not_checked("fix", f.clone());
    }

    // 3. Verify with fresh eyes.
    let (conf_db, k) = (cfg.paths.conf_db.clone(), fp_key.clone());
    let rescan = tokio::task::spawn_blocking(move || {
        forensics::scan_file(&conf_db, forensics::log::DEFAULT_MAX_RECORD, &k)
    })
    .await
    .ok()
    .and_then(Result::ok);
    let remaining = finish(&mut report, cfg, rescan.as_ref(), &plan, true).await;
    let code = if failures.is_empty() && remaining == 0 {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    };
    (report, code)
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
    let fixable = [
        Code::RunDirModeTooOpen,
        Code::OvsDirModeTooOpen,
        Code::ConfDbModeTooOpen,
        Code::DbSockModeTooOpen,
        Code::CtlSockModeTooOpen,
        Code::LockFileModeTooOpen,
        Code::PskHistoryOnDisk,
    ];
    let remaining = report
        .findings
        .iter()
        .filter(|f| f.code_enum.is_some_and(|c| fixable.contains(&c)))
        .count();
    report.set_data(json!({
        "plan": plan.iter().map(Action::describe).collect::<Vec<_>>(),
        "applied": applied,
        "verified": applied && remaining == 0,
        "remaining_fixable": remaining,
        "history": scan.map(forensics::scan_data),
    }));
    remaining
}
