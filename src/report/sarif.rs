//! SARIF 2.1.0: one rule per finding code (the whole catalog, so rule indices are stable), one
//! result per finding. Paths become artifact locations; interfaces, keys and servers logical ones.

use serde_json::{json, Value};

use super::{Code, Report, Severity};

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

pub fn to_value(report: &Report) -> Value {
    let rules: Vec<Value> = Code::ALL
        .iter()
        .map(|c| {
            json!({
                "id": c.id(),
                "name": c.id(),
                "shortDescription": {"text": c.title()},
                "fullDescription": {"text": c.help()},
                "helpUri": format!("https://github.com/psk-guard/psk-guard/blob/main/docs/findings.md#{}", c.id()),
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let rule_index = Code::ALL.iter().position(|c| c.id() == f.code);
            let location = if f.subject.kind == "path" {
                json!({"physicalLocation": {"artifactLocation": {
                    "uri": format!("file://{}", f.subject.name)}}})
            } else {
                json!({"logicalLocations": [{"name": f.subject.name, "kind": f.subject.kind}]})
            };
            let mut text = format!("{}: {}", f.title, f.subject.name);
            if !f.observed.is_empty() {
                text.push_str(&format!(". Observed: {}", f.observed));
            }
            if !f.expected.is_empty() {
                text.push_str(&format!(". Expected: {}", f.expected));
            }
            if !f.remediation.is_empty() {
                text.push_str(&format!(". Fix: {}", f.remediation));
            }
            json!({
                "ruleId": f.code,
                "ruleIndex": rule_index,
                "level": level(f.severity),
                "message": {"text": text},
                "locations": [location],
                "properties": {
                    "severity": f.severity,
                    "security-severity": security_severity(f.severity),
                    "details": f.details,
                },
            })
        })
        .collect();
    let notifications: Vec<Value> = report
        .incomplete
        .iter()
        .map(|i| json!({"level": "error", "message": {"text": format!("{} not checked: {}", i.check, i.reason)}}))
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "psk-guard",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/psk-guard/psk-guard",
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": report.incomplete.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "properties": {"command": report.command, "target": report.target},
            "results": results,
        }],
    })
}

pub fn render(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(&to_value(report)).unwrap_or_default();
    s.push('\n');
    s
}
