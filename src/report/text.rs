//! The human summary: a table of findings (most severe first), the remediation once per code,
//! the accepted (suppressed) findings with their reasons, what could not be checked, and a totals
//! line. Long subjects wrap onto continuation lines, never cut, so that `conf.db` and
//! `.conf.db.~lock~` stay apart. Colour only when asked (stdout is a TTY, or --color always).
//! The findings are walked once and written as they come.

use std::collections::BTreeSet;
use std::io::{self, Write};

use super::{Code, Report, Severity};

/// Width of the SUBJECT column; longer subjects wrap.
const SUBJECT_WIDTH: usize = 48;
const SEVERITY_WIDTH: usize = 8;

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

/// Splits `s` into lines of at most `width` characters, preferring to break after a `/`.
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut lines = vec![];
    let mut start = 0;
    while chars.len() - start > width {
        let window = &chars[start..start + width];
        let cut = window
            .iter()
            .rposition(|c| *c == '/')
            .filter(|i| *i > width / 3)
            .map_or(width, |i| i + 1);
        lines.push(chars[start..start + cut].iter().collect());
        start += cut;
    }
    lines.push(chars[start..].iter().collect());
    lines
}

fn code_width() -> usize {
    Code::ALL.iter().map(|c| c.id().len()).max().unwrap_or(4)
}

pub fn write(report: &Report, color: bool, w: &mut dyn Write) -> io::Result<()> {
    let target: Vec<String> = report
        .target
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    writeln!(w, "psk-guard {} ({})", report.command, target.join(", "))?;
    writeln!(
        w,
        "{} on {}{}",
        report.generated_at,
        report.host.hostname,
        report
            .host
            .node
            .as_deref()
            .map(|n| format!(" (node {n})"))
            .unwrap_or_default()
    )?;
    let (sw, cw, uw) = (SEVERITY_WIDTH, code_width(), SUBJECT_WIDTH);
    let mut codes = BTreeSet::new();
    if report.findings.is_empty() {
        writeln!(w, "\nNo findings.")?;
    } else {
        writeln!(
            w,
            "\n{:sw$}  {:cw$}  {:uw$}  OBSERVED",
            "SEVERITY", "CODE", "SUBJECT"
        )?;
        for f in &report.findings {
            let sev = paint(color, f.severity, &format!("{:sw$}", f.severity.as_str()));
            let lines = wrap(&f.subject.name, uw);
            let first = lines.first().map(String::as_str).unwrap_or("");
            writeln!(w, "{sev}  {:cw$}  {first:uw$}  {}", f.code, f.observed)?;
            for l in &lines[1..] {
                writeln!(w, "{:sw$}  {:cw$}  {l}", "", "")?;
            }
            codes.insert(f.code);
        }
        writeln!(w, "\nWhat to do:")?;
        let mut seen = BTreeSet::new();
        for f in &report.findings {
            if seen.insert(f.code) && !f.remediation.is_empty() {
                writeln!(
                    w,
                    "  {} — {}\n    expected: {}\n    fix: {}",
                    f.code, f.title, f.expected, f.remediation
                )?;
            }
        }
    }
    if !report.suppressed.is_empty() {
        writeln!(w, "\nAccepted (not counted):")?;
        for s in &report.suppressed {
            writeln!(
                w,
                "  {:sw$}  {:cw$}  {}\n    reason: {} ({}{})",
                s.finding.severity.as_str(),
                s.finding.code,
                s.finding.subject.name,
                s.suppression.reason,
                s.suppression.source,
                s.suppression
                    .expires
                    .as_deref()
                    .map(|d| format!(", until {d}"))
                    .unwrap_or_default()
            )?;
        }
    }
    if !report.incomplete.is_empty() {
        writeln!(w, "\nNot checked:")?;
        for i in &report.incomplete {
            writeln!(w, "  {}: {}", i.check, i.reason)?;
        }
    }
    let sum = report.summary();
    let counts: Vec<String> = Severity::ALL
        .iter()
        .filter(|s| report.count(**s) > 0)
        .map(|s| format!("{} {}", report.count(*s), s.as_str()))
        .collect();
    writeln!(
        w,
        "\n{} finding(s){}{}{}. Keys are shown only as fingerprints (salt: {}).",
        sum.total,
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {}", counts.join(", "))
        },
        if sum.suppressed == 0 {
            String::new()
        } else {
            format!("; {} accepted", sum.suppressed)
        },
        if sum.incomplete == 0 {
            String::new()
        } else {
            format!("; {} part(s) not checked", sum.incomplete)
        },
        report.fingerprint_salt
    )
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn long_paths_wrap_without_losing_characters() {
        let p = "/var/lib/kubelet/pods/0123456789abcdef/volumes/kubernetes.io~empty-dir/run/antrea/openvswitch/.conf.db.~lock~";
        let lines = wrap(p, 48);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.chars().count() <= 48));
        assert_eq!(lines.concat(), p);
        assert_eq!(wrap("short", 48), vec!["short"]);
    }
}
