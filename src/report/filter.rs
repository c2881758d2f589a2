//! Accepting known findings: `--skip CODE` (repeatable) and `--ignore FILE`.
//!
//! The ignore file is YAML (documented in docs/ignore-file.md):
//!
//! ```yaml
//! ignore:
//!   - code: psk-plaintext-in-ovsdb        # required, a code of docs/findings.md
//!     subject: "n1-*"                     # optional glob (`*`, `?`) on the subject name
//!     reason: "PSK mode until the cert-mode migration (TICKET-42)"   # required
//!     expires: 2027-01-31                 # optional: last day (UTC) the entry applies
//! ```
//!
//! A matched finding moves to [`Report::suppressed`] with its reason; it no longer counts for
//! `--fail-on`, but every format lists it. An entry whose date has passed applies to nothing and
//! is itself reported (`ignore-entry-expired`, info), so an acceptance cannot outlive its review.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Code, Finding, Report, Severity, Subject, Suppressed, Suppression};

/// Largest ignore file read (it is a short list written by people).
const MAX_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("--skip {0:?}: not a finding code (see docs/findings.md)")]
    UnknownSkip(String),
    #[error("cannot read the ignore file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ignore file {path} is larger than {MAX_FILE} bytes")]
    TooLarge { path: String },
    #[error("ignore file {path} is not valid: {reason} (see docs/ignore-file.md)")]
    Parse { path: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    ignore: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    code: String,
    #[serde(default)]
    subject: Option<String>,
    reason: String,
    #[serde(default)]
    expires: Option<String>,
}

/// One validated ignore entry.
#[derive(Debug, Clone)]
pub struct Rule {
    pub code: Code,
    pub subject: Option<String>,
    pub reason: String,
    pub expires: Option<jiff::civil::Date>,
    /// `FILE#N` (N from 1).
    pub source: String,
}

/// What `--skip` and `--ignore` accept.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub skip: Vec<Code>,
    pub rules: Vec<Rule>,
    pub file: Option<PathBuf>,
}

fn code_by_id(id: &str) -> Option<Code> {
    Code::ALL.iter().copied().find(|c| c.id() == id)
}

impl Filter {
    /// Validates `--skip` codes and reads the ignore file.
    pub fn new(skip: &[String], ignore: Option<&Path>) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for s in skip {
            f.skip
                .push(code_by_id(s).ok_or_else(|| FilterError::UnknownSkip(s.clone()))?);
        }
        if let Some(path) = ignore {
            f.rules = read_rules(path)?;
            f.file = Some(path.to_owned());
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self.skip.is_empty() && self.rules.is_empty()
    }

    /// Moves the accepted findings of `report` to its suppressed list and reports expired
    /// entries. `today` is the UTC date the expiry dates are compared with.
    pub fn apply(&self, report: &mut Report, today: jiff::civil::Date) {
        let (live, expired): (Vec<&Rule>, Vec<&Rule>) = self
            .rules
            .iter()
            .partition(|r| r.expires.is_none_or(|d| d >= today));
        let findings = std::mem::take(&mut report.findings);
        for f in findings {
            match self.suppression(&f, &live) {
                Some(s) => report.suppressed.push(Suppressed {
                    finding: f,
                    suppression: s,
                }),
                None => report.findings.push(f),
            }
        }
        for r in expired {
            let mut f = Finding::new(
                Code::IgnoreEntryExpired,
                Severity::Info,
                Subject::named("ignore-entry", r.source.clone()),
            )
            .observed(format!(
                "entry for {}{} expired on {} (reason given: {})",
                r.code.id(),
                r.subject
                    .as_deref()
                    .map(|s| format!(" on {s:?}"))
                    .unwrap_or_default(),
                r.expires.map(|d| d.to_string()).unwrap_or_default(),
                r.reason
            ))
            .expected("an ignore entry reviewed before its expiry date")
            .remediation("review the accepted finding: fix it, or renew the entry's expires date")
            .detail("code", r.code.id());
            if let Some(p) = &self.file {
                f = f.located(p.display().to_string(), None);
            }
            report.push(f);
        }
        report.sort();
    }

    fn suppression(&self, f: &Finding, live: &[&Rule]) -> Option<Suppression> {
        if self.skip.iter().any(|c| c.id() == f.code) {
            return Some(Suppression {
                kind: "skip",
                reason: format!("--skip {}", f.code),
                source: "--skip".into(),
                expires: None,
            });
        }
        let r = live.iter().find(|r| {
            r.code.id() == f.code
                && r.subject.as_deref().is_none_or(|p| {
                    glob_match(p, &f.subject.name) || glob_match(p, f.stable_subject())
                })
        })?;
        Some(Suppression {
            kind: "ignore-file",
            reason: r.reason.clone(),
            source: r.source.clone(),
            expires: r.expires.map(|d| d.to_string()),
        })
    }
}

fn read_rules(path: &Path) -> Result<Vec<Rule>, FilterError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let read_err = |source| FilterError::Read {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_FILE {
        return Err(FilterError::TooLarge { path: shown });
    }
    let parse = |reason: String| FilterError::Parse {
        path: shown.clone(),
        reason,
    };
    let file: File = serde_yaml::from_str(&text).map_err(|e| parse(e.to_string()))?;
    let mut rules = vec![];
    for (i, e) in file.ignore.into_iter().enumerate() {
        let n = i + 1;
        let code = code_by_id(&e.code)
            .ok_or_else(|| parse(format!("entry {n}: unknown code {:?}", e.code)))?;
        if e.reason.trim().is_empty() {
            return Err(parse(format!("entry {n}: reason is empty")));
        }
        let expires = match &e.expires {
            None => None,
            Some(d) => Some(d.parse::<jiff::civil::Date>().map_err(|_| {
                parse(format!(
                    "entry {n}: expires {d:?} is not a date (YYYY-MM-DD)"
                ))
            })?),
        };
        rules.push(Rule {
            code,
            subject: e.subject,
            reason: e.reason,
            expires,
            source: format!("{shown}#{n}"),
        });
    }
    Ok(rules)
}

/// Shell-style glob on whole strings: `*` any run of characters, `?` one character.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = s.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SaltOrigin;

    #[test]
    fn globs() {
        assert!(glob_match("n1-*", "n1-abc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match(
            "*/conf.db",
            "/var/run/antrea/openvswitch/conf.db"
        ));
        assert!(!glob_match("*/conf.db", "/x/.conf.db.~lock~"));
    }

    fn report() -> Report {
        let mut r = Report::new("check", SaltOrigin::Given);
        r.push(Finding::new(
            Code::PskTooShort,
            Severity::High,
            Subject::interface("n1-a"),
        ));
        r.push(Finding::new(
            Code::PskTooShort,
            Severity::High,
            Subject::interface("n2-b"),
        ));
        r.push(Finding::new(
            Code::ConfDbModeTooOpen,
            Severity::High,
            Subject::named("path", "/x/conf.db"),
        ));
        r
    }

    #[test]
    fn skip_and_ignore_move_findings_to_suppressed_and_expired_entries_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ignore.yaml");
        std::fs::write(
            &p,
            "ignore:\n  - code: psk-too-short\n    subject: 'n1-*'\n    reason: accepted\n    expires: 2030-01-01\n  - code: conf-db-mode-too-open\n    reason: old\n    expires: 2020-01-01\n",
        )
        .unwrap();
        let f = Filter::new(&[], Some(&p)).unwrap();
        let mut r = report();
        f.apply(&mut r, jiff::civil::date(2026, 11, 27));
        assert_eq!(r.suppressed.len(), 1);
        assert_eq!(r.suppressed[0].finding.subject.name, "n1-a");
        assert_eq!(r.suppressed[0].suppression.reason, "accepted");
        assert!(r.findings.iter().any(|f| f.code == "conf-db-mode-too-open"));
        assert!(r.findings.iter().any(|f| f.code == "ignore-entry-expired"));
        // the last day still applies
        let mut r = report();
        f.apply(&mut r, jiff::civil::date(2030, 1, 1));
        assert_eq!(r.suppressed.len(), 1);
        let f = Filter::new(&["psk-too-short".into()], None).unwrap();
        let mut r = report();
        f.apply(&mut r, jiff::civil::date(2026, 11, 27));
        assert_eq!(r.suppressed.len(), 2);
        assert_eq!(r.exit_status(super::super::FailOn::High), 1);
        assert!(Filter::new(&["nope".into()], None).is_err());
    }

    #[test]
    fn bad_ignore_files_are_refused_with_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.yaml");
        for (text, want) in [
            (
                "ignore:\n  - code: nope\n    reason: x\n",
                "entry 1: unknown code",
            ),
            (
                "ignore:\n  - code: psk-too-short\n    reason: ''\n",
                "reason is empty",
            ),
            (
                "ignore:\n  - code: psk-too-short\n    reason: x\n    expires: soon\n",
                "not a date",
            ),
            (
                "ignore:\n  - code: psk-too-short\n    reasn: x\n",
                "unknown field",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Filter::new(&[], Some(&p)).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains("i.yaml"), "{e}");
        }
    }
}
