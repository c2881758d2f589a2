//! Certificate-mode secrets: the node's IPsec private keys.
//!
//! In certificate mode there is no PSK; the secret is the node's private key. Antrea's agent
//! (pkg/agent/controller/ipseccertificate) writes `<node>-<hash>.key` (and `.crt`) into its
//! `/var/run/openvswitch`, which is the host's `/var/run/antrea/openvswitch`, with mode 0600
//! (client-go keyutil.WriteKey), and points `Open_vSwitch:other_config:private_key` at it. Every
//! `*.key` in the run directory and the certificate directory (`--cert-dir`) is held to conf.db's
//! rules: 0640 or stricter, owned by root, and not readable by anyone else through the directory
//! chain.

use std::path::{Path, PathBuf};

use serde_json::json;

use std::os::unix::fs::MetadataExt;

use super::files::reach;
use crate::report::{Code, Finding, Report, Severity, Subject};

/// Directory entries looked at per directory.
const MAX_ENTRIES: usize = 10_000;

/// The `*.key` regular files and symlinks directly in `dir` (not followed), sorted.
async fn key_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut rd = tokio::fs::read_dir(dir).await?;
    let mut out = vec![];
    let mut seen = 0;
    while let Some(e) = rd.next_entry().await? {
        seen += 1;
        if seen > MAX_ENTRIES {
            break;
        }
        if e.file_name().as_encoded_bytes().ends_with(b".key") {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
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

/// Checks every `*.key` in `dirs` (duplicates skipped). `cert_mode`: the tunnels authenticate
/// with certificates, so finding no key at all is something the report must say.
pub async fn check(dirs: &[&Path], cert_mode: bool, report: &mut Report) {
    let mut found = 0usize;
    let mut done: Vec<PathBuf> = vec![];
    for dir in dirs {
        if done.iter().any(|d| d == dir) {
            continue;
        }
        done.push(dir.to_path_buf());
        let files = match key_files(dir).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                report.not_checked(
                    "IPsec private keys (*.key)",
                    format!("cannot list {}: {}", dir.display(), e.kind()),
                );
                continue;
            }
        };
        for path in files {
            match tokio::fs::symlink_metadata(&path).await {
                Ok(m) if m.file_type().is_file() => {
                    found += 1;
                    let exposed = reach(&path, 0o4).await;
                    judge(&path, m.mode() & 0o7777, m.uid(), exposed, report);
                }
                Ok(_) => report.not_checked(
                    "IPsec private keys (*.key)",
                    format!("{} is not a regular file (not followed)", path.display()),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report.not_checked(
                    "IPsec private keys (*.key)",
                    format!("{}: {}", path.display(), e.kind()),
                ),
            }
        }
    }
    if cert_mode && found == 0 {
        report.not_checked(
            "IPsec private keys (*.key)",
            format!(
                "the tunnels use certificates but no *.key was found in {}; point --cert-dir at the agent's certificate directory",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}
