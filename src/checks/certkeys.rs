//! Certificate-mode secrets: the node's IPsec private keys.
//!
//! In certificate mode there is no PSK; the secret is the node's private key. Antrea's agent
//! (pkg/agent/controller/ipseccertificate) writes `<node>-<hash>.key` (and `.crt`) into its
//! `/var/run/openvswitch`, which is the host's `/var/run/antrea/openvswitch`, with mode 0600
//! (client-go keyutil.WriteKey), and points `Open_vSwitch:other_config:private_key` at it. Every
//! `*.key` in the run directory and the certificate directory (`--cert-dir`) is held to conf.db's
//! rules: 0640 or stricter, owned by root, and not readable by anyone else through the directory
//! chain. Directories and files are opened through [`crate::nodefs`] (no link followed as the
//! last component, none a non-root user controls on the way; a directory a non-root user
//! controls is reported as `path-chain-not-root-controlled`).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::files::push_chain;
use crate::nodefs::{self, Accounts, FsError, Kind};
use crate::report::{Code, Finding, Report, Severity, Subject};

/// Directory entries looked at per directory.
const MAX_ENTRIES: usize = 10_000;
const WHAT: &str = "IPsec private keys (*.key)";

/// One private key file: its path, mode, owner, and who besides root can read it.
struct Key {
    path: PathBuf,
    mode: u32,
    uid: u32,
    exposed: Option<String>,
}

/// What the directories held, gathered on a blocking thread through [`nodefs`].
#[derive(Default)]
struct Seen {
    keys: Vec<Key>,
    not_checked: Vec<String>,
    /// (directory a non-root user controls, how, the key directory below it).
    untrusted: Vec<(PathBuf, String, PathBuf)>,
}

/// Opens each directory from `/` (no link a non-root user controls is followed) and each
/// `*.key` in it without following it; only regular files are judged.
fn look(dirs: &[PathBuf]) -> Seen {
    let accounts = Accounts::load();
    let mut seen = Seen::default();
    for dir in dirs {
        let d = match nodefs::open(dir, &accounts)
            .and_then(|d| d.expect(Kind::Directory).map(|()| d))
        {
            Ok(d) => d,
            Err(FsError::Absent { .. }) => continue,
            Err(e) => {
                seen.not_checked.push(format!("cannot list: {e}"));
                continue;
            }
        };
        if let Some((u, why)) = d.untrusted(&accounts) {
            seen.untrusted.push((u, why, dir.clone()));
        }
        let (mut names, more) = match d.list_bounded(MAX_ENTRIES) {
            Ok(l) => l,
            Err(e) => {
                seen.not_checked.push(format!("cannot list: {e}"));
                continue;
            }
        };
        if more {
            seen.not_checked.push(format!(
                "more than {MAX_ENTRIES} entries in {}: the rest were not looked at",
                dir.display()
            ));
        }
        names.retain(|n| n.as_encoded_bytes().ends_with(b".key"));
        names.sort();
        for n in names {
            match d.child(&n) {
                Ok(e) if e.meta.kind == Kind::Regular => {
                    let who = e.reachers(0o4, &accounts);
                    seen.keys.push(Key {
                        exposed: (!who.is_empty()).then(|| accounts.describe_all(&who)),
                        mode: e.meta.mode,
                        uid: e.meta.uid,
                        path: e.path,
                    });
                }
                Ok(e) => seen.not_checked.push(format!(
                    "{} is {}, not a regular file (not followed, not read)",
                    e.path.display(),
                    e.meta.kind
                )),
                Err(FsError::Absent { .. }) => {}
                Err(e) => seen.not_checked.push(e.to_string()),
            }
        }
    }
    seen
}

fn judge(path: &Path, mode: u32, uid: u32, exposed: Option<String>, report: &mut Report) {
    if mode & 0o137 != 0 || exposed.is_some() {
        let sev = if exposed.is_some() {
            Severity::Critical
        } else {
            Severity::High
        };
        let mut f = Finding::new(Code::CertKeyTooOpen, sev, Subject::path(path))
            .observed(format!("IPsec private key with mode {mode:04o}"))
            .expected("0600 (as Antrea writes it) or at most 0640, owned by root, unreachable by other users")
            .remediation(format!(
                "chmod 0600 {}; whoever could read it can impersonate this node until its certificate is rotated: delete the key and certificate files and restart antrea-agent, which requests a new certificate",
                path.display()
            ))
            .detail("mode", format!("{mode:04o}"));
        if let Some(e) = exposed {
            f = f.detail("exposed_to", json!([e]));
        }
        report.push(f);
    }
    if uid != 0 {
        report.push(
            Finding::new(
                Code::CertKeyOwnerNotRoot,
                Severity::High,
                Subject::path(path),
            )
            .observed(format!("IPsec private key owned by uid {uid}"))
            .expected("owned by root (uid 0)")
            .remediation(format!("chown root {}", path.display())),
        );
    }
}

/// What [`look_async`] found in the key directories (`None`: the task looking failed).
pub struct Looked {
    dirs: Vec<PathBuf>,
    seen: Option<Seen>,
}

/// Looks at every `*.key` in `dirs` (duplicates skipped) on a blocking thread; [`add`] judges
/// what was found; `check` looks while OVSDB answers.
pub async fn look_async(dirs: &[&Path]) -> Looked {
    let mut unique: Vec<PathBuf> = vec![];
    for d in dirs {
        if !unique.iter().any(|u| u == d) {
            unique.push(d.to_path_buf());
        }
    }
    let list = unique.clone();
    let seen = tokio::task::spawn_blocking(move || look(&list)).await.ok();
    Looked { dirs: unique, seen }
}

/// Adds the findings for what [`look_async`] found. `cert_mode`: the tunnels authenticate with
/// certificates, so finding no key at all is something the report must say.
pub fn add(looked: Looked, cert_mode: bool, report: &mut Report) {
    let Looked { dirs: unique, seen } = looked;
    let Some(seen) = seen else {
        report.not_checked(WHAT, "the task looking at them failed");
        return;
    };
    for (dir, why, below) in seen.untrusted {
        push_chain(report, &dir, why, &[below]);
    }
    for k in &seen.keys {
        judge(&k.path, k.mode, k.uid, k.exposed.clone(), report);
    }
    for why in seen.not_checked {
        report.not_checked(WHAT, why);
    }
    if cert_mode && seen.keys.is_empty() {
        report.not_checked(
            WHAT,
            format!(
                "the tunnels use certificates but no *.key was found in {}; point --cert-dir at the agent's certificate directory",
                unique
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}
