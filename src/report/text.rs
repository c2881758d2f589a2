//! The human summary: a table of findings (most severe first), the remediation once per code,
//! what could not be checked, and a totals line. Colour only when asked (stdout is a TTY).

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{Report, Severity};

fn paint(color: bool, s: Severity, text: &str) -> String {
    if !color {
        return text.to_owned();
    }
    let code = match s {
        Severity::Critical => "1;31",
        Severity::High => "31",
        Severity::Medium => "33",
        Severity::Low => "36",
        Severity::Info => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

pub fn render(report: &Report, color: bool) -> String {
    let mut out = String::new();
    let target: Vec<String> = report
        .target
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(out, "psk-guard {} ({})", report.command, target.join(", "));
    if report.findings.is_empty() {
        let _ = writeln!(out, "\nNo findings.");
    } else {
        let sw = 8;
        let cw = report
            .findings
            .iter()
            .map(|f| f.code.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let subj: Vec<String> = report
            .findings
            .iter()
            .map(|f| clip(&f.subject.name, 48))
            .collect();
        let uw = subj
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(7)
            .max(7);
        let _ = writeln!(
            out,
            "\n{:sw$}  {:cw$}  {:uw$}  OBSERVED",
            "SEVERITY", "CODE", "SUBJECT"
        );
        for (f, s) in report.findings.iter().zip(&subj) {
            let sev = paint(color, f.severity, &format!("{:sw$}", f.severity.as_str()));
            let pad = uw - s.chars().count();
            let _ = writeln!(
                out,
                "{sev}  {:cw$}  {s}{}  {}",
                f.code,
                " ".repeat(pad),
                f.observed
            );
        }
        let _ = writeln!(out, "\nWhat to do:");
        let mut seen = BTreeSet::new();
        for f in &report.findings {
            if seen.insert(f.code) && !f.remediation.is_empty() {
                let _ = writeln!(
                    out,
                    "  {} — {}\n    expected: {}\n    fix: {}",
                    f.code, f.title, f.expected, f.remediation
                );
            }
        }
    }
    if !report.incomplete.is_empty() {
        let _ = writeln!(out, "\nNot checked:");
        for i in &report.incomplete {
            let _ = writeln!(out, "  {}: {}", i.check, i.reason);
        }
    }
    let counts: Vec<String> = Severity::ALL
        .iter()
        .filter(|s| report.count(**s) > 0)
        .map(|s| format!("{} {}", report.count(*s), s.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "\n{} finding(s){}{}. Keys are shown only as fingerprints (salt: {}).",
        report.findings.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {}", counts.join(", "))
        },
        if report.incomplete.is_empty() {
            String::new()
        } else {
            format!("; {} part(s) not checked", report.incomplete.len())
        },
        report.fingerprint_salt
    );
    out
}
