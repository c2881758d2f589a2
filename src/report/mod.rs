//! One result model for every command, printed as text, JSON or SARIF.
//!
//! A [`Finding`] has a stable kebab-case [`Code`] (the catalog below is the single source of the
//! codes, their titles and their help text, which `docs/findings.md` and SARIF rules reflect), a
//! [`Severity`], a subject, what was observed, what was expected and what to do. What could not be
//! checked is recorded in [`Report::incomplete`] and is never a silent pass. No field ever holds a
//! key: keys appear only as fingerprints.

pub mod json;
pub mod sarif;
pub mod text;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;

use crate::secret::SaltOrigin;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Info,
    ];
}

/// The threshold of `--fail-on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    Info,
    Low,
    Medium,
    High,
    Critical,
    /// Never exit 1 for findings.
    Never,
}

impl FailOn {
    fn threshold(self) -> Option<Severity> {
        match self {
            FailOn::Info => Some(Severity::Info),
            FailOn::Low => Some(Severity::Low),
            FailOn::Medium => Some(Severity::Medium),
            FailOn::High => Some(Severity::High),
            FailOn::Critical => Some(Severity::Critical),
            FailOn::Never => None,
        }
    }
}

macro_rules! codes {
    ($( $variant:ident => $id:literal, $title:literal, $help:literal; )*) => {
        /// Stable finding codes. Never rename one: tools downstream match on them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $( $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];
            pub fn id(self) -> &'static str { match self { $( Code::$variant => $id, )* } }
            pub fn title(self) -> &'static str { match self { $( Code::$variant => $title, )* } }
            pub fn help(self) -> &'static str { match self { $( Code::$variant => $help, )* } }
        }
    };
}

codes! {
    PskPlaintextInOvsdb => "psk-plaintext-in-ovsdb", "Plaintext IPsec PSK in OVSDB",
        "An IPsec tunnel interface carries the pre-shared key in plaintext in options:psk. Anyone who can read conf.db or connect to db.sock can read it and impersonate any node. Critical when the file, socket or directory lets non-root users reach it; medium otherwise (the key is still one file read away from a node compromise). The lasting fix is Antrea's certificate mode.";
    PskDefaultKey => "psk-default-key", "Default IPsec PSK in use",
        "The key equals a well-known default or example value, such as the one Antrea's Helm chart and sample manifest ship. Anyone who has read the manifests knows it.";
    PskTooShort => "psk-too-short", "IPsec PSK too short",
        "The key is shorter than 16 bytes, within reach of offline guessing against captured IKE exchanges.";
    PskLowEntropy => "psk-low-entropy", "IPsec PSK has low entropy",
        "The key's estimated entropy is under 64 bits (repeated or few distinct characters).";
    PskMixedKeys => "psk-mixed-keys", "Tunnels use different PSKs",
        "The IPsec tunnels of this node do not all carry the same key: a rotation is half finished or a node restarted with another Secret value. IKE between nodes with different keys fails.";
    PskUnexpectedFingerprint => "psk-unexpected-fingerprint", "Tunnel key differs from the expected one",
        "With --expect-fingerprint: a tunnel's key does not have the expected fingerprint, so this node has not converged on the key being rolled out.";
    PskHistoryOnDisk => "psk-history-on-disk", "Old PSKs remain in conf.db",
        "conf.db is an append-only log: a key that is no longer in use is still readable in the file until ovsdb-server compacts it. Anyone who obtains the file (backup, disk image, read access) learns old keys and can decrypt traffic captured while they were in use.";
    IpsecCertMode => "ipsec-cert-mode", "IPsec uses certificate authentication",
        "Tunnels authenticate with certificates (remote_name) and carry no PSK: the recommended state.";
    NoIpsecTunnels => "no-ipsec-tunnels", "No IPsec tunnel interfaces",
        "No interface carries a PSK or is marked as an Antrea IPsec tunnel. IPsec may be off, or this node has no peers yet.";
    RunDirModeTooOpen => "run-dir-mode-too-open", "/var/run/antrea is too open",
        "Antrea (since v0.13) makes its run directory 0750. Looser modes let other users reach conf.db and the OVSDB sockets.";
    RunDirOwnerNotRoot => "run-dir-owner-not-root", "/var/run/antrea is not owned by root",
        "A non-root owner of the run directory can change its mode and replace what is in it.";
    OvsDirModeTooOpen => "ovs-dir-mode-too-open", "openvswitch directory is writable by others",
        "A group- or world-writable openvswitch directory lets others replace db.sock or conf.db.";
    ConfDbModeTooOpen => "conf-db-mode-too-open", "conf.db is too open",
        "Antrea (since v0.10) and Open vSwitch (since 2.15) keep conf.db at 0640 or stricter. A looser mode lets other users read every key the file holds.";
    ConfDbOwnerNotRoot => "conf-db-owner-not-root", "conf.db is not owned by root",
        "A non-root owner of conf.db can read it and change its mode.";
    DbSockModeTooOpen => "db-sock-mode-too-open", "db.sock accepts connections from everyone",
        "Whoever can connect to db.sock can read and write the whole OVSDB, keys included. A read-only hostPath mount does not prevent connect().";
    CtlSockModeTooOpen => "ctl-sock-mode-too-open", "An ovsdb-server control socket accepts everyone",
        "The unixctl sockets (*.ctl) control ovsdb-server (logging of full requests, compaction, exit).";
    LockFileModeTooOpen => "lock-file-mode-too-open", "conf.db lock file is writable by others",
        ".conf.db.~lock~ writable by others lets them interfere with ovsdb-server's locking.";
    PathAbsent => "path-absent", "Expected path is absent",
        "A path that an Antrea IPsec node has was not found, so nothing about it could be checked. Check --run-dir and --db.";
    PathUnreadable => "path-unreadable", "Path could not be inspected",
        "psk-guard could not inspect a path (permission denied or another error), so it could not be checked. Run as root.";
    OvsdbUnreachable => "ovsdb-unreachable", "OVSDB could not be queried",
        "psk-guard could not query ovsdb-server, so the tunnel keys were not checked. File checks still ran.";
    ConfDbLogDamaged => "conf-db-log-damaged", "conf.db log is truncated or corrupt",
        "Reading conf.db's log stopped at a record that is truncated or fails its SHA-1 check. Records before it were scanned; anything after it was not.";
    IpsecAuthPsk => "ipsec-auth-psk", "IPsec uses pre-shared key authentication",
        "antrea-agent.conf selects PSK authentication for IPsec (the default), so every node stores the cluster-wide key in plaintext in OVSDB. Antrea (v1.7+, feature gate IPsecCertAuth) supports certificate authentication with automatic rotation: set ipsec.authenticationMode: cert.";
    GatekeeperPolicyMissing => "gatekeeper-policy-missing", "Gatekeeper policy for antrea-agent status updates is missing",
        "Antrea's security guide mitigates the agent's ability to patch pods/status and nodes/status with a Gatekeeper ConstraintTemplate antreaagentstatusupdates and a Constraint of kind AntreaAgentStatusUpdates matching Pods and Nodes, so that a compromised agent can change only annotations.";
    GatekeeperWebhookSkipsSubresources => "gatekeeper-webhook-skips-subresources", "Gatekeeper's webhook does not see status updates",
        "Gatekeeper's ValidatingWebhookConfiguration must have a rule covering subresources (resources: ['*/*']); with only ['*'] requests to pods/status and nodes/status never reach Gatekeeper and the AntreaAgentStatusUpdates policy silently does not apply.";
    AgentCanPatchStatus => "agent-can-patch-status", "antrea-agent may patch pods/status and nodes/status",
        "The antrea-agent ClusterRole grants patch on pods/status or nodes/status (Antrea needs it). A compromised agent can use it to change other workloads' status; the Gatekeeper policy of Antrea's security guide limits it to annotations.";
    ControllerNotOnSecureNode => "controller-not-on-secure-node", "antrea-controller does not run on a secure Node",
        "Antrea's security guide recommends running antrea-controller on a control-plane Node (or another Node kept secure), because it holds the cluster's network policy and, in certificate mode, signs IPsec certificates.";
    HostpathExposesAntrea => "hostpath-exposes-antrea", "A Pod mounts a host path that reaches /var/run/antrea",
        "A Pod outside Antrea's own mounts /var/run/antrea or a parent of it (/var/run, /run, /var, /) from the host, so it can read conf.db (the PSK) and connect to db.sock. Multi-tenant clusters should forbid hostPath (Pod Security baseline or restricted, or a Gatekeeper policy).";
    NamespaceAllowsHostpath => "namespace-allows-hostpath", "A namespace's Pod Security level allows hostPath",
        "The namespace is not labelled pod-security.kubernetes.io/enforce=baseline or restricted, so Pods in it may mount host paths such as /var/run/antrea.";
    SecretReadableBy => "secret-readable-by", "Someone else can read the antrea-ipsec Secret",
        "An RBAC binding grants get, list or watch on Secrets in Antrea's namespace (or on antrea-ipsec by name), so its subject can read the IPsec PSK. Review each subject; grant secret access by resourceNames only where needed.";
    NodeNotChecked => "node-not-checked", "A node could not be checked",
        "audit --nodes could not run psk-guard check on this node (NotReady, the Job failed or timed out). Nothing about its keys or modes is known: it is not a pass.";
}

/// What a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// `path`, `interface`, `key`, `ovsdb`, `file`.
    pub kind: &'static str,
    pub name: String,
}

impl Subject {
    pub fn path(p: &std::path::Path) -> Self {
        Subject {
            kind: "path",
            name: p.display().to_string(),
        }
    }
    pub fn interface(name: &str) -> Self {
        Subject {
            kind: "interface",
            name: name.to_owned(),
        }
    }
    pub fn key(fp: &crate::secret::Fingerprint) -> Self {
        Subject {
            kind: "key",
            name: fp.to_string(),
        }
    }
    pub fn named(kind: &'static str, name: impl Into<String>) -> Self {
        Subject {
            kind,
            name: name.into(),
        }
    }
    pub fn ovsdb(target: &str) -> Self {
        Subject {
            kind: "ovsdb",
            name: target.to_owned(),
        }
    }
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub subject: Subject,
    pub observed: String,
    pub expected: Cow<'static, str>,
    pub remediation: Cow<'static, str>,
    /// Extra facts (peer node, remote IP, fingerprints, counts); never key bytes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
    #[serde(skip)]
    pub code_enum: Option<Code>,
}

impl Finding {
    pub fn new(code: Code, severity: Severity, subject: Subject) -> Self {
        Finding {
            code: code.id(),
            severity,
            title: code.title(),
            subject,
            observed: String::new(),
            expected: Cow::Borrowed(""),
            remediation: Cow::Borrowed(""),
            details: BTreeMap::new(),
            code_enum: Some(code),
        }
    }
    pub fn observed(mut self, s: impl Into<String>) -> Self {
        self.observed = s.into();
        self
    }
    pub fn expected(mut self, s: impl Into<Cow<'static, str>>) -> Self {
        self.expected = s.into();
        self
    }
    pub fn remediation(mut self, s: impl Into<Cow<'static, str>>) -> Self {
        self.remediation = s.into();
        self
    }
    pub fn detail(mut self, k: &str, v: impl Into<serde_json::Value>) -> Self {
        self.details.insert(k.to_owned(), v.into());
        self
    }
}

/// A part of the job that could not be done, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Incomplete {
    pub check: String,
    pub reason: String,
}

/// The result of one command.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: &'static str,
    /// What was examined (`db`, `run_dir`, `conf_db`, ...).
    pub target: BTreeMap<String, String>,
    pub fingerprint_salt: &'static str,
    pub findings: Vec<Finding>,
    pub incomplete: Vec<Incomplete>,
    /// Command-specific results (for `scan-db`, the keys found).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Report {
    pub fn new(command: &'static str, salt: SaltOrigin) -> Self {
        Report {
            command,
            target: BTreeMap::new(),
            fingerprint_salt: salt.as_str(),
            findings: vec![],
            incomplete: vec![],
            data: None,
        }
    }

    pub fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    pub fn not_checked(&mut self, check: impl Into<String>, reason: impl Into<String>) {
        self.incomplete.push(Incomplete {
            check: check.into(),
            reason: reason.into(),
        });
    }

    /// Puts findings in their stable order: most severe first, then code, then subject.
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.code.cmp(b.code))
                .then_with(|| a.subject.name.cmp(&b.subject.name))
        });
    }

    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// The documented exit code: 1 when a finding is at or above the threshold; otherwise 2 when a
    /// part of the job could not be done (a check that did not run is never a pass); otherwise 0.
    pub fn exit_code(&self, fail_on: FailOn) -> ExitCode {
        ExitCode::from(self.exit_status(fail_on))
    }

    pub fn exit_status(&self, fail_on: FailOn) -> u8 {
        let failed = match (fail_on.threshold(), self.worst()) {
            (Some(t), Some(w)) => w >= t,
            _ => false,
        };
        if failed {
            EXIT_FINDINGS
        } else if !self.incomplete.is_empty() {
            EXIT_ERROR
        } else {
            EXIT_OK
        }
    }
}

/// Exit codes, documented in `--help` and the README.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Sarif,
}

/// Renders a report in `format`. `color` applies to text only.
pub fn render(report: &Report, format: Format, color: bool) -> String {
    match format {
        Format::Text => text::render(report, color),
        Format::Json => json::render(report),
        Format::Sarif => sarif::render(report),
    }
}

/// Writes a report in `format` to `w` (JSON is streamed, not built in memory first).
pub fn write(
    report: &Report,
    format: Format,
    color: bool,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    match format {
        Format::Json => json::write(report, w),
        _ => w.write_all(render(report, format, color).as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.id()), "duplicate code {}", c.id());
            assert!(c
                .id()
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'));
        }
    }

    #[test]
    fn exit_codes() {
        let mut r = Report::new("check", SaltOrigin::Given);
        assert_eq!(r.exit_status(FailOn::High), 0);
        r.push(Finding::new(
            Code::PskTooShort,
            Severity::Medium,
            Subject::ovsdb("x"),
        ));
        assert_eq!(r.exit_status(FailOn::High), 0);
        assert_eq!(r.exit_status(FailOn::Medium), 1);
        assert_eq!(r.exit_status(FailOn::Never), 0);
        r.not_checked("ovsdb", "down");
        assert_eq!(r.exit_status(FailOn::High), 2);
        assert_eq!(r.exit_status(FailOn::Medium), 1);
    }
}
