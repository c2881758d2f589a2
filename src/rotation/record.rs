//! The rotation record: annotations on the Secret, written in the same update as the key, that
//! let any later run see and resume an unfinished rotation. Fingerprints only, never the key.

use std::collections::BTreeMap;

use serde_json::json;

use super::Strategy;
use crate::secret::{Fingerprint, FingerprintKey, Psk};

pub const PREFIX: &str = "psk-guard.io/";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    SecretWritten,
    RolledOut,
    Verified,
    Compacted,
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::SecretWritten => "secret-written",
            Phase::RolledOut => "rolled-out",
            Phase::Verified => "verified",
            Phase::Compacted => "compacted",
            Phase::Done => "done",
        }
    }
    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::SecretWritten,
            Phase::RolledOut,
            Phase::Verified,
            Phase::Compacted,
            Phase::Done,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

#[derive(Clone, Debug)]
pub struct Record {
    pub id: String,
    pub phase: Phase,
    pub started_at: String,
    pub strategy: String,
    pub old_fingerprint: Fingerprint,
    pub new_fingerprint: Fingerprint,
    /// The fingerprint salt of this rotation (kept in the Secret, so every run and every node
    /// check computes the same fingerprints).
    pub salt: String,
    pub unconverged: Vec<String>,
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::fill(&mut b[..]);
    hex::encode(b)
}

impl Record {
    pub fn new(strategy: Strategy, current: &Psk, new: &Psk) -> Record {
        let salt = random_hex(16);
        let k = FingerprintKey::given(&salt);
        Record {
            id: random_hex(8),
            phase: Phase::SecretWritten,
            started_at: crate::cluster::now_rfc3339(),
            strategy: strategy.as_str().to_owned(),
            old_fingerprint: k.fingerprint(current),
            new_fingerprint: k.fingerprint(new),
            salt,
            unconverged: vec![],
        }
    }

    pub fn strategy_enum(&self) -> Option<Strategy> {
        match self.strategy.as_str() {
            "restart" => Some(Strategy::Restart),
            "push" => Some(Strategy::Push),
            _ => None,
        }
    }

    pub fn read(ann: Option<&BTreeMap<String, String>>) -> Option<Record> {
        let ann = ann?;
        let get = |k: &str| ann.get(&format!("{PREFIX}{k}")).cloned();
        Some(Record {
            id: get("rotation-id")?,
            phase: Phase::parse(&get("phase")?)?,
            started_at: get("started-at").unwrap_or_default(),
            strategy: get("strategy").unwrap_or_else(|| "restart".into()),
            old_fingerprint: Fingerprint::parse(&get("old-fingerprint")?)?,
            new_fingerprint: Fingerprint::parse(&get("new-fingerprint")?)?,
            salt: get("fingerprint-salt")?,
            unconverged: get("unconverged")
                .map(|s| {
                    s.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    pub fn apply(&self, ann: &mut BTreeMap<String, String>) {
        let mut set = |k: &str, v: String| {
            ann.insert(format!("{PREFIX}{k}"), v);
        };
        set("rotation-id", self.id.clone());
        set("phase", self.phase.as_str().into());
        set("started-at", self.started_at.clone());
        set("strategy", self.strategy.clone());
        set("old-fingerprint", self.old_fingerprint.to_string());
        set("new-fingerprint", self.new_fingerprint.to_string());
        set("fingerprint-salt", self.salt.clone());
        set("updated-at", crate::cluster::now_rfc3339());
        set("unconverged", self.unconverged.join(","));
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "rotation_id": self.id,
            "phase": self.phase.as_str(),
            "strategy": self.strategy,
            "started_at": self.started_at,
            "old_fingerprint": self.old_fingerprint.to_string(),
            "new_fingerprint": self.new_fingerprint.to_string(),
            "unconverged": self.unconverged,
        })
    }
}

/// Whether `antrea-agent.conf` selects certificate authentication for IPsec
/// (`ipsec:` → `authenticationMode: cert`).
pub fn cert_mode(conf: &str) -> bool {
    let mut in_ipsec = false;
    for line in conf.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if !indented {
            in_ipsec = trimmed.starts_with("ipsec:");
            continue;
        }
        if in_ipsec {
            if let Some(v) = trimmed.strip_prefix("authenticationMode:") {
                return v.trim().trim_matches(|c| c == '"' || c == '\'') == "cert";
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrips_through_annotations_without_the_key() {
        let r = Record::new(
            Strategy::Push,
            &Psk::new("old-key-value-1234".into()),
            &Psk::new("new-key-value-5678".into()),
        );
        let mut ann = BTreeMap::new();
        r.apply(&mut ann);
        let text = format!("{ann:?}");
        assert!(!text.contains("old-key-value") && !text.contains("new-key-value"));
        let back = Record::read(Some(&ann)).unwrap();
        assert_eq!(back.id, r.id);
        assert_eq!(back.new_fingerprint, r.new_fingerprint);
        assert_eq!(back.phase, Phase::SecretWritten);
    }

    #[test]
    fn cert_mode_detection() {
        assert!(cert_mode(
            "featureGates:\n  IPsecCertAuth: true\nipsec:\n  authenticationMode: cert\n"
        ));
        assert!(!cert_mode("ipsec:\n  authenticationMode: psk\n"));
        assert!(!cert_mode("other:\n  authenticationMode: cert\n"));
        assert!(!cert_mode(""));
    }
}
