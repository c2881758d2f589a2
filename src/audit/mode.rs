//! Question: how do the nodes authenticate IPsec (the agent's ConfigMap), and how strong is the
//! key in the Secret (judged by [`snapshot`](super::snapshot), which keeps only its strength and
//! fingerprint)?

use super::snapshot::Snapshot;
use super::AuditConfig;
use crate::report::{Code, Finding, Severity, Subject};

/// The key's strength and the authentication mode.
pub fn check(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let mut out = key_strength(snap, cfg);
    out.extend(auth_mode(snap, cfg));
    out
}

fn key_strength(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let Some(key) = &snap.key else {
        return vec![];
    };
    let subject = Subject::named("secret", format!("{}/{}", cfg.namespace, cfg.secret));
    let base = |code, sev| {
        Finding::new(code, sev, subject.clone())
            .detail("fingerprint", key.fingerprint.to_string())
            .remediation("psk-guard rotate (a random 32-byte key)")
    };
    crate::checks::tunnels::weak_key_findings(&key.strength, base, " in the Secret")
}

fn auth_mode(snap: &Snapshot, cfg: &AuditConfig) -> Vec<Finding> {
    let Some(conf) = &snap.agent_conf else {
        return vec![];
    };
    let subject = Subject::named("configmap", format!("{}/{}", cfg.namespace, cfg.config_map));
    let f = if crate::rotation::record::cert_mode(conf) {
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
