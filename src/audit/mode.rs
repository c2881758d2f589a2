//! Question: how do the nodes authenticate IPsec (the agent's ConfigMap), and how strong is the
//! key in the Secret (judged by [`snapshot`](super::snapshot), which keeps only its strength and
//! fingerprint)? In certificate mode the key is unused, so a weak one is reported lower: it still
//! matters because switching back to PSK mode would use it.

use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

/// The key's strength and the authentication mode.
pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let cert = snap
        .agent_conf
        .as_deref()
        .is_some_and(crate::rotation::record::cert_mode);
    let mut out = key_strength(snap, cfg, cert);
    out.extend(auth_mode(snap, cfg, cert));
    out
}

/// What a weak key's severity becomes when certificate mode leaves it unused.
fn unused(sev: Severity) -> Severity {
    match sev {
        Severity::Critical => Severity::Medium,
        Severity::High | Severity::Medium => Severity::Low,
        other => other,
    }
}

fn key_strength(snap: &Snapshot, cfg: &AuditConfig, cert: bool) -> Vec<Finding> {
    let Some(key) = &snap.key else {
        return vec![];
    };
    let subject = Subject::named("secret", format!("{}/{}", cfg.namespace, cfg.secret));
    let base = |code, sev| {
        Finding::new(code, sev, subject.clone())
            .detail("fingerprint", key.fingerprint.to_string())
            .remediation("psk-guard rotate (a random 32-byte key)")
    };
    let findings = crate::checks::tunnels::weak_key_findings(&key.strength, base, " in the Secret");
    if !cert {
        return findings;
    }
    findings
        .into_iter()
        .map(|mut f| {
            f.severity = unused(f.severity);
            f.observed.push_str(
                " (unused: IPsec is in certificate mode; it would be used again if the agents were switched back to PSK mode, and anyone who can read the Secret knows it)",
            );
            f.detail("in_use", false)
        })
        .collect()
}

fn auth_mode(snap: &Snapshot, cfg: &AuditConfig, cert: bool) -> Vec<Finding> {
    if snap.agent_conf.is_none() {
        return vec![];
    }
    let subject = Subject::named("configmap", format!("{}/{}", cfg.namespace, cfg.config_map));
    let f = if cert {
        Finding::new(Code::IpsecCertMode, Severity::Info, subject)
            .observed("ipsec.authenticationMode: cert")
            .expected("certificate mode")
            .remediation("nothing to do")
    } else {
        Finding::new(Code::IpsecAuthPsk, Severity::Medium, subject)
            .observed("ipsec.authenticationMode: psk (or unset)")
            .expected("ipsec.authenticationMode: cert")
            .remediation("enable feature gate IPsecCertAuth and set ipsec.authenticationMode: cert in antrea-agent.conf; until then rotate the PSK regularly (psk-guard rotate)")
    };
    vec![f]
}
