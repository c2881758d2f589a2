//! The JSON report: one documented, versioned shape (`docs/json-schema.md`). Fields are only ever
//! added within a schema version; a rename or removal bumps `schema_version`.

use serde_json::{json, Value};

use super::{Report, Severity};

pub const SCHEMA_VERSION: u32 = 1;

pub fn to_value(report: &Report) -> Value {
    let mut summary = serde_json::Map::new();
    for s in Severity::ALL {
        summary.insert(s.as_str().to_owned(), json!(report.count(s)));
    }
    summary.insert("total".into(), json!(report.findings.len()));
    summary.insert("incomplete".into(), json!(report.incomplete.len()));
    let mut v = json!({
        "schema": "psk-guard-report",
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "psk-guard", "version": env!("CARGO_PKG_VERSION")},
        "command": report.command,
        "target": report.target,
        "fingerprint": {
            "algorithm": "hmac-sha256-truncated-64",
            "salt": report.fingerprint_salt,
        },
        "summary": summary,
        "findings": report.findings,
        "incomplete": report.incomplete,
    });
    if let Some(d) = &report.data {
        v["data"] = d.clone();
    }
    v
}

pub fn render(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(&to_value(report)).unwrap_or_default();
    s.push('\n');
    s
}
