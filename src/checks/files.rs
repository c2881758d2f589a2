//! Modes and owners of the node's Antrea/OVS paths, and who besides root can reach them.
//!
//! [`RULES`] is the whole policy, one row per path: what it must be (directory, regular file,
//! socket), which mode bits must not be set, which findings it raises. `check` judges the rows
//! ([`check`]) and `fix` removes exactly the forbidden bits of the same rows (`crate::fix`), so a
//! new path is one row. Every path is opened through [`crate::nodefs`]: never followed as a link,
//! its directory chain inspected. Each path ends in one of these states: present and of the
//! expected type (then judged), absent, a symbolic link, of another type, or could not be
//! inspected; all but the first are findings of their own, never a silent pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::nodefs::{self, Accounts, Entry, FsError, Kind};
use crate::report::{Code, Finding, Report, Severity, Subject};

/// The paths of one node.
#[derive(Debug, Clone)]
pub struct Paths {
    pub run_dir: PathBuf,
    pub ovs_dir: PathBuf,
    pub conf_db: PathBuf,
    pub db_sock: PathBuf,
}

impl Paths {
    pub fn new(run_dir: &Path, db_sock: &Path, conf_db: Option<&Path>) -> Self {
        let ovs_dir = run_dir.join("openvswitch");
        Paths {
            conf_db: conf_db
                .map(Path::to_owned)
                .unwrap_or_else(|| ovs_dir.join("conf.db")),
            run_dir: run_dir.to_owned(),
            ovs_dir,
            db_sock: db_sock.to_owned(),
        }
    }
}

/// Where a rule's path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loc {
    RunDir,
    OvsDir,
    ConfDb,
    DbSock,
    /// A fixed name in the openvswitch directory.
    InOvsDir(&'static str),
    /// Every name in the openvswitch directory with this suffix.
    OvsDirSuffix(&'static str),
}

/// One path and what it must be.
#[derive(Debug)]
pub struct PathRule {
    pub what: &'static str,
    pub loc: Loc,
    pub kind: Kind,
    /// Bits that must not be set; `fix` removes exactly these. They include setuid and setgid
    /// everywhere (and sticky on files and sockets): a tightened mode never keeps them. A
    /// directory's sticky bit is allowed: it only restricts who may rename or remove entries.
    pub forbidden: u32,
    pub expected: &'static str,
    pub mode_code: Code,
    pub severity: Severity,
    pub owner_code: Option<Code>,
    /// Severity of `path-absent`; `None` when the path may legitimately be absent.
    pub absent: Option<Severity>,
}

const SPECIAL_DIR: u32 = 0o6000;
const SPECIAL_FILE: u32 = 0o7000;

/// The node's paths. Modes from Antrea (run dir 0750 since v0.13, conf.db 0640 since v0.10) and
/// ovsdb-server (sockets 0770 & ~umask, lock file 0600).
pub const RULES: &[PathRule] = &[
    PathRule {
        what: "the Antrea run directory",
        loc: Loc::RunDir,
        kind: Kind::Directory,
        forbidden: 0o027 | SPECIAL_DIR,
        expected: "0750 or stricter (no group write, nothing for others)",
        mode_code: Code::RunDirModeTooOpen,
        severity: Severity::High,
        owner_code: Some(Code::RunDirOwnerNotRoot),
        absent: Some(Severity::Medium),
    },
    PathRule {
        what: "the openvswitch run directory",
        loc: Loc::OvsDir,
        kind: Kind::Directory,
        forbidden: 0o022 | SPECIAL_DIR,
        expected: "not writable by group or others (0755 or stricter)",
        mode_code: Code::OvsDirModeTooOpen,
        severity: Severity::High,
        owner_code: Some(Code::OvsDirOwnerNotRoot),
        absent: Some(Severity::Medium),
    },
    PathRule {
        what: "conf.db",
        loc: Loc::ConfDb,
        kind: Kind::Regular,
        forbidden: 0o137 | SPECIAL_FILE,
        expected: "0640 or stricter",
        mode_code: Code::ConfDbModeTooOpen,
        severity: Severity::High,
        owner_code: Some(Code::ConfDbOwnerNotRoot),
        absent: Some(Severity::Medium),
    },
    PathRule {
        what: "db.sock",
        loc: Loc::DbSock,
        kind: Kind::Socket,
        forbidden: 0o007 | SPECIAL_FILE,
        expected: "no access for others (0770 or stricter)",
        mode_code: Code::DbSockModeTooOpen,
        severity: Severity::High,
        owner_code: None,
        absent: Some(Severity::Info),
    },
    PathRule {
        what: "an ovsdb-server control socket",
        loc: Loc::OvsDirSuffix(".ctl"),
        kind: Kind::Socket,
        forbidden: 0o007 | SPECIAL_FILE,
        expected: "no access for others (0770 or stricter)",
        mode_code: Code::CtlSockModeTooOpen,
        severity: Severity::High,
        owner_code: None,
        absent: None,
    },
    PathRule {
        what: "the conf.db lock file",
        loc: Loc::InOvsDir(".conf.db.~lock~"),
        kind: Kind::Regular,
        forbidden: 0o022 | SPECIAL_FILE,
        expected: "not writable by group or others (0600 as ovsdb-server creates it)",
        mode_code: Code::LockFileModeTooOpen,
        severity: Severity::Medium,
        owner_code: None,
        absent: None,
    },
];

/// One rule applied to one path: the opened entry, or why it could not be opened.
#[derive(Debug)]
pub struct Observed {
    pub rule: &'static PathRule,
    pub path: PathBuf,
    pub state: Result<Entry, FsError>,
}

impl Observed {
    /// The entry, when it is there and of the rule's type (the only case that is judged or
    /// changed).
    pub fn judged(&self) -> Option<&Entry> {
        self.state
            .as_ref()
            .ok()
            .filter(|e| e.meta.kind == self.rule.kind)
    }
}

/// Opens every rule's path (blocking: call from a blocking task).
/// Entries of `openvswitch/` listed to find the control sockets (ovsdb-server makes a handful): a
/// directory filled by someone else costs no more than this, and the rest is reported unchecked.
const MAX_OVS_DIR_ENTRIES: usize = 10_000;

pub fn observe(paths: &Paths, accounts: &Accounts) -> Vec<Observed> {
    let mut out = vec![];
    let mut ovs_dir: Option<Entry> = None;
    for rule in RULES {
        let path = match rule.loc {
            Loc::RunDir => paths.run_dir.clone(),
            Loc::OvsDir => paths.ovs_dir.clone(),
            Loc::ConfDb => paths.conf_db.clone(),
            Loc::DbSock => paths.db_sock.clone(),
            Loc::InOvsDir(name) => paths.ovs_dir.join(name),
            Loc::OvsDirSuffix(suffix) => {
                let Some(dir) = &ovs_dir else { continue };
                match dir.list_bounded(MAX_OVS_DIR_ENTRIES) {
                    Ok((mut names, more)) => {
                        if more {
                            out.push(Observed {
                                rule,
                                path: paths.ovs_dir.join(format!("*{suffix}")),
                                state: Err(FsError::TooManyEntries {
                                    path: paths.ovs_dir.clone(),
                                    max: MAX_OVS_DIR_ENTRIES,
                                }),
                            });
                        }
                        names.retain(|n| n.to_string_lossy().ends_with(suffix));
                        names.sort();
                        for n in names {
                            let state = dir.child(&n);
                            out.push(Observed {
                                rule,
                                path: paths.ovs_dir.join(&n),
                                state,
                            });
                        }
                    }
                    Err(e) => out.push(Observed {
                        rule,
                        path: paths.ovs_dir.join(format!("*{suffix}")),
                        state: Err(e),
                    }),
                }
                continue;
            }
        };
        let state = nodefs::open(&path, accounts);
        if rule.loc == Loc::OvsDir {
            if let Ok(e) = &state {
                if e.meta.kind == Kind::Directory {
                    ovs_dir = nodefs::open(&path, accounts).ok();
                }
            }
        }
        out.push(Observed { rule, path, state });
    }
    out
}

/// Opens every rule's path in a blocking task; also loads the account database.
pub async fn observe_async(paths: &Paths) -> (Vec<Observed>, Accounts) {
    let p = paths.clone();
    tokio::task::spawn_blocking(move || {
        let accounts = Accounts::load();
        (observe(&p, &accounts), accounts)
    })
    .await
    .unwrap_or_default()
}

fn mode_str(mode: u32) -> String {
    format!("mode {:04o}", mode)
}

/// The finding (and `incomplete` entry) for a path that is not there as the rule expects.
fn not_judged(report: &mut Report, o: &Observed) {
    let rule = o.rule;
    let (finding, why) = match &o.state {
        Ok(e) if e.meta.kind == rule.kind => return,
        Err(FsError::Absent { path }) if *path == o.path => {
            let Some(sev) = rule.absent else { return };
            (
                Finding::new(Code::PathAbsent, sev, Subject::path(&o.path))
                    .observed("absent")
                    .expected(format!("{} exists on an Antrea IPsec node", rule.what))
                    .remediation("check --run-dir / --db; run psk-guard on the node (or in a pod with the host path mounted)"),
                format!("{} is absent", o.path.display()),
            )
        }
        Err(FsError::Absent { path }) => {
            let Some(sev) = rule.absent else { return };
            (
                Finding::new(Code::PathAbsent, sev, Subject::path(&o.path))
                    .observed(format!("absent ({} is absent)", path.display()))
                    .expected(format!("{} exists on an Antrea IPsec node", rule.what))
                    .remediation("check --run-dir / --db"),
                format!("{} is absent", path.display()),
            )
        }
        Ok(e) if e.meta.kind == Kind::Symlink => (
            symlink_finding(&o.path, e.meta.uid, rule),
            format!("{} is a symbolic link (not followed)", o.path.display()),
        ),
        Err(FsError::UntrustedLink { path, uid }) => (
            symlink_finding(path, *uid, rule),
            format!("{} is a symbolic link (not followed)", path.display()),
        ),
        Ok(e) => (
            Finding::new(Code::PathWrongType, Severity::High, Subject::path(&o.path))
                .observed(format!("{}", e.meta.kind))
                .expected(format!("{} is {}", rule.what, rule.kind))
                .remediation("find out what replaced it (it is not what Antrea or ovsdb-server creates); remove it and restart antrea-agent"),
            format!("{} is {}, not {}", o.path.display(), e.meta.kind, rule.kind),
        ),
        Err(e) => (
            Finding::new(Code::PathUnreadable, Severity::Medium, Subject::path(&o.path))
                .observed(format!("cannot inspect: {e}"))
                .expected(format!("{} can be inspected", rule.what))
                .remediation("run psk-guard as root (in a Job: runAsUser 0 with the host path mounted)"),
            e.to_string(),
        ),
    };
    report.push(finding);
    report.not_checked(format!("{} mode and owner", rule.what), why);
}

fn symlink_finding(link: &Path, uid: u32, rule: &PathRule) -> Finding {
    Finding::new(Code::PathIsSymlink, Severity::High, Subject::path(link))
        .observed(format!("a symbolic link owned by uid {uid}"))
        .expected(format!(
            "{} is {} reached without symbolic links",
            rule.what, rule.kind
        ))
        .remediation("find out who replaced it (Antrea and ovsdb-server never create links there); remove the link and restart antrea-agent. psk-guard neither follows nor changes it")
}

/// Judges one present path of the expected type.
fn judge(report: &mut Report, o: &Observed, e: &Entry) {
    let rule = o.rule;
    let mode = e.meta.mode;
    if mode & rule.forbidden != 0 {
        report.push(
            Finding::new(rule.mode_code, rule.severity, Subject::path(&o.path))
                .observed(mode_str(mode))
                .expected(rule.expected)
                .remediation(format!(
                    "chmod {:04o} {} (psk-guard fix does this)",
                    mode & !rule.forbidden,
                    o.path.display()
                )),
        );
    }
    if let Some(code) = rule.owner_code {
        if e.meta.uid != 0 {
            report.push(
                Finding::new(code, Severity::High, Subject::path(&o.path))
                    .observed(format!("owner uid {}", e.meta.uid))
                    .expected("owned by root (uid 0)")
                    .remediation(format!("chown root {}", o.path.display())),
            );
        }
    }
}

/// The directories above the observed paths that a non-root user controls, with why and which
/// paths they put at risk.
pub fn untrusted_dirs(
    obs: &[Observed],
    accounts: &Accounts,
) -> BTreeMap<PathBuf, (String, Vec<PathBuf>)> {
    let mut out: BTreeMap<PathBuf, (String, Vec<PathBuf>)> = BTreeMap::new();
    for o in obs {
        if let Ok(e) = &o.state {
            if let Some((dir, why)) = e.untrusted(accounts) {
                out.entry(dir)
                    .or_insert((why, vec![]))
                    .1
                    .push(o.path.clone());
            }
        }
    }
    out
}

/// Why a path can reach the key, one line per path (for the plaintext-key severity).
pub fn exposure(obs: &[Observed], accounts: &Accounts) -> Vec<String> {
    let mut out = vec![];
    for o in obs {
        let Some(e) = o.judged() else { continue };
        let line = match o.rule.loc {
            Loc::ConfDb => ("conf.db is readable by", 0o4),
            Loc::DbSock => ("db.sock accepts connections from", 0o2),
            _ => continue,
        };
        let who = e.reachers(line.1, accounts);
        if !who.is_empty() {
            out.push(format!("{} {}", line.0, accounts.describe_all(&who)));
        }
    }
    out
}

/// Checks modes, owners, types and directory chains of every path; pushes findings into
/// `report` and returns who besides root can reach the key (see [`exposure`]).
pub async fn check(paths: &Paths, report: &mut Report) -> Vec<String> {
    let (obs, accounts) = observe_async(paths).await;
    add(&obs, &accounts, report)
}

/// Adds the findings for paths [`observe_async`] opened (see [`check`]); `check` of a node
/// observes while OVSDB answers.
pub fn add(obs: &[Observed], accounts: &Accounts, report: &mut Report) -> Vec<String> {
    for o in obs {
        match o.judged() {
            Some(e) => judge(report, o, e),
            None => not_judged(report, o),
        }
    }
    for (dir, (why, below)) in untrusted_dirs(obs, accounts) {
        push_chain(report, &dir, why, &below);
    }
    exposure(obs, accounts)
}

/// Reports `path-chain-not-root-controlled` for `dir`, which a non-root user controls (`why`),
/// above the paths `below`: one finding per directory, so a directory already reported (by the
/// path rules, the log scan or the key files) gets `below` added to its `paths_below`.
pub fn push_chain(report: &mut Report, dir: &Path, why: String, below: &[PathBuf]) {
    let subject = Subject::path(dir);
    let list = below
        .iter()
        .map(|p| serde_json::json!(p.display().to_string()));
    let same = |f: &&mut Finding| {
        f.code_enum == Some(Code::PathChainNotRootControlled) && f.subject == subject
    };
    if let Some(f) = report.findings.iter_mut().find(same) {
        if let Some(paths) = f
            .details
            .get_mut("paths_below")
            .and_then(|v| v.as_array_mut())
        {
            for p in list {
                if !paths.contains(&p) {
                    paths.push(p);
                }
            }
        }
        return;
    }
    report.push(
        Finding::new(Code::PathChainNotRootControlled, Severity::High, subject)
            .observed(why)
            .expected("every directory from / down to the node's Antrea paths is owned by root and writable only by root")
            .remediation(format!("chown root and chmod go-w {} (psk-guard fix refuses to change anything below it)", dir.display()))
            .detail("paths_below", list.collect::<Vec<_>>()),
    );
}
