//! SARIF 2.1.0, shaped for GitHub code scanning (validated against the OASIS schema in
//! tests/sarif-2.1.0.schema.json, and GitHub's upload rules asserted, by tests/it/output.rs).
//!
//! - One rule per finding code (the whole catalog, so rule indices are stable), with the
//!   rule-level `properties` GitHub reads: `security-severity` (a number as a string), `tags`
//!   (`security` first) and `precision`; `helpUri` points at the code's section of
//!   docs/findings.md.
//! - Every result has a physical location: a path finding its path; a key, an interface or the
//!   OVSDB tables the file they live in (conf.db), a server its socket; a damaged record a byte
//!   region, old keys in conf.db's history the region of the newest record that holds one. Files under the run directory are relative to `uriBaseId` `RUNDIR`; cluster objects
//!   are relative to `CLUSTER` (`pod/ns/name`, `nodes/<node>/<path>`). URIs are percent-encoded.
//! - `partialFingerprints` is [`Finding::id`]: a hash of code, subject kind and stable subject
//!   name, the same across runs and salts and never derived from key bytes; message texts carry
//!   no salted fingerprint, so an alert matches itself from one run to the next.
//! - Suppressed findings are results with `suppressions` (kind `external`, the reason as
//!   justification); what could not be checked is a tool execution notification.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use serde_json::Value;

use super::{Code, Finding, Report, SeqIter, Severity, Suppression};

pub const DOCS: &str = "https://github.com/psk-guard/psk-guard/blob/main/docs/findings.md";

/// Characters kept as they are in a URI path: RFC 3986 unreserved and `/`.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub's bands: over 9.0 critical, 7.0–8.9 high, 4.0–6.9 medium, 0.1–3.9 low.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

/// The rule's severity (the worst a finding of that code can have) and precision. Codes not in
/// the table are high, precision high.
const RULES: &[(Code, Severity, &str)] = &[
    (Code::PskPlaintextInOvsdb, Severity::Critical, "very-high"),
    (Code::PskDefaultKey, Severity::Critical, "very-high"),
    (Code::PskLowEntropy, Severity::High, "medium"),
    (Code::IpsecCertMode, Severity::Info, "very-high"),
    (Code::NoIpsecTunnels, Severity::Info, "high"),
    (Code::PathAbsent, Severity::Medium, "high"),
    (Code::PathUnreadable, Severity::Medium, "high"),
    (Code::OvsdbUnreachable, Severity::Medium, "high"),
    (Code::ConfDbLogDamaged, Severity::Medium, "high"),
    (Code::IpsecAuthPsk, Severity::Medium, "very-high"),
    (Code::AgentCanPatchStatus, Severity::Medium, "high"),
    (Code::ControllerNotOnSecureNode, Severity::Medium, "medium"),
    (Code::NamespaceAllowsHostpath, Severity::Medium, "medium"),
    (Code::NodeNotChecked, Severity::Medium, "high"),
    (Code::IgnoreEntryExpired, Severity::Info, "very-high"),
];

fn rule_meta(c: Code) -> (Severity, &'static str) {
    RULES
        .iter()
        .find(|(code, _, _)| *code == c)
        .map_or((Severity::High, "high"), |(_, s, p)| (*s, p))
}

#[derive(Serialize)]
struct Text<'a> {
    text: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    id: &'static str,
    name: String,
    short_description: Text<'static>,
    full_description: Text<'static>,
    help: Text<'static>,
    help_uri: String,
    default_configuration: DefaultConfiguration,
    properties: RuleProperties,
}

#[derive(Serialize)]
struct DefaultConfiguration {
    level: &'static str,
}

#[derive(Serialize)]
struct RuleProperties {
    #[serde(rename = "security-severity")]
    security_severity: &'static str,
    tags: Vec<&'static str>,
    precision: &'static str,
    #[serde(rename = "problem.severity")]
    problem_severity: &'static str,
}

fn pascal(id: &str) -> String {
    id.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn tags(c: Code) -> Vec<&'static str> {
    let area = match c.id() {
        id if id.starts_with("psk-") || id.starts_with("ipsec-") => "ipsec",
        id if id.contains("mode") || id.contains("owner") || id.starts_with("path-") => {
            "file-permissions"
        }
        id if id.starts_with("ignore-") => "configuration",
        id if id.starts_with("ovsdb") || id.starts_with("conf-db") || id == "no-ipsec-tunnels" => {
            "ovsdb"
        }
        _ => "kubernetes",
    };
    vec!["security", "antrea", area]
}

fn rules() -> Vec<Rule> {
    Code::ALL
        .iter()
        .map(|&c| {
            let (sev, precision) = rule_meta(c);
            Rule {
                id: c.id(),
                name: pascal(c.id()),
                short_description: Text { text: c.title() },
                full_description: Text { text: c.help() },
                help: Text { text: c.help() },
                help_uri: format!("{DOCS}#{}", c.id()),
                default_configuration: DefaultConfiguration { level: level(sev) },
                properties: RuleProperties {
                    security_severity: security_severity(sev),
                    tags: tags(c),
                    precision,
                    problem_severity: match sev {
                        Severity::Critical | Severity::High => "error",
                        Severity::Medium => "warning",
                        _ => "recommendation",
                    },
                },
            }
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactLocation {
    uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uri_base_id: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    byte_offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    byte_length: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: ArtifactLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<Region>,
}

#[derive(Serialize)]
struct LogicalLocation<'a> {
    name: &'a str,
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location<'a> {
    physical_location: PhysicalLocation,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logical_locations: Vec<LogicalLocation<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifSuppression<'a> {
    kind: &'static str,
    status: &'static str,
    justification: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultProperties<'a> {
    severity: Severity,
    subject_kind: &'static str,
    subject: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    details: &'a BTreeMap<String, super::Detail>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult<'a> {
    rule_id: &'static str,
    rule_index: usize,
    level: &'static str,
    message: MessageText,
    locations: [Location<'a>; 1],
    partial_fingerprints: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    suppressions: Vec<SarifSuppression<'a>>,
    properties: ResultProperties<'a>,
}

#[derive(Serialize)]
struct MessageText {
    text: String,
}

/// Where locations are resolved from.
struct Bases {
    run_dir: Option<PathBuf>,
    /// conf.db: where keys and interfaces live.
    conf_db: Option<String>,
    /// The OVSDB socket.
    db_sock: Option<String>,
}

impl Bases {
    fn new(report: &Report) -> Bases {
        let run_dir = report
            .target
            .get("run_dir")
            .and_then(|r| std::path::absolute(r).ok());
        let db_sock = report
            .target
            .get("db")
            .and_then(|d| d.strip_prefix("unix:"))
            .map(str::to_owned);
        let conf_db = report.target.get("conf_db").cloned().or_else(|| {
            run_dir
                .as_ref()
                .map(|r| r.join("openvswitch/conf.db").display().to_string())
        });
        Bases {
            run_dir,
            conf_db,
            db_sock,
        }
    }

    fn file(&self, path: &str) -> ArtifactLocation {
        let p = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
        if let Some(rel) = self.run_dir.as_ref().and_then(|r| p.strip_prefix(r).ok()) {
            if !rel.as_os_str().is_empty() {
                return ArtifactLocation {
                    uri: encode(rel),
                    uri_base_id: Some("RUNDIR"),
                };
            }
        }
        ArtifactLocation {
            uri: format!("file://{}", encode(&p)),
            uri_base_id: None,
        }
    }

    fn cluster(&self, rel: String) -> ArtifactLocation {
        ArtifactLocation {
            uri: utf8_percent_encode(rel.trim_start_matches('/'), PATH).to_string(),
            uri_base_id: Some("CLUSTER"),
        }
    }

    fn location<'a>(&self, f: &'a Finding) -> Location<'a> {
        let mut region = None;
        let mut logical = vec![];
        let artifact = if let Some(l) = &f.location {
            region = l.byte_offset.map(|byte_offset| Region {
                byte_offset,
                byte_length: l.byte_length,
            });
            self.file(&l.path)
        } else {
            match f.subject.kind {
                "path" => self.file(&f.subject.name),
                "interface" | "key" | "ovsdb" => {
                    logical.push(LogicalLocation {
                        name: f.stable_subject(),
                        kind: "resource",
                    });
                    let sock = f.subject.name.strip_prefix("unix:");
                    match (sock, &self.conf_db, &self.db_sock) {
                        (Some(s), _, _) => self.file(s),
                        (None, Some(c), _) => self.file(c),
                        (None, None, Some(s)) => self.file(s),
                        (None, None, None) => self.cluster(format!("ovsdb/{}", f.stable_subject())),
                    }
                }
                "node-path" => {
                    let (node, path) = f
                        .subject
                        .name
                        .split_once(':')
                        .unwrap_or(("", &f.subject.name));
                    self.cluster(format!("nodes/{node}/{}", path.trim_start_matches('/')))
                }
                "node" => self.cluster(format!("nodes/{}", f.subject.name)),
                kind => self.cluster(format!("{kind}/{}", f.subject.name)),
            }
        };
        Location {
            physical_location: PhysicalLocation {
                artifact_location: artifact,
                region,
            },
            logical_locations: logical,
        }
    }

    fn result<'a>(
        &self,
        report: &Report,
        f: &'a Finding,
        suppression: Option<&'a Suppression>,
    ) -> SarifResult<'a> {
        let rule_index = Code::ALL.iter().position(|c| c.id() == f.code).unwrap_or(0);
        let mut text = format!("{}: {}", f.title, f.stable_subject());
        for (label, v) in [
            ("Observed", f.observed.as_str()),
            ("Expected", &f.expected),
            ("Fix", &f.remediation),
        ] {
            if !v.is_empty() {
                text.push_str(&format!(". {label}: {v}"));
            }
        }
        SarifResult {
            rule_id: f.code,
            rule_index,
            level: level(f.severity),
            message: MessageText {
                text: redact_fingerprints(&text),
            },
            locations: [self.location(f)],
            partial_fingerprints: BTreeMap::from([("pskGuardFinding/v1", report.finding_id(f))]),
            suppressions: suppression
                .map(|s| SarifSuppression {
                    kind: "external",
                    status: "accepted",
                    justification: &s.reason,
                })
                .into_iter()
                .collect(),
            properties: ResultProperties {
                severity: f.severity,
                subject_kind: f.subject.kind,
                subject: &f.subject.name,
                details: &f.details,
            },
        }
    }
}

fn encode(p: &Path) -> String {
    utf8_percent_encode(&p.to_string_lossy(), PATH).to_string()
}

/// Replaces salted key fingerprints (`hmac-sha256:<16 hex>`) in a message by `hmac-sha256:…`, so
/// the text is the same in every run (the fingerprints stay in `properties`).
pub fn redact_fingerprints(s: &str) -> String {
    const P: &str = "hmac-sha256:";
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(P) {
        out.push_str(&rest[..i + P.len()]);
        rest = &rest[i + P.len()..];
        let hex = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex > 0 {
            out.push('…');
            rest = &rest[hex..];
        }
    }
    out.push_str(rest);
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    level: &'static str,
    message: MessageText,
}

pub fn write(report: &Report, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let bases = Bases::new(report);
    let mut base_ids = serde_json::Map::new();
    if let Some(r) = &bases.run_dir {
        let mut uri = format!("file://{}", encode(r));
        if !uri.ends_with('/') {
            uri.push('/');
        }
        base_ids.insert(
            "RUNDIR".into(),
            serde_json::json!({"uri": uri, "description": {"text": "Antrea's run directory (--run-dir)"}}),
        );
    }
    base_ids.insert(
        "CLUSTER".into(),
        serde_json::json!({"description": {"text": "Kubernetes objects (kind/namespace/name) and node files (nodes/<node>/<path>) of the audited cluster"}}),
    );
    let results = report
        .findings
        .iter()
        .map(|f| bases.result(report, f, None))
        .chain(
            report
                .suppressed
                .iter()
                .map(|s| bases.result(report, &s.finding, Some(&s.suppression))),
        );
    let notifications: Vec<Notification> = report
        .incomplete
        .iter()
        .map(|i| Notification {
            level: "error",
            message: MessageText {
                text: format!("{} not checked: {}", i.check, i.reason),
            },
        })
        .collect();
    let host = report.host.node.as_deref().unwrap_or(&report.host.hostname);
    let doc = serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
    });
    // The envelope is small; the results are streamed.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    #[serde(bound(serialize = "SeqIter<R>: Serialize"))]
    struct Run<'a, R> {
        tool: Value,
        automation_details: Value,
        original_uri_base_ids: serde_json::Map<String, Value>,
        results: SeqIter<R>,
        invocations: [Value; 1],
        properties: Value,
        #[serde(skip)]
        _p: std::marker::PhantomData<&'a ()>,
    }
    #[derive(Serialize)]
    #[serde(bound(serialize = "SeqIter<R>: Serialize"))]
    struct Log<'a, R> {
        #[serde(rename = "$schema")]
        schema: &'a Value,
        version: &'a Value,
        runs: [Run<'a, R>; 1],
    }
    let run = Run {
        tool: serde_json::json!({"driver": {
            "name": "psk-guard",
            "version": env!("CARGO_PKG_VERSION"),
            "semanticVersion": env!("CARGO_PKG_VERSION"),
            "informationUri": "https://github.com/psk-guard/psk-guard",
            "rules": rules(),
        }}),
        automation_details: serde_json::json!({"id": format!("psk-guard/{}/{}/", report.command, host)}),
        original_uri_base_ids: base_ids,
        results: SeqIter::new(results),
        invocations: [serde_json::json!({
            "executionSuccessful": report.incomplete.is_empty(),
            "startTimeUtc": report.generated_at,
            "toolExecutionNotifications": notifications,
        })],
        properties: serde_json::json!({
            "command": report.command,
            "target": report.target,
            "host": report.host,
        }),
        _p: std::marker::PhantomData,
    };
    let log = Log {
        schema: &doc["$schema"],
        version: &doc["version"],
        runs: [run],
    };
    serde_json::to_writer_pretty(&mut *w, &log)?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_redacted_from_messages() {
        assert_eq!(
            redact_fingerprints("key hmac-sha256:1c4f23c791dde4fd on hmac-sha256:"),
            "key hmac-sha256:… on hmac-sha256:"
        );
    }

    #[test]
    fn paths_are_percent_encoded() {
        assert_eq!(encode(Path::new("/a b/#c/conf.db")), "/a%20b/%23c/conf.db");
    }
}
