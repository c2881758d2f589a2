//! The IPsec tunnel interfaces of a node, read from OVSDB in one transaction, and what is wrong
//! with their keys.
//!
//! A tunnel is an interface whose Port carries `external_ids:antrea-type=ipsec-tunnel`, or a
//! geneve/gre/vxlan/stt interface with `options:psk` or `options:remote_name`. Each key is moved
//! out of the reply straight into a [`Psk`]; findings name keys only by fingerprint.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::ovsdb::{Client, Condition, OpResult, Operation, Value, VSWITCH_DB};
use crate::report::{Code, Finding, Report, Severity, Subject};
use crate::secret::{assess, Fingerprint, FingerprintKey, Psk};

pub const TUNNEL_TYPES: &[&str] = &["geneve", "gre", "vxlan", "stt"];

/// One IPsec tunnel interface (the key, if any, held as a [`Psk`]).
#[derive(Debug)]
pub struct Tunnel {
    pub uuid: String,
    pub name: String,
    pub kind: String,
    pub remote_ip: Option<String>,
    pub peer_node: Option<String>,
    pub remote_name: Option<String>,
    pub psk: Option<Psk>,
}

fn string_col(row: &crate::ovsdb::Row, col: &str) -> Option<String> {
    row.get(col)
        .and_then(Value::as_atom)
        .and_then(|a| a.as_str())
        .map(str::to_owned)
}

/// Reads every tunnel interface in one transaction (two selects).
pub async fn read(client: &Client) -> Result<Vec<Tunnel>, crate::ovsdb::Error> {
    let ops = [
        Operation::select("Interface", vec![], &["_uuid", "name", "type", "options"]),
        Operation::select(
            "Port",
            vec![Condition::new(
                "external_ids",
                "includes",
                Value::string_map(&[("antrea-type", "ipsec-tunnel")]),
            )],
            &["name", "interfaces", "external_ids"],
        ),
    ];
    let mut results = client.transact_ok(VSWITCH_DB, &ops).await?;
    let ports = match results.pop() {
        Some(OpResult::Select { rows }) => rows,
        _ => vec![],
    };
    let ifaces = match results.pop() {
        Some(OpResult::Select { rows }) => rows,
        _ => vec![],
    };
    // Interface uuid -> peer node name (or "" when the port has none), for ports marked IPsec.
    let mut marked: HashMap<String, Option<String>> = HashMap::new();
    for p in &ports {
        let node = p
            .get("external_ids")
            .and_then(|m| m.map_get("node-name"))
            .and_then(|a| a.as_str())
            .map(str::to_owned);
        if let Some(ifs) = p.get("interfaces") {
            for a in ifs.as_set() {
                if let Some(u) = a.as_uuid() {
                    marked.insert(u.to_owned(), node.clone());
                }
            }
        }
    }
    let mut out = vec![];
    for mut row in ifaces {
        let uuid = row
            .get("_uuid")
            .and_then(Value::as_atom)
            .and_then(|a| a.as_uuid())
            .map(str::to_owned)
            .unwrap_or_default();
        let kind = string_col(&row, "type").unwrap_or_default();
        let name = string_col(&row, "name").unwrap_or_default();
        let psk = row
            .get_mut("options")
            .and_then(|o| o.map_get_mut("psk"))
            .and_then(|a| match a {
                crate::ovsdb::Atom::String(s) => Some(Psk::new(s.take())),
                _ => None,
            });
        let opt = |k: &str| {
            row.get("options")
                .and_then(|o| o.map_get(k))
                .and_then(|a| a.as_str())
                .map(str::to_owned)
        };
        let remote_name = opt("remote_name");
        let is_tunnel_type = TUNNEL_TYPES.contains(&kind.as_str());
        let is_marked = marked.contains_key(&uuid);
        if !(is_marked || (is_tunnel_type && (psk.is_some() || remote_name.is_some()))) {
            continue;
        }
        let peer_node = marked.get(&uuid).cloned().flatten();
        out.push(Tunnel {
            uuid,
            remote_ip: opt("remote_ip"),
            peer_node,
            remote_name,
            psk,
            name,
            kind,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Who besides root can reach the key material, as found by the file checks.
#[derive(Debug, Default, Clone)]
pub struct KeyExposure {
    /// e.g. "conf.db is readable by all users".
    pub reasons: Vec<String>,
}

/// The findings for a weak key: a known default (critical, and then nothing else), too short,
/// low entropy (high). `base` makes a finding with the subject and details; `place` ends the
/// observed text (e.g. " on 3 tunnel(s)"). Shared by `check` (tunnel keys) and `audit` (the Secret).
pub fn weak_key_findings(
    st: &crate::secret::Strength,
    base: impl Fn(Code, Severity) -> Finding,
    place: &str,
) -> Vec<Finding> {
    if st.is_default {
        return vec![base(Code::PskDefaultKey, Severity::Critical)
            .observed(format!("a well-known default key{place}"))
            .expected("a random key unique to this cluster")];
    }
    let mut out = vec![];
    if st.too_short() {
        out.push(
            base(Code::PskTooShort, Severity::High)
                .observed(format!("{}-byte key{place}", st.len))
                .expected(format!("at least {} bytes", crate::secret::MIN_PSK_LEN)),
        );
    }
    if st.low_entropy() {
        out.push(
            base(Code::PskLowEntropy, Severity::High)
                .observed(format!("about {:.0} bits of entropy", st.entropy_bits))
                .expected(format!(
                    "at least {:.0} bits",
                    crate::secret::MIN_ENTROPY_BITS
                )),
        );
    }
    out
}

/// Turns tunnels into findings.
pub fn analyze(
    tunnels: &[Tunnel],
    fp_key: &FingerprintKey,
    exposure: &KeyExposure,
    expect: Option<Fingerprint>,
    report: &mut Report,
) {
    if tunnels.is_empty() {
        report.push(
            Finding::new(
                Code::NoIpsecTunnels,
                Severity::Info,
                Subject::ovsdb("Interface"),
            )
            .observed("no IPsec tunnel interfaces")
            .expected("one tunnel per peer node when IPsec is on")
            .remediation("nothing to do if IPsec is off or this is a single-node cluster"),
        );
        return;
    }
    // Distinct keys by fingerprint: the interfaces that carry each.
    let mut by_key: BTreeMap<Fingerprint, (Vec<&Tunnel>, crate::secret::Strength)> =
        BTreeMap::new();
    let plaintext_sev = if exposure.reasons.is_empty() {
        Severity::Medium
    } else {
        Severity::Critical
    };
    let mut cert = 0usize;
    for t in tunnels {
        let Some(psk) = &t.psk else {
            if t.remote_name.is_some() {
                cert += 1;
            }
            continue;
        };
        let fp = fp_key.fingerprint(psk);
        by_key
            .entry(fp)
            .or_insert_with(|| (vec![], assess(psk)))
            .0
            .push(t);
        let mut f = Finding::new(Code::PskPlaintextInOvsdb, plaintext_sev, Subject::interface(&t.name))
            .observed(format!(
                "plaintext PSK (key {fp}) on {} tunnel to {}",
                if t.kind.is_empty() { "a" } else { &t.kind },
                t.peer_node.as_deref().or(t.remote_ip.as_deref()).unwrap_or("an unknown peer")
            ))
            .expected(if exposure.reasons.is_empty() {
                "no PSK in OVSDB (certificate mode); at least conf.db, db.sock and the run directory closed to non-root users".to_owned()
            } else {
                "conf.db, db.sock and the run directory closed to non-root users".to_owned()
            })
            .remediation(if exposure.reasons.is_empty() {
                "switch Antrea to certificate mode (ipsec.authenticationMode: cert, feature gate IPsecCertAuth) so no PSK is stored; until then keep the file modes tight and rotate the key regularly (psk-guard rotate)"
            } else {
                "close access now (psk-guard fix tightens the modes), then rotate the key (psk-guard rotate): whoever could read it may have it; the lasting fix is certificate mode"
            })
            .detail("fingerprint", fp.to_string())
            .detail("tunnel_type", t.kind.clone());
        if let Some(n) = &t.peer_node {
            f = f.detail("peer_node", n.clone());
        }
        if let Some(ip) = &t.remote_ip {
            f = f.detail("remote_ip", ip.clone());
        }
        if !exposure.reasons.is_empty() {
            f = f.detail("exposed_to", json!(exposure.reasons));
        }
        report.push(f);
        if let Some(want) = expect {
            if fp != want {
                report.push(
                    Finding::new(Code::PskUnexpectedFingerprint, Severity::High, Subject::interface(&t.name))
                        .observed(format!("key {fp}"))
                        .expected(format!("key {want}"))
                        .remediation("the node has not converged on the new key: restart its antrea-agent pod or re-run the rotation (psk-guard rotate resumes)")
                        .detail("fingerprint", fp.to_string())
                        .detail("expected_fingerprint", want.to_string()),
                );
            }
        }
    }
    for (fp, (ts, strength)) in &by_key {
        let names: Vec<&str> = ts.iter().take(10).map(|t| t.name.as_str()).collect();
        let subject = Subject::key(fp);
        let base = |code, sev| {
            Finding::new(code, sev, subject.clone())
                .detail("fingerprint", fp.to_string())
                .detail("interfaces", ts.len())
                .detail("example_interfaces", json!(names))
                .remediation("rotate to a random 32-byte key: psk-guard rotate (or set a strong value in the antrea-ipsec Secret and restart antrea-agent)")
        };
        for f in weak_key_findings(strength, base, &format!(" on {} tunnel(s)", ts.len())) {
            report.push(f);
        }
    }
    if by_key.len() > 1 {
        let counts: BTreeMap<String, usize> = by_key
            .iter()
            .map(|(fp, (ts, _))| (fp.to_string(), ts.len()))
            .collect();
        report.push(
            Finding::new(Code::PskMixedKeys, Severity::High, Subject::ovsdb("Interface"))
                .observed(format!("{} different keys across {} tunnels", by_key.len(), counts.values().sum::<usize>()))
                .expected("one key on every tunnel")
                .remediation("finish the rotation: restart the antrea-agent pods still on the old key (or re-run psk-guard rotate, which resumes)")
                .detail("tunnels_per_key", json!(counts)),
        );
    }
    if cert > 0 && by_key.is_empty() {
        report.push(
            Finding::new(
                Code::IpsecCertMode,
                Severity::Info,
                Subject::ovsdb("Interface"),
            )
            .observed(format!(
                "{cert} tunnel(s) authenticate with certificates; no PSK stored"
            ))
            .expected("certificate mode")
            .remediation("nothing to do"),
        );
    }
}
