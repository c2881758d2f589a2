//! Prometheus text exposition format (version 0.0.4), for node-exporter's textfile collector:
//! write it with `--output-file /var/lib/node_exporter/textfile/psk_guard.prom` (written
//! atomically, as the collector requires). Every family has HELP and TYPE lines; label values are
//! escaped. Metrics:
//! - `psk_guard_findings{command,code,severity}`: findings by code and severity (not counting
//!   accepted ones); every code of the catalog at its reported severities, 0 when absent.
//! - `psk_guard_findings_by_severity{command,severity}`: totals for each severity.
//! - `psk_guard_suppressed_findings{command}`, `psk_guard_incomplete_checks{command}`.
//! - `psk_guard_last_run_timestamp_seconds{command}`.
//! - `psk_guard_key_age_seconds{command}`: age of the current key, from the rotation record's
//!   `started_at` (only `rotate --status` knows it).

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::{Code, Report, Severity};

/// Escapes a label value: backslash, double quote and newline.
pub fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(w: &mut dyn Write, name: &str, help: &str) -> io::Result<()> {
    writeln!(w, "# HELP {name} {help}")?;
    writeln!(w, "# TYPE {name} gauge")
}

/// Seconds since the rotation record's `started_at`, when the report carries one.
fn key_age(report: &Report) -> Option<i64> {
    let started = report.data.as_ref()?.get("started_at")?.as_str()?;
    let t: jiff::Timestamp = started.parse().ok()?;
    let now: jiff::Timestamp = report.generated_at.parse().ok()?;
    Some((now.as_second() - t.as_second()).max(0))
}

pub fn write(report: &Report, w: &mut dyn Write) -> io::Result<()> {
    let cmd = label(report.command);
    let mut by: BTreeMap<(&str, Severity), usize> = BTreeMap::new();
    for f in &report.findings {
        *by.entry((f.code, f.severity)).or_default() += 1;
    }
    family(
        w,
        "psk_guard_findings",
        "Findings of the last psk-guard run by code and severity (accepted findings not counted).",
    )?;
    for c in Code::ALL {
        let present: Vec<Severity> = by
            .keys()
            .filter(|(code, _)| *code == c.id())
            .map(|(_, s)| *s)
            .collect();
        if present.is_empty() {
            continue;
        }
        for s in present {
            writeln!(
                w,
                "psk_guard_findings{{command=\"{cmd}\",code=\"{}\",severity=\"{}\"}} {}",
                c.id(),
                s.as_str(),
                by[&(c.id(), s)]
            )?;
        }
    }
    family(
        w,
        "psk_guard_findings_by_severity",
        "Findings of the last psk-guard run by severity (accepted findings not counted).",
    )?;
    for s in Severity::ALL {
        writeln!(
            w,
            "psk_guard_findings_by_severity{{command=\"{cmd}\",severity=\"{}\"}} {}",
            s.as_str(),
            report.count(s)
        )?;
    }
    family(
        w,
        "psk_guard_suppressed_findings",
        "Findings accepted by --skip or the ignore file in the last run.",
    )?;
    writeln!(
        w,
        "psk_guard_suppressed_findings{{command=\"{cmd}\"}} {}",
        report.suppressed.len()
    )?;
    family(
        w,
        "psk_guard_incomplete_checks",
        "Parts of the last run that could not be checked (never a pass).",
    )?;
    writeln!(
        w,
        "psk_guard_incomplete_checks{{command=\"{cmd}\"}} {}",
        report.incomplete.len()
    )?;
    family(
        w,
        "psk_guard_last_run_timestamp_seconds",
        "When the last psk-guard run made its report (Unix seconds).",
    )?;
    let ts = report
        .generated_at
        .parse::<jiff::Timestamp>()
        .map_or(0, |t| t.as_second());
    writeln!(
        w,
        "psk_guard_last_run_timestamp_seconds{{command=\"{cmd}\"}} {ts}"
    )?;
    if let Some(age) = key_age(report) {
        family(
            w,
            "psk_guard_key_age_seconds",
            "Seconds since the current IPsec PSK was rotated in (from the rotation record).",
        )?;
        writeln!(w, "psk_guard_key_age_seconds{{command=\"{cmd}\"}} {age}")?;
    }
    Ok(())
}
