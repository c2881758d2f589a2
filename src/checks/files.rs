//! Modes and owners of the node's Antrea/OVS paths, and who besides root can reach them.
//!
//! Each path ends in one of three states: present (then judged), absent, or could not be
//! inspected; the last two are findings of their own, never a silent pass.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::report::{Code, Finding, Report, Severity, Subject};

/// What `lstat` said about a path.
#[derive(Debug, Clone)]
pub enum State {
    Present {
        mode: u32,
        uid: u32,
        gid: u32,
        is_dir: bool,
    },
    Absent,
    Unreadable(String),
}

pub async fn stat(path: &Path) -> State {
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) => State::Present {
            mode: m.permissions().mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            is_dir: m.is_dir(),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::Absent,
        Err(e) => State::Unreadable(e.kind().to_string()),
    }
}

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

/// Who other than root can reach a path, if anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    World,
    Group(u32),
    Owner(u32),
}

impl Exposure {
    pub fn describe(&self) -> String {
        match self {
            Exposure::World => "all users".into(),
            Exposure::Group(g) => format!("members of group {g}"),
            Exposure::Owner(u) => format!("user {u} (the owner)"),
        }
    }
}

/// Can a non-root user read `path` (`want = 0o4`) or connect to it (`want = 0o2`, as for a unix
/// socket)? Walks the directory chain: every ancestor must allow traversal too.
pub async fn exposure(path: &Path, want: u32) -> Option<Exposure> {
    let State::Present { mode, uid, gid, .. } = stat(path).await else {
        return None;
    };
    let mut ancestors = vec![];
    for a in path.ancestors().skip(1) {
        if a.as_os_str().is_empty() {
            continue;
        }
        match tokio::fs::metadata(a).await {
            Ok(m) => ancestors.push((m.permissions().mode(), m.uid(), m.gid())),
            Err(_) => return None,
        }
    }
    let traversable = |who: &Exposure| {
        ancestors.iter().all(|&(m, u, g)| {
            m & 0o001 != 0
                || matches!(who, Exposure::Group(x) if *x == g && m & 0o010 != 0)
                || matches!(who, Exposure::Owner(x) if *x == u && m & 0o100 != 0)
        })
    };
    let world = Exposure::World;
    if mode & want != 0 && traversable(&world) {
        return Some(world);
    }
    let group = Exposure::Group(gid);
    if gid != 0 && mode & (want << 3) != 0 && traversable(&group) {
        return Some(group);
    }
    let owner = Exposure::Owner(uid);
    if uid != 0 && mode & (want << 6) != 0 && traversable(&owner) {
        return Some(owner);
    }
    None
}

fn mode_str(mode: u32) -> String {
    format!("mode {:04o}", mode)
}

/// Adds the absent/unreadable finding for a path; returns its facts when present.
fn present(
    report: &mut Report,
    path: &Path,
    state: &State,
    absent: Severity,
    what: &str,
) -> Option<(u32, u32, u32, bool)> {
    match state {
        State::Present {
            mode,
            uid,
            gid,
            is_dir,
        } => Some((*mode, *uid, *gid, *is_dir)),
        State::Absent => {
            report.push(
                Finding::new(Code::PathAbsent, absent, Subject::path(path))
                    .observed("absent")
                    .expected(format!("{what} exists on an Antrea IPsec node"))
                    .remediation("check --run-dir / --db; run psk-guard on the node (or in a pod with the host path mounted)"),
            );
            report.not_checked(
                format!("{what} mode and owner"),
                format!("{} is absent", path.display()),
            );
            None
        }
        State::Unreadable(why) => {
            report.push(
                Finding::new(Code::PathUnreadable, Severity::Medium, Subject::path(path))
                    .observed(format!("cannot inspect: {why}"))
                    .expected(format!("{what} can be inspected"))
                    .remediation(
                        "run psk-guard as root (in a Job: runAsUser 0 with the host path mounted)",
                    ),
            );
            report.not_checked(
                format!("{what} mode and owner"),
                format!("{}: {why}", path.display()),
            );
            None
        }
    }
}

fn owner_finding(report: &mut Report, code: Code, path: &Path, uid: u32) {
    if uid != 0 {
        report.push(
            Finding::new(code, Severity::High, Subject::path(path))
                .observed(format!("owner uid {uid}"))
                .expected("owned by root (uid 0)")
                .remediation(format!("chown root {}", path.display())),
        );
    }
}

/// Checks modes and owners of every path; pushes findings into `report`.
pub async fn check(paths: &Paths, report: &mut Report) {
    // /var/run/antrea: 0750 or stricter, root.
    if let Some((mode, uid, _, _)) = present(
        report,
        &paths.run_dir,
        &stat(&paths.run_dir).await,
        Severity::Medium,
        "the Antrea run directory",
    ) {
        if mode & 0o027 != 0 {
            report.push(
                Finding::new(
                    Code::RunDirModeTooOpen,
                    Severity::High,
                    Subject::path(&paths.run_dir),
                )
                .observed(mode_str(mode))
                .expected("0750 or stricter (no group write, nothing for others)")
                .remediation(format!(
                    "chmod {:04o} {} (psk-guard fix does this)",
                    mode & !0o027,
                    paths.run_dir.display()
                )),
            );
        }
        owner_finding(report, Code::RunDirOwnerNotRoot, &paths.run_dir, uid);
    }
    // openvswitch/: not writable by group or others.
    let ovs_state = stat(&paths.ovs_dir).await;
    if let Some((mode, _, _, _)) = present(
        report,
        &paths.ovs_dir,
        &ovs_state,
        Severity::Medium,
        "the openvswitch run directory",
    ) {
        if mode & 0o022 != 0 {
            report.push(
                Finding::new(
                    Code::OvsDirModeTooOpen,
                    Severity::High,
                    Subject::path(&paths.ovs_dir),
                )
                .observed(mode_str(mode))
                .expected("not writable by group or others (0755 or stricter)")
                .remediation(format!(
                    "chmod {:04o} {}",
                    mode & !0o022,
                    paths.ovs_dir.display()
                )),
            );
        }
    }
    // conf.db: 0640 or stricter, root.
    if let Some((mode, uid, _, _)) = present(
        report,
        &paths.conf_db,
        &stat(&paths.conf_db).await,
        Severity::Medium,
        "conf.db",
    ) {
        if mode & 0o137 != 0 {
            report.push(
                Finding::new(
                    Code::ConfDbModeTooOpen,
                    Severity::High,
                    Subject::path(&paths.conf_db),
                )
                .observed(mode_str(mode))
                .expected("0640 or stricter")
                .remediation(format!(
                    "chmod {:04o} {} (psk-guard fix does this)",
                    mode & !0o137,
                    paths.conf_db.display()
                )),
            );
        }
        owner_finding(report, Code::ConfDbOwnerNotRoot, &paths.conf_db, uid);
    }
    // db.sock: no access for others.
    if let Some((mode, _, _, _)) = present(
        report,
        &paths.db_sock,
        &stat(&paths.db_sock).await,
        Severity::Info,
        "db.sock",
    ) {
        if mode & 0o007 != 0 {
            report.push(
                Finding::new(Code::DbSockModeTooOpen, Severity::High, Subject::path(&paths.db_sock))
                    .observed(mode_str(mode))
                    .expected("no access for others (0770 or stricter)")
                    .remediation(format!("chmod o-rwx {} (psk-guard fix does this; ovsdb-server recreates it with 0770 & ~umask on restart)", paths.db_sock.display())),
            );
        }
    }
    // *.ctl sockets and the lock file, in the openvswitch directory.
    if matches!(ovs_state, State::Present { .. }) {
        match tokio::fs::read_dir(&paths.ovs_dir).await {
            Ok(mut rd) => {
                let mut ctls = vec![];
                while let Ok(Some(e)) = rd.next_entry().await {
                    if e.file_name().to_string_lossy().ends_with(".ctl") {
                        ctls.push(e.path());
                    }
                }
                ctls.sort();
                for ctl in ctls {
                    if let State::Present { mode, .. } = stat(&ctl).await {
                        if mode & 0o007 != 0 {
                            report.push(
                                Finding::new(
                                    Code::CtlSockModeTooOpen,
                                    Severity::High,
                                    Subject::path(&ctl),
                                )
                                .observed(mode_str(mode))
                                .expected("no access for others (0770 or stricter)")
                                .remediation(format!(
                                    "chmod o-rwx {} (psk-guard fix does this)",
                                    ctl.display()
                                )),
                            );
                        }
                    }
                }
            }
            Err(e) => {
                report.push(
                    Finding::new(
                        Code::PathUnreadable,
                        Severity::Medium,
                        Subject::path(&paths.ovs_dir),
                    )
                    .observed(format!("cannot list: {}", e.kind()))
                    .expected("the directory can be listed")
                    .remediation("run psk-guard as root"),
                );
                report.not_checked(
                    "control sockets (*.ctl)",
                    format!("cannot list {}: {}", paths.ovs_dir.display(), e.kind()),
                );
            }
        }
        let lock = paths.ovs_dir.join(".conf.db.~lock~");
        if let State::Present { mode, .. } = stat(&lock).await {
            if mode & 0o022 != 0 {
                report.push(
                    Finding::new(
                        Code::LockFileModeTooOpen,
                        Severity::Medium,
                        Subject::path(&lock),
                    )
                    .observed(mode_str(mode))
                    .expected("not writable by group or others (0600 as ovsdb-server creates it)")
                    .remediation(format!(
                        "chmod go-w {} (psk-guard fix does this)",
                        lock.display()
                    )),
                );
            }
        }
    }
}
