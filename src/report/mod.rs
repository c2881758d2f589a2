//! One result model for every command, printed as text, JSON, SARIF, JUnit XML or Prometheus text.
//!
//! A [`Finding`] has a stable kebab-case [`Code`] (the catalog below is the single source of the
//! codes, their titles and their help text, which `docs/findings.md` and SARIF rules reflect), a
//! [`Severity`], a subject, what was observed, what was expected and what to do. What could not be
//! checked is recorded in [`Report::incomplete`] and is never a silent pass. No field ever holds a
//! key: keys appear only as fingerprints.
//!
//! # Layout
//! - this file: the catalog, [`Finding`], [`Report`] and its [`Header`] (schema and tool version,
//!   time, host), and [`write`], the one way a report leaves the process.
//! - [`filter`]: `--skip CODE` and `--ignore FILE`; accepted findings move to
//!   [`Report::suppressed`] with their reason, they are never dropped silently.
//! - one module per format. Each writer walks the findings as an iterator and serializes them
//!   straight to the output (no JSON tree per finding).

pub mod filter;
pub mod json;
pub mod junit;
pub mod prometheus;
pub mod sanitize;
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
    schemars::JsonSchema,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FailOn {
    Info,
    Low,
    Medium,
    #[default]
    High,
    Critical,
    /// Never exit 1 for findings.
    Never,
}

impl FailOn {
    pub fn threshold(self) -> Option<Severity> {
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
        "The antrea-agent ClusterRole grants patch or update on pods/status or nodes/status (Antrea needs patch). A compromised agent can use it to change other workloads' status; the Gatekeeper policy of Antrea's security guide limits it to annotations.";
    ControllerNotOnSecureNode => "controller-not-on-secure-node", "antrea-controller does not run on a secure Node",
        "Antrea's security guide recommends running antrea-controller on a control-plane Node (or another Node kept secure), because it holds the cluster's network policy and, in certificate mode, signs IPsec certificates.";
    HostpathExposesAntrea => "hostpath-exposes-antrea", "A Pod mounts a host path that reaches /var/run/antrea",
        "A Pod, a workload's Pod template or a hostPath/local PersistentVolume outside Antrea's own mounts /var/run/antrea or a parent of it (/var/run, /run, /var, /; compared after normalizing //, . and ..) from the host, so it can read conf.db (the PSK) and connect to db.sock. Only objects owned by Antrea's DaemonSet or Deployment count as Antrea's own. Multi-tenant clusters should forbid hostPath (Pod Security baseline or restricted, or a Gatekeeper policy).";
    NamespaceAllowsHostpath => "namespace-allows-hostpath", "A namespace's Pod Security level allows hostPath",
        "The namespace is not labelled pod-security.kubernetes.io/enforce=baseline or restricted, so Pods in it may mount host paths such as /var/run/antrea.";
    SecretReadableBy => "secret-readable-by", "Someone else can read the antrea-ipsec Secret",
        "An RBAC binding grants get, list or watch on Secrets in Antrea's namespace (or on antrea-ipsec by name), so its subject can read the IPsec PSK. Review each subject; grant secret access by resourceNames only where needed.";
    NodeNotChecked => "node-not-checked", "A node could not be checked",
        "audit --nodes could not run psk-guard check on this node: NotReady; the Job's pod refused by Pod Security admission (the Job namespace's level is not privileged) or by another admission policy; a host path the Job mounts missing on the node (/var/log/antrea where antrea-agent never ran: rerun with --no-logs); or the Job failed or timed out. The cause is read from the Job's Events as soon as they show it, and named with what to do. Nothing about the node's keys or modes is known: it is not a pass.";
    IgnoreEntryExpired => "ignore-entry-expired", "An entry of the ignore file has expired",
        "An entry of the --ignore file has an expiry date that has passed, so it no longer suppresses anything: the findings it matched are reported again. Review the acceptance; renew the date or remove the entry.";
    GatekeeperPolicyNotEnforced => "gatekeeper-policy-not-enforced", "Gatekeeper's policy for antrea-agent status updates does not enforce",
        "The AntreaAgentStatusUpdates policy exists but does not stop a compromised agent: the Constraint's enforcementAction is dryrun or warn (violations are only recorded), Gatekeeper's webhook has failurePolicy Ignore (it fails open when Gatekeeper is unavailable), no webhook sends requests to Gatekeeper, or kube-system (or Antrea's namespace) is exempted by Gatekeeper's Config, the webhook's namespaceSelector or the Constraint's match.";
    KeyReachableViaRbac => "key-reachable-via-rbac", "Someone else can obtain the IPsec PSK through RBAC",
        "An RBAC subject cannot read the antrea-ipsec Secret directly but can obtain the key another way: create a Pod or any workload in Antrea's namespace (mounting the Secret or taking it as env), exec, attach or add an ephemeral container to the agent (printenv ANTREA_IPSEC_PSK), nodes/proxy (exec through the kubelet), patch the agent DaemonSet, impersonate users or groups (any, or by resourceNames system:masters or a user or group that has a path), escalate or bind roles, or get a token for, run a Pod as, or impersonate a service account that can. The finding lists every path with its verbs and bindings.";
    OvsDirOwnerNotRoot => "ovs-dir-owner-not-root", "openvswitch directory is not owned by root",
        "A non-root owner of the openvswitch directory can change its mode and replace conf.db, db.sock, the pidfile and the control sockets in it.";
    PathChainNotRootControlled => "path-chain-not-root-controlled", "A directory above the node's Antrea paths is controlled by a non-root user",
        "A directory on the way from / to conf.db, db.sock, the run directory, the log directory or the certificate directory is owned by a non-root user or writable by one (mode bits or POSIX ACL; a root-owned sticky directory is fine for entries root owns). That user can swap what lies below it for links or other files between any check and action, so psk-guard fix refuses to change anything below it.";
    PathIsSymlink => "path-is-symlink", "A node path is a symbolic link",
        "conf.db, db.sock, the run directory or another path Antrea and ovsdb-server create is a symbolic link (or is reached through a link a non-root user controls). They never create links there: someone replaced it. psk-guard reports the link itself, never follows it and never changes what it points to.";
    PathWrongType => "path-wrong-type", "A node path is not the kind of file it should be",
        "A path is a FIFO, device, directory or other kind of file where Antrea or ovsdb-server create a regular file, directory or socket. psk-guard does not read from it or change it.";
    HostpathExposesRuntimeState => "hostpath-exposes-runtime-state", "A workload mounts the container runtime's state",
        "A Pod, a workload's Pod template or a PersistentVolume outside Antrea's own reaches the container runtime's state on the node (/run/containerd, /var/run/crio, /var/lib/containerd, /var/lib/docker, a runtime socket, /var/lib/kubelet/pods, or a parent of them). That state holds every container's configuration, the agent's environment with ANTREA_IPSEC_PSK included, and the runtime socket can exec into the agent.";
    PodPrivilegedOrHostpid => "pod-privileged-or-hostpid", "A workload runs privileged or in the host's PID namespace",
        "A Pod or a workload's Pod template outside Antrea's own runs a privileged container or sets hostPID, so it can read the agent's environment (/proc/<pid>/environ holds ANTREA_IPSEC_PSK) and the node's files, conf.db included. Multi-tenant clusters should forbid both (Pod Security baseline).";
    IpsecTunnelUnencrypted => "ipsec-tunnel-unencrypted", "An IPsec tunnel carries neither a PSK nor a certificate peer",
        "A tunnel port that Antrea marks as IPsec (external_ids:antrea-type=ipsec-tunnel) has an interface with neither options:psk nor options:remote_name, so ovs-monitor-ipsec sets up no IPsec for it and traffic to that peer leaves the node unencrypted. Antrea never creates such a port: someone with write access to OVSDB stripped it.";
    IpsecTunnelTypeMismatch => "ipsec-tunnel-type-mismatch", "An IPsec tunnel's type differs from its peers'",
        "Antrea creates every tunnel of a node with the cluster's one tunnel type (geneve, gre, vxlan or stt). A marked IPsec port whose interface has another type, or no tunnel type at all, was changed in OVSDB, and traffic to that peer may bypass IPsec.";
    OvsdbNetworkRemote => "ovsdb-network-remote", "OVSDB is reachable over the network",
        "ovsdb-server serves a ptcp:, pssl:, tcp: or ssl: remote: listed by ovsdb-server itself over its control socket (ovsdb-server/list-remotes: its --remote options and remotes added at run time; no /proc needed, so audit --nodes and check --no-proc see it), on its command line (/proc), or in a Manager row (served through a db: remote such as ovs-ctl's --remote=db:Open_vSwitch,Open_vSwitch,manager_options). Whoever can connect reads and writes the whole database, the PSK included, without the unix socket's permissions. One finding per remote; details.sources names every source that saw it. Critical; high for a Manager row that the running ovsdb-server does not serve (it will after a restart with ovs-ctl's default options).";
    CertKeyTooOpen => "cert-key-too-open", "An IPsec private key is readable by others",
        "In certificate mode the node's private key (*.key in the run or certificate directory) is the secret. Antrea writes it 0600; a looser mode than 0640 is high, and critical when a non-root user can actually read it through the directory chain.";
    CertKeyOwnerNotRoot => "cert-key-owner-not-root", "An IPsec private key is not owned by root",
        "A non-root owner of the node's IPsec private key can read it and change its mode.";
    PskInLogFile => "psk-in-log-file", "A log file holds an IPsec key",
        "A file in the log directory holds a key this node knows of (in use now, or old from conf.db's history), raw or JSON-escaped, plain or gzip-compressed. antrea-agent logs the PSK at verbosity 4 and above; ovsdb-server with jsonrpc debug logging logs every request. Log files are often readable more widely than conf.db and are shipped off the node. High; critical when a non-root user can read the file.";
    OvsdbServerUntrusted => "ovsdb-server-untrusted", "The OVSDB socket is not verifiably root's ovsdb-server",
        "db.sock is not a root-owned socket reached without links under directories only root controls, or the process listening on it does not run as root (SO_PEERCRED). ovsdb-server runs as root in antrea-agent's pod: anything else may be a listener a non-root user planted, which would see whatever psk-guard sends (push-key sends the key) and could answer with made-up rows. psk-guard sends nothing to it and did not check the tunnel keys.";
}

/// What a finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Subject {
    /// `path`, `interface`, `key`, `ovsdb`, `node`, `node-path`, `ignore-entry`, or a Kubernetes
    /// kind in lower case (`pod`, `clusterrole`, `namespace`, `secret`, ...).
    #[schemars(with = "String")]
    pub kind: &'static str,
    pub name: String,
}

/// Every constructor bounds and escapes the name ([`sanitize`]): names come from OVSDB, conf.db,
/// the node's file system and the Kubernetes API.
impl Subject {
    pub fn path(p: &std::path::Path) -> Self {
        Subject {
            kind: "path",
            name: sanitize::name(&p.display().to_string()),
        }
    }
    pub fn interface(name: &str) -> Self {
        Subject {
            kind: "interface",
            name: sanitize::name(name),
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
            name: sanitize::name(&name.into()),
        }
    }
    pub fn ovsdb(target: &str) -> Self {
        Subject {
            kind: "ovsdb",
            name: sanitize::name(target),
        }
    }
}

/// The file a finding lives in (for a key or an interface: conf.db; for a server: its socket),
/// with the byte where it starts when that is known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Location {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
    /// The length of the part (a conf.db record) that starts at `byte_offset`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_length: Option<u64>,
}

/// One finding.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Finding {
    /// Stable kebab-case code, see docs/findings.md.
    #[schemars(with = "String")]
    pub code: &'static str,
    pub severity: Severity,
    #[schemars(with = "String")]
    pub title: &'static str,
    pub subject: Subject,
    /// A name of the subject that does not change between runs and salts (for a key: the
    /// interfaces that carry it), when `subject.name` does (a key's salted fingerprint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_name: Option<String>,
    /// The file the finding lives in, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    pub observed: String,
    #[schemars(with = "String")]
    pub expected: Cow<'static, str>,
    #[schemars(with = "String")]
    pub remediation: Cow<'static, str>,
    /// Extra facts (peer node, remote IP, fingerprints, counts, the tunnels sharing a key); never
    /// key bytes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub details: BTreeMap<String, Detail>,
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
            stable_name: None,
            location: None,
            observed: String::new(),
            expected: Cow::Borrowed(""),
            remediation: Cow::Borrowed(""),
            details: BTreeMap::new(),
            code_enum: Some(code),
        }
    }
    // Text that enters a finding is bounded and escaped here ([`sanitize`]): it can quote
    // OVSDB rows, conf.db, server errors and API objects.
    pub fn observed(mut self, s: impl Into<String>) -> Self {
        self.observed = sanitize::text_owned(s.into());
        self
    }
    pub fn expected(mut self, s: impl Into<Cow<'static, str>>) -> Self {
        self.expected = sanitize_cow(s.into());
        self
    }
    pub fn remediation(mut self, s: impl Into<Cow<'static, str>>) -> Self {
        self.remediation = sanitize_cow(s.into());
        self
    }
    pub fn detail(mut self, k: &str, v: impl Into<serde_json::Value>) -> Self {
        self.details
            .insert(sanitize::name(k), Detail::Json(sanitize::json(v.into())));
        self
    }
    /// A detail that is a long list, made item by item as the report is written (see
    /// [`DetailList`]).
    pub fn detail_list(mut self, k: &str, list: std::sync::Arc<dyn DetailList>) -> Self {
        self.details.insert(sanitize::name(k), Detail::List(list));
        self
    }
    /// Names the subject in a way that survives a new salt (see [`Finding::stable_name`]).
    pub fn stable_name(mut self, s: impl Into<String>) -> Self {
        self.stable_name = Some(sanitize::text_owned(s.into()));
        self
    }
    /// The file the finding lives in.
    pub fn located(mut self, path: impl Into<String>, byte_offset: Option<u64>) -> Self {
        self.location = Some(Location {
            path: sanitize::name(&path.into()),
            byte_offset,
            byte_length: None,
        });
        self
    }
    /// The file the finding lives in and the part of it (offset, length), e.g. a conf.db record.
    pub fn located_span(mut self, path: impl Into<String>, span: Option<(u64, u64)>) -> Self {
        self.location = Some(Location {
            path: sanitize::name(&path.into()),
            byte_offset: span.map(|s| s.0),
            byte_length: span.map(|s| s.1),
        });
        self
    }
    /// The subject's name that does not change between runs.
    pub fn stable_subject(&self) -> &str {
        self.stable_name.as_deref().unwrap_or(&self.subject.name)
    }
    /// An identity of the finding that is the same across runs and salts: SHA-256 of the code,
    /// the subject kind and the stable subject name (never of a key or a salted fingerprint),
    /// 16 hex digits. SARIF's `partialFingerprints` and JSON's `id`.
    pub fn id(&self) -> String {
        self.id_with(self.stable_subject())
    }

    fn id_with(&self, stable: &str) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [self.code, self.subject.kind, stable] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// A list detail kept in the producer's own compact form (for `check`: the tunnels sharing a
/// key, 10,000 on a large node) and turned into JSON one item at a time while the report is
/// written, so no JSON tree of the whole list is ever held. Several findings can share one list.
pub trait DetailList: std::fmt::Debug + Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Item `i` as JSON (`i < len()`); every string in it is made safe on the way out.
    fn item(&self, i: usize) -> serde_json::Value;
}

/// A value of [`Finding::details`].
#[derive(Clone, Debug)]
pub enum Detail {
    Json(serde_json::Value),
    List(std::sync::Arc<dyn DetailList>),
}

impl Detail {
    /// The list of a JSON array detail, to extend it.
    pub fn as_array_mut(&mut self) -> Option<&mut Vec<serde_json::Value>> {
        match self {
            Detail::Json(v) => v.as_array_mut(),
            Detail::List(_) => None,
        }
    }
    /// The detail as a JSON tree (tests, and callers that inspect details).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Detail::Json(v) => v.clone(),
            Detail::List(l) => (0..l.len()).map(|i| sanitize::json(l.item(i))).collect(),
        }
    }
}

impl Serialize for Detail {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Detail::Json(v) => v.serialize(s),
            Detail::List(l) => s.collect_seq((0..l.len()).map(|i| sanitize::json(l.item(i)))),
        }
    }
}

/// Our own static texts pass unchanged; owned ones may quote outside input.
fn sanitize_cow(s: Cow<'static, str>) -> Cow<'static, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(b),
        Cow::Owned(o) => Cow::Owned(sanitize::text_owned(o)),
    }
}

/// A part of the job that could not be done, and why.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Incomplete {
    pub check: String,
    pub reason: String,
}

impl Incomplete {
    /// Both texts bounded and escaped (a reason can quote a server's error).
    pub fn new(check: impl Into<String>, reason: impl Into<String>) -> Self {
        Incomplete {
            check: sanitize::text_owned(check.into()),
            reason: sanitize::text_owned(reason.into()),
        }
    }
}

/// What a report examined (`db`, `run_dir`, `conf_db`, ...): a map whose `insert` bounds and
/// escapes the value (a `--db` target or a path can hold anything); read it as a `BTreeMap`.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Target(BTreeMap<String, String>);

impl Target {
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.0.insert(key, sanitize::name(&value))
    }
}

impl std::ops::Deref for Target {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Why a finding is not counted: `--skip` or an entry of the ignore file.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Suppression {
    /// `skip` (the --skip flag) or `ignore-file`.
    #[schemars(with = "String")]
    pub kind: &'static str,
    pub reason: String,
    /// The ignore file and entry (`FILE#N`, N from 1), or `--skip`.
    pub source: String,
    /// Last day (YYYY-MM-DD, UTC) the entry applies, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A finding accepted by `--skip` or `--ignore`: listed, not counted, never silently dropped.
#[derive(Clone, Debug, schemars::JsonSchema)]
pub struct Suppressed {
    pub finding: Finding,
    pub suppression: Suppression,
}

/// Where the report was made: the host name and, in a Kubernetes Job, the node (`NODE_NAME`).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Host {
    pub hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What every report starts with, so that reports from many nodes can be merged on their own.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Header {
    /// Always `psk-guard-report`.
    #[schemars(with = "String")]
    pub schema: &'static str,
    pub schema_version: u32,
    pub tool: Tool,
    /// `check`, `scan-db`, `fix`, `audit` or `rotate`.
    #[schemars(with = "String")]
    pub command: &'static str,
    /// When the report was made, RFC 3339 in UTC (`2026-11-27T10:20:21Z`).
    pub generated_at: String,
    pub host: Host,
    /// What was examined (`db`, `run_dir`, `conf_db`, `namespace`, ...).
    pub target: BTreeMap<String, String>,
    pub fingerprint: FingerprintInfo,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Tool {
    #[schemars(with = "String")]
    pub name: &'static str,
    #[schemars(with = "String")]
    pub version: &'static str,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct FingerprintInfo {
    /// `hmac-sha256-truncated-64`.
    #[schemars(with = "String")]
    pub algorithm: &'static str,
    /// `random-per-run` or `given` (the salt itself is never printed).
    #[schemars(with = "String")]
    pub salt: &'static str,
}

/// The version of the JSON report's shape (`docs/report.schema.json`).
pub const SCHEMA_VERSION: u32 = 2;

/// Now, RFC 3339 in UTC to the second.
pub fn now_rfc3339() -> String {
    now().to_string()
}

/// Now, to the second.
pub fn now() -> jiff::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// Today's date in UTC (what ignore-file expiry dates are compared with).
pub fn today_utc() -> jiff::civil::Date {
    jiff::tz::Offset::UTC.to_datetime(now()).date()
}

/// Milliseconds since the epoch as RFC 3339 in UTC (`None` when out of range).
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

fn this_host() -> Host {
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let node = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty());
    Host { hostname, node }
}

/// The result of one command.
#[derive(Debug)]
pub struct Report {
    pub command: &'static str,
    /// What was examined (`db`, `run_dir`, `conf_db`, ...).
    pub target: Target,
    pub fingerprint_salt: &'static str,
    pub generated_at: String,
    pub host: Host,
    pub findings: Vec<Finding>,
    /// Findings accepted by `--skip` or `--ignore`: reported with their reason, not counted.
    pub suppressed: Vec<Suppressed>,
    pub incomplete: Vec<Incomplete>,
    /// Command-specific results (for `scan-db`, the keys found).
    pub data: Option<serde_json::Value>,
}

impl Report {
    pub fn new(command: &'static str, salt: SaltOrigin) -> Self {
        Report {
            command,
            target: Target::default(),
            fingerprint_salt: salt.as_str(),
            generated_at: now_rfc3339(),
            host: this_host(),
            findings: vec![],
            suppressed: vec![],
            incomplete: vec![],
            data: None,
        }
    }

    pub fn header(&self) -> Header {
        Header {
            schema: "psk-guard-report",
            schema_version: SCHEMA_VERSION,
            tool: Tool {
                name: "psk-guard",
                version: env!("CARGO_PKG_VERSION"),
            },
            command: self.command,
            generated_at: self.generated_at.clone(),
            host: self.host.clone(),
            target: (*self.target).clone(),
            fingerprint: FingerprintInfo {
                algorithm: "hmac-sha256-truncated-64",
                salt: self.fingerprint_salt,
            },
        }
    }

    pub fn push(&mut self, f: Finding) {
        self.findings.push(f);
    }

    /// [`Finding::id`], with a path under the run directory named relative to it, so the id is
    /// the same whether the node is checked at /var/run/antrea or under /host in a debug pod.
    pub fn finding_id(&self, f: &Finding) -> String {
        if f.stable_name.is_none() && f.subject.kind == "path" {
            if let Some(rel) = self
                .target
                .get("run_dir")
                .and_then(|r| std::path::Path::new(&f.subject.name).strip_prefix(r).ok())
            {
                return f.id_with(&format!("$RUN_DIR/{}", rel.display()));
            }
        }
        f.id()
    }

    pub fn not_checked(&mut self, check: impl Into<String>, reason: impl Into<String>) {
        self.incomplete.push(Incomplete::new(check, reason));
    }

    /// Sets the command-specific `data`, every string in it bounded and escaped.
    pub fn set_data(&mut self, data: serde_json::Value) {
        self.data = Some(sanitize::json(data));
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

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.findings {
            s.add(f.severity);
        }
        s.suppressed = self.suppressed.len();
        s.incomplete = self.incomplete.len();
        s
    }

    /// The documented exit code: 1 when a finding is at or above the threshold; otherwise 2 when a
    /// part of the job could not be done (a check that did not run is never a pass); otherwise 0.
    /// Suppressed findings do not count.
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

/// Counts per severity (suppressed findings are counted apart, not in `total`).
#[derive(Clone, Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Summary {
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
    pub info: usize,
    pub total: usize,
    pub suppressed: usize,
    pub incomplete: usize,
}

impl Summary {
    pub fn add(&mut self, s: Severity) {
        *match s {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Info => &mut self.info,
        } += 1;
        self.total += 1;
    }
}

/// Exit codes, documented in `--help` and the README.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Text,
    /// The JSON report (docs/report.schema.json).
    Json,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF viewers.
    Sarif,
    /// JUnit XML, one test case per finding, for CI dashboards.
    Junit,
    /// Prometheus text format, for node-exporter's textfile collector.
    Prometheus,
}

/// How to write a report.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteOptions {
    pub format: Format,
    /// Colour (text only).
    pub color: bool,
    /// JUnit: findings at or above this are failures, the rest pass.
    pub fail_on: FailOn,
}

/// Writes a report to `w`. Every format walks the findings once and serializes each straight to
/// the output.
pub fn write(
    report: &Report,
    opts: WriteOptions,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    match opts.format {
        Format::Text => text::write(report, opts.color, w),
        Format::Json => json::write(report, w),
        Format::Sarif => sarif::write(report, w),
        Format::Junit => junit::write(report, opts.fail_on, w),
        Format::Prometheus => prometheus::write(report, w),
    }
}

/// The report as a string (tests, and callers that embed it).
pub fn render(report: &Report, opts: WriteOptions) -> String {
    let mut out = Vec::new();
    let _ = write(report, opts, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--quiet`: no progress lines.
pub fn set_quiet(q: bool) {
    QUIET.store(q, std::sync::atomic::Ordering::Relaxed);
}

/// Whether `--quiet` was given (for progress that is not a plain line, e.g. a TTY bar).
pub fn is_quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// A progress line on stderr (`psk-guard <command>: <message>`), plain, unless `--quiet`. stdout
/// carries only the report.
pub fn progress(command: &str, msg: &str) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        if command.is_empty() {
            eprintln!("psk-guard: {msg}");
        } else {
            eprintln!("psk-guard {command}: {msg}");
        }
    }
}

/// Writes a file atomically: a new temporary file (mode 0600) in the same directory, filled by
/// `fill`, synced, then renamed over `path`. Readers see the old file or the whole new one, never
/// a part, and nobody else can read the report meanwhile.
pub fn write_file_atomic(
    path: &std::path::Path,
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp = None;
    for _ in 0..16 {
        let candidate = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            hex::encode(rand::random::<[u8; 6]>())
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&candidate)
        {
            Ok(f) => {
                tmp = Some((candidate, f));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    let (tmp_path, file) = tmp.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, "no free temporary name")
    })?;
    let result = (|| {
        let mut w = std::io::BufWriter::new(&file);
        fill(&mut w)?;
        w.flush()?;
        drop(w);
        file.sync_all()?;
        std::fs::rename(&tmp_path, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result
}

/// A sequence serialized from an iterator, so a writer never collects what it writes.
pub(crate) struct SeqIter<I>(std::cell::RefCell<Option<I>>);

impl<I> SeqIter<I> {
    pub(crate) fn new(it: I) -> Self {
        SeqIter(std::cell::RefCell::new(Some(it)))
    }
}

impl<I> Serialize for SeqIter<I>
where
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.borrow_mut().take() {
            Some(it) => s.collect_seq(it),
            None => s.collect_seq(std::iter::empty::<I::Item>()),
        }
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
