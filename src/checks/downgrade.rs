//! IPsec downgrade: tunnels that Antrea means to encrypt but whose OVSDB rows say otherwise.
//!
//! Whoever can write OVSDB can strip a tunnel's protection without touching the key: remove
//! `options:psk` (and there is no `remote_name`), and `ovs-monitor-ipsec` configures no IPsec for
//! that peer, so its traffic leaves the node in the clear; or change one tunnel's `type`, so that
//! peer is reached by another encapsulation than the rest. Antrea's node-route controller
//! (pkg/agent/controller/noderoute, `createIPSecTunnelPort`) creates every IPsec tunnel of a node
//! with the cluster's one tunnel type and either the PSK or, in certificate mode, `remote_name`
//! (mutually exclusive); anything else on a port it marked is a downgrade.

use std::collections::BTreeMap;

use serde_json::json;

use super::tunnels::{Tunnel, TUNNEL_TYPES};
use crate::report::{Code, Finding, Report, Severity, Subject};

fn peer(t: &Tunnel) -> &str {
    t.peer_node().or(t.remote_ip()).unwrap_or("an unknown peer")
}

fn base(code: Code, t: &Tunnel) -> Finding {
    let mut f = Finding::new(code, Severity::High, Subject::interface(t.name()))
        .detail("tunnel_type", t.kind());
    if let Some(n) = t.peer_node() {
        f = f.detail("peer_node", n);
    }
    if let Some(ip) = t.remote_ip() {
        f = f.detail("remote_ip", ip);
    }
    f
}

/// The tunnel type most of the node's tunnels use, if one type has a strict majority.
fn majority_type(tunnels: &[Tunnel]) -> (Option<&str>, BTreeMap<&str, usize>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tunnels {
        *counts.entry(t.kind()).or_default() += 1;
    }
    let major = counts
        .iter()
        .find(|(_, &n)| 2 * n > tunnels.len())
        .map(|(k, _)| *k);
    (major, counts)
}

/// Adds the downgrade findings for `tunnels` (as read by [`super::tunnels::read`]).
pub fn analyze(tunnels: &[Tunnel], report: &mut Report) {
    for t in tunnels {
        if t.marked && t.key.is_none() && !t.remote_name {
            report.push(
                base(Code::IpsecTunnelUnencrypted, t)
                    .observed(format!(
                        "the port is marked antrea-type=ipsec-tunnel but its interface has neither options:psk nor options:remote_name: traffic to {} is not encrypted",
                        peer(t)
                    ))
                    .expected("options:psk (PSK mode) or options:remote_name (certificate mode) on every IPsec tunnel")
                    .remediation("treat OVSDB as tampered with: find who can write db.sock (psk-guard check lists the exposure), then restart antrea-agent on this node, which recreates its tunnel ports with the configured key"),
            );
        }
    }
    let (major, counts) = majority_type(tunnels);
    for t in tunnels {
        let not_a_tunnel = !TUNNEL_TYPES.contains(&t.kind());
        let odd_one_out = major.is_some_and(|m| m != t.kind());
        if !(odd_one_out || not_a_tunnel && t.marked) {
            continue;
        }
        let kind = if t.kind().is_empty() {
            "(none)"
        } else {
            t.kind()
        };
        report.push(
            base(Code::IpsecTunnelTypeMismatch, t)
                .observed(match major {
                    Some(m) if m != t.kind() => format!(
                        "tunnel type {kind} to {}, while the node's other tunnels use {m}",
                        peer(t)
                    ),
                    _ => format!("type {kind} to {} is not a tunnel type", peer(t)),
                })
                .expected(format!(
                    "the same tunnel type ({}) on every IPsec tunnel",
                    major.unwrap_or("geneve, gre, vxlan or stt")
                ))
                .remediation("treat OVSDB as tampered with: find who can write db.sock, then restart antrea-agent on this node so it recreates its tunnel ports with the configured type")
                .detail("tunnel_types", json!(counts)),
        );
    }
    if major.is_none() && counts.len() > 1 {
        report.push(
            Finding::new(Code::IpsecTunnelTypeMismatch, Severity::High, Subject::ovsdb("Interface"))
                .observed(format!("the node's tunnels use {} different types and none is the majority", counts.len()))
                .expected("one tunnel type on every IPsec tunnel")
                .remediation("treat OVSDB as tampered with: find who can write db.sock, then restart antrea-agent on this node so it recreates its tunnel ports")
                .detail("tunnel_types", json!(counts)),
        );
    }
}
