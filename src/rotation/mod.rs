//! `psk-guard rotate`: change the IPsec PSK in the `antrea-ipsec` Secret and on every node, with
//! the shortest mixed-key window, verified, and resumable after a crash at any point.
//!
//! The run is a sequence of phases recorded in annotations on the Secret ([`record`]), written in
//! the same optimistic-concurrency update as the key itself, so that a rerun resumes the same
//! rotation: `secret-written` (new key stored) → `rolled-out` (nodes have it) → `verified`
//! (every node's tunnels carry it) → `compacted` (old keys purged from every conf.db) → `done`.
//! A Lease makes runs exclusive. Nothing is written before the preflight has passed.

pub mod node;
pub mod ondelete;
mod phases;
pub mod record;
pub mod rollout;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use zeroize::Zeroize;

use crate::cluster::jobs::{NodeJob, Outcome};
use crate::cluster::{self, lease, ClusterError, Permission};
use crate::report::{Report, EXIT_ERROR, EXIT_FINDINGS, EXIT_OK};
use crate::secret::{FingerprintKey, Psk};
use phases::{Run, Step};
use record::{Phase, Record};

/// How the new key reaches the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// Restart the antrea-agent pods (works with stock Antrea; the window is the rollout).
    Restart,
    /// Write the key into every node's OVSDB at one shared instant, then restart the agents.
    Push,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Restart => "restart",
            Strategy::Push => "push",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RotateConfig {
    pub namespace: String,
    pub secret: String,
    pub key: String,
    pub daemonset: String,
    pub config_map: String,
    pub strategy: Strategy,
    pub psk_file: Option<PathBuf>,
    pub image: String,
    pub service_account: String,
    pub lease: String,
    pub lease_duration: Duration,
    pub api_timeout: Duration,
    /// The rollout fails when no node advanced for this long (like a Deployment's
    /// `progressDeadlineSeconds`).
    pub progress_deadline: Duration,
    pub job_timeout: Duration,
    /// For `push`: how far ahead of the moment every push pod is ready the shared write instant
    /// is set (time for the announcement to reach every pod).
    pub push_lead: Duration,
    pub compact: bool,
    /// Nodes the user chose to leave out (`--exclude-node`): not required healthy, no Jobs.
    pub exclude_nodes: Vec<String>,
    /// Run the whole preflight and print the plan; write nothing (`--dry-run`).
    pub dry_run: bool,
}

/// The permissions `rotate` uses (also the source of truth for the RBAC manifests).
pub const PERMISSIONS: &[Permission] = &[
    Permission::named("get", "", "secrets"),
    Permission::named("update", "", "secrets"),
    Permission::named("patch", "", "secrets"),
    Permission::named("get", "", "configmaps"),
    // The node Jobs' service account exists (their pods are refused otherwise).
    Permission::named("get", "", "serviceaccounts"),
    Permission::named("get", "apps", "daemonsets"),
    Permission::named("patch", "apps", "daemonsets"),
    Permission::named("list", "apps", "daemonsets"),
    Permission::named("watch", "apps", "daemonsets"),
    Permission::any("list", "", "pods"),
    Permission::any("watch", "", "pods"),
    Permission::sub("get", "", "pods", "log"),
    Permission::any("create", "batch", "jobs"),
    Permission::any("list", "batch", "jobs"),
    Permission::any("watch", "batch", "jobs"),
    Permission::any("delete", "batch", "jobs"),
    Permission::named("get", "coordination.k8s.io", "leases"),
    Permission::any("create", "coordination.k8s.io", "leases"),
    Permission::named("update", "coordination.k8s.io", "leases"),
    Permission::any("create", "", "events"),
    // Why a node Job's pod cannot start (admission refused it, a host path is missing).
    crate::cluster::jobs::EVENT_PERMISSIONS[0],
    crate::cluster::jobs::EVENT_PERMISSIONS[1],
];

/// The permissions `rotate` adds for an `OnDelete` DaemonSet: evicting its agents (a separate
/// Role in docs/deploy/rbac.yaml, granted only where Antrea runs with OnDelete).
pub const ON_DELETE_PERMISSIONS: &[Permission] =
    &[Permission::sub("create", "", "pods", "eviction")];

/// Fails with [`ClusterError::Forbidden`] naming every permission of `perms` not granted.
async fn require(
    ctx: &Ctx<'_>,
    perms: &[Permission],
    names: impl Fn(&str) -> Option<String>,
) -> Result<(), ClusterError> {
    let ns = &ctx.cfg.namespace;
    let missing = cluster::missing_permissions(&ctx.client, ns, perms, names).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(|p| format!("{p} in {ns}")).collect();
    Err(ClusterError::Forbidden(list.join(", ")))
}

/// The cluster-scoped permissions `rotate` uses: the target nodes' health, and the Job
/// namespace's Pod Security level (a ClusterRole in docs/deploy/rbac.yaml).
pub const CLUSTER_PERMISSIONS: &[Permission] = &[
    Permission::any("list", "", "nodes"),
    Permission::named("get", "", "namespaces"),
];

/// The Secret's key, moved into a [`Psk`]; the copy in the object is wiped.
fn take_key(secret: &mut Secret, key: &str, what: &str) -> Result<Psk, ClusterError> {
    let data = secret.data.as_mut();
    let Some(bytes) = data.and_then(|d| d.get_mut(key)) else {
        return Err(ClusterError::Precondition(format!(
            "{what} has no key {key:?} (is IPsec enabled? pass --secret/--key if Antrea's Secret is named differently)"
        )));
    };
    let raw = std::mem::take(&mut bytes.0);
    match String::from_utf8(raw) {
        Ok(s) => Ok(Psk::new(s)),
        Err(e) => {
            let mut raw = e.into_bytes();
            raw.zeroize();
            Err(ClusterError::Precondition(format!(
                "{what} key {key:?} is not UTF-8 text, so it cannot be Antrea's PSK (ANTREA_IPSEC_PSK): fix the Secret by hand first"
            )))
        }
    }
}

/// A new key: 32 bytes from the OS CSPRNG, base64url without padding (43 characters of
/// `A-Za-z0-9-_`: nothing strongSwan's ipsec.secrets or a shell would interpret).
pub fn generate_key() -> Result<Psk, ClusterError> {
    use base64::Engine;
    use rand::TryRngCore;
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng
        .try_fill_bytes(&mut raw[..])
        .map_err(|e| {
            ClusterError::Precondition(format!("the OS random number generator failed: {e}"))
        })?;
    let mut s = String::with_capacity(43);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&raw[..], &mut s);
    Ok(Psk::new(s))
}

/// Reads an operator-supplied key and refuses a weak or unsafe one.
pub fn key_from_file(path: &std::path::Path) -> Result<Psk, ClusterError> {
    use std::io::Read;
    /// Far above any real PSK; a larger file is refused, not read into memory.
    const MAX: usize = 4096;
    let cannot = |why: String| {
        ClusterError::Precondition(format!("cannot read --psk-file {}: {why}", path.display()))
    };
    // Read into a buffer that never grows (a reallocation would leave a copy of the key behind),
    // at most MAX + 1 bytes, so an endless file (/dev/zero) or a huge one ends here.
    let mut buf: Vec<u8> = Vec::with_capacity(MAX + 1);
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX as u64 + 1).read_to_end(&mut buf));
    if let Err(e) = read {
        buf.zeroize();
        return Err(cannot(format!("{}", e.kind())));
    }
    if buf.len() > MAX {
        buf.zeroize();
        return Err(cannot(format!(
            "larger than {MAX} bytes; it should hold only the key"
        )));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    let text = match String::from_utf8(buf) {
        Ok(t) => t,
        Err(e) => {
            e.into_bytes().zeroize();
            return Err(cannot("not UTF-8 text".into()));
        }
    };
    let psk = Psk::new(text);
    crate::secret::check_new_key(&psk).map_err(|why| {
        ClusterError::Precondition(format!("--psk-file {}: {why}", path.display()))
    })?;
    Ok(psk)
}

struct Ctx<'a> {
    cfg: &'a RotateConfig,
    client: Client,
    secrets: Api<Secret>,
    uid: Option<String>,
    interactive: bool,
    /// Whether the run still holds the Lease: checked before every write.
    held: lease::Held,
    /// Our identity as the Lease's holder (empty until it is taken).
    holder: String,
    /// The nodes to act on (the health preflight's result).
    targets: cluster::health::Targets,
}

impl Ctx<'_> {
    fn what(&self) -> String {
        format!("secret {}/{}", self.cfg.namespace, self.cfg.secret)
    }
    async fn event(&self, reason: &str, message: &str, warning: bool) {
        cluster::event(
            &self.client,
            &self.cfg.namespace,
            &self.cfg.secret,
            self.uid.as_deref(),
            reason,
            message,
            warning,
        )
        .await;
    }
    fn progress(&self, msg: &str) {
        crate::report::progress("rotate", msg);
    }
}

/// Test-only: with `PSK_GUARD_TEST_PAUSE_AFTER=<phase>`, stop after recording that phase until
/// stdin has a line (tests kill the process there to prove resumption).
fn pause_after(phase: Phase) {
    if std::env::var("PSK_GUARD_TEST_PAUSE_AFTER").is_ok_and(|p| p == phase.as_str()) {
        eprintln!(
            "psk-guard: paused after {} {}",
            phase.as_str(),
            std::process::id()
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// What the preflight read: the Secret (its key moved out), the key, the agent DaemonSet and the
/// Job namespace.
struct Preflight {
    secret: Secret,
    current: Psk,
    ds: DaemonSet,
    job_namespace: Namespace,
}

/// Runs the preflight only (no writes).
async fn preflight(ctx: &Ctx<'_>) -> Result<Preflight, ClusterError> {
    let cfg = ctx.cfg;
    let names = |resource: &str| -> Option<String> {
        match resource {
            "secrets" => Some(cfg.secret.clone()),
            "daemonsets" => Some(cfg.daemonset.clone()),
            "configmaps" => Some(cfg.config_map.clone()),
            "leases" => Some(cfg.lease.clone()),
            "namespaces" => Some(cfg.namespace.clone()),
            "serviceaccounts" => Some(cfg.service_account.clone()),
            _ => None,
        }
    };
    let all: Vec<Permission> = PERMISSIONS
        .iter()
        .chain(CLUSTER_PERMISSIONS)
        .copied()
        .collect();
    require(ctx, &all, names).await?;
    let mut secret = cluster::retry("reading the Secret", || ctx.secrets.get(&cfg.secret))
        .await
        .map_err(|e| {
            let mut err = ClusterError::api("get", ctx.what(), e);
            if err.is_not_found() {
                err = ClusterError::Precondition(format!(
                    "{} not found: is Antrea's IPsec enabled, and is --namespace/--secret right?",
                    ctx.what()
                ));
            }
            err
        })?;
    let current = take_key(&mut secret, &cfg.key, &ctx.what())?;
    let ds_api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &cfg.namespace);
    let ds = cluster::retry("reading the DaemonSet", || ds_api.get(&cfg.daemonset))
        .await
        .map_err(|e| {
            ClusterError::api(
                "get",
                format!("daemonset {}/{}", cfg.namespace, cfg.daemonset),
                e,
            )
        })?;
    if rollout::on_delete(&ds) {
        require(ctx, ON_DELETE_PERMISSIONS, |_| None).await?;
    }
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &cfg.namespace);
    match cluster::retry("reading the ConfigMap", || cms.get_opt(&cfg.config_map)).await {
        Ok(Some(cm)) => {
            let conf = cm
                .data
                .as_ref()
                .and_then(|d| d.get("antrea-agent.conf"))
                .cloned()
                .unwrap_or_default();
            if record::cert_mode(&conf) {
                return Err(ClusterError::Precondition(
                    "Antrea runs IPsec in certificate mode (ipsec.authenticationMode: cert): there is no PSK to rotate; certificates rotate by themselves".into(),
                ));
            }
        }
        Ok(None) => tracing::info!("no ConfigMap {}: assuming PSK mode", cfg.config_map),
        Err(e) => {
            return Err(ClusterError::api(
                "get",
                format!("configmap {}/{}", cfg.namespace, cfg.config_map),
                e,
            ))
        }
    }
    let job_namespace = cluster::health::pod_security(&ctx.client, &cfg.namespace).await?;
    Ok(Preflight {
        secret,
        current,
        ds,
        job_namespace,
    })
}

/// The node Jobs the rest of the rotation will create, one of each kind, for its first target
/// node, as the phases build them: push (strategy push, until the key is rolled out), verify
/// (until verified), compact (with `--compact`, until compacted). A new rotation's record does not
/// exist yet: a stand-in of the same shape gives the Jobs their arguments.
fn planned_jobs(ctx: &Ctx<'_>, secret: &Secret, current: &Psk) -> Vec<(NodeJob, String)> {
    let Some(node) = ctx.targets.nodes.first() else {
        return vec![];
    };
    let rec = Record::read(secret.metadata.annotations.as_ref())
        .filter(|r| r.phase != Phase::Done)
        .unwrap_or_else(|| Record::new(ctx.cfg.strategy, current, current));
    let strategy = rec.strategy_enum().unwrap_or(ctx.cfg.strategy);
    let before = |phases: &[Phase]| phases.contains(&rec.phase);
    let mut jobs = vec![];
    if strategy == Strategy::Push && before(&[Phase::SecretWritten]) {
        // A stand-in barrier id of the real one's shape (8 hex digits).
        jobs.push(phases::push_job(ctx, &rec.id, "00000000"));
    }
    if before(&[Phase::SecretWritten, Phase::RolledOut]) {
        let args = phases::verify_args(&rec);
        jobs.push(node_job(ctx, "verify", &rec.id, args, false));
    }
    if ctx.cfg.compact && before(&[Phase::SecretWritten, Phase::RolledOut, Phase::Verified]) {
        jobs.push(node_job(
            ctx,
            "compact",
            &rec.id,
            phases::compact_args(),
            false,
        ));
    }
    jobs.into_iter().map(|j| (j, node.clone())).collect()
}

/// Re-reads the Secret and moves its key out; fails if the key no longer has fingerprint
/// `expect` (someone else changed it). `then` finishes the error message with what a rerun does.
async fn reread_expecting(
    ctx: &Ctx<'_>,
    expect: crate::secret::Fingerprint,
    fp_key: &FingerprintKey,
    then: &str,
) -> Result<(Secret, Psk), ClusterError> {
    let mut secret = cluster::retry("re-reading the Secret", || ctx.secrets.get(&ctx.cfg.secret))
        .await
        .map_err(|e| ClusterError::api("get", ctx.what(), e))?;
    let current = take_key(&mut secret, &ctx.cfg.key, &ctx.what())?;
    if fp_key.fingerprint(&current) != expect {
        return Err(ClusterError::Precondition(format!(
            "the key in {} was changed by someone else during the rotation: stopping. Inspect it, then rerun psk-guard rotate{then}",
            ctx.what()
        )));
    }
    Ok((secret, current))
}

/// Stores the new key and the record in one update with optimistic concurrency. Each attempt
/// re-reads the Secret: if its key is no longer the old one (`rec.old_fingerprint`) it aborts; a
/// 409 retries.
async fn write_key(
    ctx: &Ctx<'_>,
    rec: &Record,
    new_key: &Psk,
    fp_key: &FingerprintKey,
) -> Result<Secret, ClusterError> {
    for _attempt in 0..5 {
        ctx.held.check()?;
        let (mut secret, _old) = reread_expecting(
            ctx,
            rec.old_fingerprint,
            fp_key,
            " (it will start over from the key it finds)",
        )
        .await?;
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        data.insert(
            ctx.cfg.key.clone(),
            k8s_openapi::ByteString(new_key.expose_secret().as_bytes().to_vec()),
        );
        rec.apply(
            secret
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new),
        );
        let result = ctx
            .secrets
            .replace(&ctx.cfg.secret, &PostParams::default(), &secret)
            .await;
        // The object held the key's bytes: wipe them.
        if let Some(b) = secret.data.as_mut().and_then(|d| d.get_mut(&ctx.cfg.key)) {
            b.0.zeroize();
        }
        match result {
            Ok(mut s) => {
                if let Some(b) = s.data.as_mut().and_then(|d| d.get_mut(&ctx.cfg.key)) {
                    b.0.zeroize();
                }
                return Ok(s);
            }
            Err(kube::Error::Api(st)) if st.is_conflict() => {
                tracing::info!("409 Conflict writing the Secret: re-reading");
                continue;
            }
            Err(e) => return Err(ClusterError::api("update", ctx.what(), e)),
        }
    }
    Err(ClusterError::Precondition(format!(
        "{} kept changing (5 conflicts in a row): try again",
        ctx.what()
    )))
}

/// Records a phase change without the key crossing the wire: a merge patch of the annotations
/// only, preconditioned on the resourceVersion of our last write, answered as PartialObjectMetadata
/// (no `data`). If anything changed the Secret since (409), it is re-read once to check that its
/// key is still this rotation's new key, and the patch is retried on the fresh version.
async fn record_phase(
    ctx: &Ctx<'_>,
    rec: &Record,
    rv: &mut String,
    fp_key: &FingerprintKey,
) -> Result<(), ClusterError> {
    for _attempt in 0..5 {
        ctx.held.check()?;
        let mut ann = BTreeMap::new();
        rec.apply(&mut ann);
        let patch = json!({"metadata": {"resourceVersion": rv.as_str(), "annotations": ann}});
        match ctx
            .secrets
            .patch_metadata(
                &ctx.cfg.secret,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(meta) => {
                *rv = meta.metadata.resource_version.unwrap_or_default();
                return Ok(());
            }
            Err(kube::Error::Api(st)) if st.is_conflict() => {
                let (secret, _new) = reread_expecting(ctx, rec.new_fingerprint, fp_key, "").await?;
                *rv = secret.metadata.resource_version.unwrap_or_default();
            }
            Err(e) => return Err(ClusterError::api("patch", ctx.what(), e)),
        }
    }
    Err(ClusterError::Precondition(format!(
        "{} kept changing (5 conflicts in a row): try again",
        ctx.what()
    )))
}

/// Moves the rotation to `phase`: records it on the Secret, then the Event, then the test pause
/// point (the record comes first, so a crash after it resumes from the new phase).
async fn advance(
    ctx: &Ctx<'_>,
    rec: &mut Record,
    rv: &mut String,
    fp_key: &FingerprintKey,
    phase: Phase,
    event: Option<(&str, String)>,
) -> Result<(), ClusterError> {
    rec.phase = phase;
    record_phase(ctx, rec, rv, fp_key).await?;
    if let Some((reason, message)) = event {
        ctx.event(reason, &message, false).await;
    }
    pause_after(phase);
    Ok(())
}

/// Outcome of `rotate`: the report and the exit status.
pub struct Rotated {
    pub report: Report,
    pub code: u8,
}

/// Reads the rotation record back (`rotate --status`); writes nothing.
pub async fn status(cfg: &RotateConfig) -> Result<Rotated, ClusterError> {
    let client = cluster::client(cfg.api_timeout).await?;
    let secrets: Api<Secret> = Api::namespaced(client, &cfg.namespace);
    let mut secret = secrets.get(&cfg.secret).await.map_err(|e| {
        ClusterError::api("get", format!("secret {}/{}", cfg.namespace, cfg.secret), e)
    })?;
    if let Some(d) = secret.data.as_mut() {
        for v in d.values_mut() {
            v.0.zeroize();
        }
    }
    let rec = Record::read(secret.metadata.annotations.as_ref());
    let mut report = Report::new("rotate", crate::secret::SaltOrigin::Given);
    report
        .target
        .insert("secret".into(), format!("{}/{}", cfg.namespace, cfg.secret));
    let code = match &rec {
        Some(r) if r.phase == Phase::Done => EXIT_OK,
        Some(_) => EXIT_FINDINGS,
        None => EXIT_OK,
    };
    report.set_data(match rec {
        Some(r) => r.to_json(),
        None => json!({"rotation": null}),
    });
    Ok(Rotated { report, code })
}

/// The names of the nodes running the agent (from its pods).
async fn agent_nodes(ctx: &Ctx<'_>, _ds: &DaemonSet) -> Result<Vec<String>, ClusterError> {
    Ok(ctx.targets.nodes.clone())
}

fn node_job(
    ctx: &Ctx<'_>,
    purpose: &'static str,
    id: &str,
    args: Vec<String>,
    env_secret: bool,
) -> NodeJob {
    NodeJob {
        namespace: ctx.cfg.namespace.clone(),
        image: ctx.cfg.image.clone(),
        purpose,
        run_id: id.to_owned(),
        args,
        env_from_secret: env_secret.then(|| {
            (
                "ANTREA_IPSEC_PSK".to_owned(),
                ctx.cfg.secret.clone(),
                ctx.cfg.key.clone(),
            )
        }),
        service_account: ctx.cfg.service_account.clone(),
        timeout: ctx.cfg.job_timeout,
        logs: false,
        barrier: false,
    }
}

const NODE_ARGS: [&str; 4] = [
    "--db",
    "unix:/var/run/antrea/openvswitch/db.sock",
    "--run-dir",
    "/var/run/antrea",
];

/// The longest `--push-lead-ms` that fits in `--job-timeout`: the push pods get half the Job
/// timeout to become ready ([`phases::ready_timeout`]); the instant comes the lead later, and a
/// node may still write up to [`node::BARRIER_LATE_TOLERANCE_MS`] after it, all before the
/// Jobs' `activeDeadlineSeconds` (the whole Job timeout) ends their pods.
pub fn max_push_lead(job_timeout: Duration) -> Duration {
    let rest = job_timeout.saturating_sub(phases::ready_timeout_of(job_timeout));
    rest.saturating_sub(Duration::from_millis(
        node::BARRIER_LATE_TOLERANCE_MS as u64,
    ))
}

/// Refuses a push whose lead cannot fit in the Job timeout ([`max_push_lead`]): its pods would
/// be ended by their deadline before the instant, after the new key is in the Secret.
fn check_push_lead(cfg: &RotateConfig) -> Result<(), ClusterError> {
    let max = max_push_lead(cfg.job_timeout);
    if cfg.push_lead <= max {
        return Ok(());
    }
    Err(ClusterError::Precondition(format!(
        "--push-lead-ms {} does not fit in --job-timeout {}: the push pods get half the Job timeout ({} ms) to become ready, and the instant announced --push-lead-ms later, plus the {} ms a node may be late, must come before the Job timeout ends them, so --push-lead-ms must be at most {} with this --job-timeout. Lower --push-lead-ms or raise --job-timeout (at least {} s for this lead); nothing was written",
        cfg.push_lead.as_millis(),
        cfg.job_timeout.as_secs(),
        phases::ready_timeout_of(cfg.job_timeout).as_millis(),
        node::BARRIER_LATE_TOLERANCE_MS,
        max.as_millis(),
        min_job_timeout(cfg.push_lead),
    )))
}

/// The shortest `--job-timeout` (whole seconds) that fits `lead` ([`max_push_lead`]).
fn min_job_timeout(lead: Duration) -> u64 {
    (1..=86_400u64)
        .find(|s| max_push_lead(Duration::from_secs(*s)) >= lead)
        .unwrap_or(86_400)
}

/// Runs (or resumes) a rotation.
pub async fn run(cfg: &RotateConfig) -> Result<Rotated, ClusterError> {
    let started = Instant::now();
    if cfg.strategy == Strategy::Push {
        // A flag error: refused before the API is asked anything.
        check_push_lead(cfg)?;
    }
    let client = cluster::client(cfg.api_timeout).await?;
    let ctx = Ctx {
        cfg,
        secrets: Api::namespaced(client.clone(), &cfg.namespace),
        client,
        uid: None,
        interactive: std::io::stderr().is_terminal(),
        held: lease::Held::always(),
        holder: String::new(),
        targets: Default::default(),
    };
    // 1. Preflight: nothing is written before it passes.
    let Preflight {
        secret,
        current,
        ds,
        job_namespace,
    } = preflight(&ctx).await?;
    let targets =
        cluster::health::preflight(&ctx.client, &cfg.namespace, &ds, &cfg.exclude_nodes).await?;
    let ctx = Ctx {
        uid: secret.metadata.uid.clone(),
        targets,
        ..ctx
    };
    // Resuming a push rotation started with --strategy push: its lead must fit too.
    let resumed = Record::read(secret.metadata.annotations.as_ref())
        .filter(|r| r.phase != Phase::Done)
        .and_then(|r| r.strategy_enum());
    if resumed == Some(Strategy::Push) {
        check_push_lead(cfg)?;
    }
    // The node Jobs themselves, as the API server would admit them (a server-side dry run).
    let planned = planned_jobs(&ctx, &secret, &current);
    cluster::health::node_jobs_admitted(&ctx.client, &job_namespace, &planned).await?;
    let new_key = match &cfg.psk_file {
        Some(p) => Some(key_from_file(p)?),
        None => None,
    };
    if cfg.dry_run {
        let checked: Vec<&str> = planned.iter().map(|(j, _)| j.purpose).collect();
        return Ok(dry_run(&ctx, &secret, &checked));
    }
    // 2. Exclusive.
    let holder = format!("{}-{:08x}", cluster::hostname(), rand::random::<u32>());
    let guard = lease::acquire(
        &ctx.client,
        &cfg.namespace,
        &cfg.lease,
        &holder,
        cfg.lease_duration,
    )
    .await?;
    let ctx = Ctx {
        held: guard.held(),
        holder,
        ..ctx
    };
    // A lost Lease stops the rotation wherever it is (the future is dropped at its next await;
    // every write also checks the Lease first).
    let mut lost = guard.held();
    let result = tokio::select! {
        r = rotate_locked(&ctx, secret, current, new_key, ds, started) => r,
        e = lost.lost() => Err(e),
    };
    match &result {
        Err(ClusterError::LeaseLost(_)) => {}
        // Error texts name objects and fingerprints, never key bytes.
        Err(e) => {
            ctx.event(
                "RotationFailed",
                &format!("psk-guard rotate stopped: {e}. Rerun psk-guard rotate to resume"),
                true,
            )
            .await
        }
        Ok(_) => {}
    }
    guard.release().await;
    result.map(|mut r| {
        if let Some(d) = r.report.data.as_mut() {
            d["excluded_nodes"] = json!(ctx.targets.excluded);
        }
        r
    })
}

/// `--dry-run`: the preflight passed (the node Jobs `checked` admitted by a server-side dry run);
/// say what a run would do, write nothing.
fn dry_run(ctx: &Ctx<'_>, secret: &Secret, checked: &[&str]) -> Rotated {
    let cfg = ctx.cfg;
    let rec = Record::read(secret.metadata.annotations.as_ref()).filter(|r| r.phase != Phase::Done);
    let mut plan = vec![];
    match &rec {
        Some(r) => plan.push(format!(
            "resume rotation {} at phase {}",
            r.id,
            r.phase.as_str()
        )),
        None => plan.push(format!(
            "write a new key into {} (key {:?}), recording the rotation on it",
            ctx.what(),
            cfg.key
        )),
    }
    let strategy = rec
        .as_ref()
        .and_then(Record::strategy_enum)
        .unwrap_or(cfg.strategy);
    let nodes = ctx.targets.nodes.join(", ");
    if strategy == Strategy::Push {
        plan.push(format!("push the key to the OVSDB of: {nodes}"));
    }
    plan.push(format!(
        "restart daemonset {}/{} ({}), then verify the tunnels of: {nodes}",
        cfg.namespace,
        cfg.daemonset,
        strategy.as_str()
    ));
    if cfg.compact {
        plan.push(format!("compact conf.db on: {nodes}"));
    }
    if !ctx.targets.excluded.is_empty() {
        plan.push(format!(
            "leave out (they keep the old key): {}",
            ctx.targets.excluded.join(", ")
        ));
    }
    ctx.progress(&format!(
        "dry run: the preflight passed (the API server admits the node Jobs {}); nothing was written. The plan:",
        checked.join(", ")
    ));
    for (i, p) in plan.iter().enumerate() {
        ctx.progress(&format!("  {}. {p}", i + 1));
    }
    let mut report = Report::new("rotate", crate::secret::SaltOrigin::Given);
    report
        .target
        .insert("secret".into(), format!("{}/{}", cfg.namespace, cfg.secret));
    report.data = Some(json!({
        "dry_run": true,
        "plan": plan,
        "nodes": ctx.targets.nodes,
        "excluded_nodes": ctx.targets.excluded,
        "jobs_admitted": checked,
    }));
    Rotated {
        report,
        code: EXIT_OK,
    }
}

/// The phase machine: from the recorded phase, one function per phase ([`phases`]) until the
/// rotation is done or a phase stops it.
async fn rotate_locked(
    ctx: &Ctx<'_>,
    secret: Secret,
    current: Psk,
    new_key: Option<Psk>,
    ds: DaemonSet,
    started: Instant,
) -> Result<Rotated, ClusterError> {
    let (rec, rv, fp_key) = phases::start(ctx, &secret, current, new_key).await?;
    let mut run = new_run(ctx, rec, rv, fp_key, ds, started).await?;
    loop {
        ctx.held.check()?;
        let step = match run.rec.phase {
            Phase::SecretWritten => phases::roll_out(&mut run).await?,
            Phase::RolledOut => phases::verify(&mut run).await?,
            Phase::Verified => phases::compact(&mut run).await?,
            Phase::Compacted => phases::done(&mut run).await?,
            Phase::Done => Step::Stop(EXIT_OK),
        };
        if let Step::Stop(code) = step {
            return Ok(run.finish(code));
        }
    }
}

/// The shared context of the phases: the target nodes and an empty report.
async fn new_run<'a>(
    ctx: &'a Ctx<'a>,
    rec: Record,
    rv: String,
    fp_key: FingerprintKey,
    ds: DaemonSet,
    started: Instant,
) -> Result<Run<'a>, ClusterError> {
    let cfg = ctx.cfg;
    let strategy = rec.strategy_enum().unwrap_or(cfg.strategy);
    let nodes = agent_nodes(ctx, &ds).await?;
    let mut node_rows: BTreeMap<String, serde_json::Map<String, serde_json::Value>> = nodes
        .iter()
        .map(|n| (n.clone(), serde_json::Map::new()))
        .collect();
    if matches!(rec.phase, Phase::Verified | Phase::Compacted) {
        for row in node_rows.values_mut() {
            row.insert("converged".into(), json!(true));
            row.insert("verified_by_earlier_run".into(), json!(true));
        }
    }
    let mut report = Report::new("rotate", crate::secret::SaltOrigin::Given);
    report
        .target
        .insert("secret".into(), format!("{}/{}", cfg.namespace, cfg.secret));
    report.target.insert(
        "daemonset".into(),
        format!("{}/{}", cfg.namespace, cfg.daemonset),
    );
    Ok(Run {
        ctx,
        rec,
        rv,
        fp_key,
        strategy,
        ds,
        nodes,
        node_rows,
        report,
        timings: serde_json::Map::new(),
        started,
    })
}

fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Succeeded(_) => "succeeded",
        Outcome::Failed(_) => "job failed",
        Outcome::TimedOut => "timed out",
        Outcome::NotCreated(_) => "job not created",
        Outcome::NotStarted(_) => "job's pod never started",
    }
}

/// What went wrong with a node's Job, with the reason from its log when it left no result.
fn failure_words(o: &Outcome) -> String {
    match o.result() {
        Err(why)
            if matches!(
                o,
                Outcome::Succeeded(_) | Outcome::Failed(_) | Outcome::NotStarted(_)
            ) =>
        {
            format!("{}: {why}", outcome_word(o))
        }
        _ => outcome_word(o).to_owned(),
    }
}

/// Whether a verify Job's report shows the node converged, and why not.
fn verdict(o: &Outcome) -> (bool, String) {
    let r = match o.result() {
        Ok(r) => r,
        Err(why) => {
            return (
                false,
                format!("verification job {}: {why}", outcome_word(o)),
            )
        }
    };
    let codes: Vec<&str> = r["findings"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["code"].as_str()).collect())
        .unwrap_or_default();
    let bad = |c: &str| codes.contains(&c);
    if bad("ovsdb-unreachable") {
        (false, "OVSDB on the node could not be queried".into())
    } else if bad("psk-unexpected-fingerprint") {
        let n = codes
            .iter()
            .filter(|c| **c == "psk-unexpected-fingerprint")
            .count();
        (false, format!("{n} tunnel(s) still carry another key"))
    } else {
        (true, String::new())
    }
}

fn finish(
    mut report: Report,
    rec: &Record,
    nodes: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    timings: serde_json::Map<String, serde_json::Value>,
    started: Instant,
    code: u8,
) -> Rotated {
    let mut data = rec.to_json();
    data["nodes"] = json!(nodes
        .into_iter()
        .map(|(n, mut m)| {
            m.insert("node".into(), json!(n));
            serde_json::Value::Object(m)
        })
        .collect::<Vec<_>>());
    let mut timings = timings;
    timings.insert(
        "total_ms".into(),
        json!(started.elapsed().as_millis() as u64),
    );
    data["timings"] = serde_json::Value::Object(timings);
    report.set_data(data);
    report.sort();
    Rotated { report, code }
}

/// The exit status for a rotation error: every error is "could not run" (nothing or only the
/// recorded, resumable part was done).
pub fn error_code(_e: &ClusterError) -> u8 {
    EXIT_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_lead_must_fit_in_the_job_timeout() {
        // Half the Job timeout to get Ready, then the lead, then the 3 s tolerance.
        assert_eq!(
            max_push_lead(Duration::from_secs(300)),
            Duration::from_secs(147)
        );
        assert_eq!(
            max_push_lead(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(
            max_push_lead(Duration::from_secs(9)),
            Duration::from_millis(1500)
        );
        assert_eq!(max_push_lead(Duration::from_secs(6)), Duration::ZERO);
        assert_eq!(max_push_lead(Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(min_job_timeout(Duration::from_secs(2)), 10);
        assert_eq!(min_job_timeout(Duration::from_millis(2001)), 11);
        assert_eq!(min_job_timeout(Duration::from_millis(100)), 7);
        // The default lead fits the default Job timeout.
        assert!(Duration::from_millis(2000) <= max_push_lead(Duration::from_secs(300)));
    }
}
