//! JUnit XML for CI dashboards: one test suite per report, one test case per finding (class
//! `psk-guard.<command>.<code>`, name the subject). A finding at or above `--fail-on` is a
//! `<failure>`, below it the case passes (its text in `<system-out>`); an accepted finding is
//! `<skipped>` with its reason; a part that could not be checked is an `<error>`. A report without
//! findings has one passing case, so the suite is never empty.

use std::io::{self, Write};

use super::{FailOn, Finding, Report};

/// Escapes text for XML 1.0 attributes and content; characters XML cannot hold become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn body(f: &Finding) -> String {
    escape(&format!(
        "{}: {}\nobserved: {}\nexpected: {}\nfix: {}\nsee {}#{}",
        f.title,
        f.subject.name,
        f.observed,
        f.expected,
        f.remediation,
        super::sarif::DOCS,
        f.code
    ))
}

fn case(w: &mut dyn Write, command: &str, f: &Finding, inner: &str) -> io::Result<()> {
    writeln!(
        w,
        "    <testcase classname=\"psk-guard.{}.{}\" name=\"{}\">{inner}</testcase>",
        escape(command),
        escape(f.code),
        escape(&format!("{} {}", f.subject.kind, f.subject.name)),
    )
}

pub fn write(report: &Report, fail_on: FailOn, w: &mut dyn Write) -> io::Result<()> {
    let fails = |f: &Finding| fail_on.threshold().is_some_and(|t| f.severity >= t);
    let failures = report.findings.iter().filter(|f| fails(f)).count();
    let errors = report.incomplete.len();
    let skipped = report.suppressed.len();
    let tests = report.findings.len().max(1) + skipped + errors;
    let counts = format!(
        "tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\""
    );
    writeln!(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(w, "<testsuites name=\"psk-guard\" {counts}>")?;
    writeln!(
        w,
        "  <testsuite name=\"psk-guard {}\" {counts} timestamp=\"{}\" hostname=\"{}\">",
        escape(report.command),
        escape(&report.generated_at),
        escape(&report.host.hostname),
    )?;
    writeln!(w, "    <properties>")?;
    let mut props = vec![
        (
            "tool.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        (
            "fingerprint.salt".to_owned(),
            report.fingerprint_salt.to_owned(),
        ),
    ];
    props.extend(
        report
            .target
            .iter()
            .map(|(k, v)| (format!("target.{k}"), v.clone())),
    );
    for (k, v) in props {
        writeln!(
            w,
            "      <property name=\"{}\" value=\"{}\"/>",
            escape(&k),
            escape(&v)
        )?;
    }
    writeln!(w, "    </properties>")?;
    for f in &report.findings {
        let inner = if fails(f) {
            format!(
                "<failure type=\"{}\" message=\"{} ({})\">{}</failure>",
                escape(f.code),
                escape(f.title),
                f.severity.as_str(),
                body(f)
            )
        } else {
            format!(
                "<system-out>{} ({})</system-out>",
                body(f),
                f.severity.as_str()
            )
        };
        case(w, report.command, f, &inner)?;
    }
    for s in &report.suppressed {
        let inner = format!(
            "<skipped message=\"{}\"/>",
            escape(&format!(
                "accepted: {} ({})",
                s.suppression.reason, s.suppression.source
            ))
        );
        case(w, report.command, &s.finding, &inner)?;
    }
    for i in &report.incomplete {
        writeln!(
            w,
            "    <testcase classname=\"psk-guard.{}.not-checked\" name=\"{}\"><error type=\"not-checked\" message=\"{}\"/></testcase>",
            escape(report.command),
            escape(&i.check),
            escape(&i.reason)
        )?;
    }
    if report.findings.is_empty() {
        writeln!(
            w,
            "    <testcase classname=\"psk-guard.{}\" name=\"no findings\"/>",
            escape(report.command)
        )?;
    }
    writeln!(w, "  </testsuite>")?;
    writeln!(w, "</testsuites>")
}
