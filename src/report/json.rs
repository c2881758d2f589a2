//! The JSON report: one documented, versioned shape (`docs/json-schema.md`). Fields are only ever
//! added within a schema version; a rename or removal bumps `schema_version`. Written straight to
//! the output, without building a JSON tree first (a node with 10,000 tunnels has 10,000 findings).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Finding, Incomplete, Report, Severity};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Tool {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct FingerprintInfo {
    algorithm: &'static str,
    salt: &'static str,
}

#[derive(Serialize)]
struct Summary {
    critical: usize,
    high: usize,
    medium: usize,
    low: usize,
    info: usize,
    total: usize,
    incomplete: usize,
}

#[derive(Serialize)]
struct Document<'a> {
    schema: &'static str,
    schema_version: u32,
    tool: Tool,
    command: &'static str,
    target: &'a BTreeMap<String, String>,
    fingerprint: FingerprintInfo,
    summary: Summary,
    findings: &'a [Finding],
    incomplete: &'a [Incomplete],
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a serde_json::Value>,
}

fn document(report: &Report) -> Document<'_> {
    Document {
        schema: "psk-guard-report",
        schema_version: SCHEMA_VERSION,
        tool: Tool {
            name: "psk-guard",
            version: env!("CARGO_PKG_VERSION"),
        },
        command: report.command,
        target: &report.target,
        fingerprint: FingerprintInfo {
            algorithm: "hmac-sha256-truncated-64",
            salt: report.fingerprint_salt,
        },
        summary: Summary {
            critical: report.count(Severity::Critical),
            high: report.count(Severity::High),
            medium: report.count(Severity::Medium),
            low: report.count(Severity::Low),
            info: report.count(Severity::Info),
            total: report.findings.len(),
            incomplete: report.incomplete.len(),
        },
        findings: &report.findings,
        incomplete: &report.incomplete,
        data: report.data.as_ref(),
    }
}

pub fn write(report: &Report, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, &document(report))?;
    w.write_all(b"\n")
}

pub fn render(report: &Report) -> String {
    let mut out = Vec::new();
    let _ = write(report, &mut out);
    String::from_utf8(out).unwrap_or_default()
}
