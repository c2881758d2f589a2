//! Per-node Jobs: one pinned Job per node (node affinity `matchFields metadata.name`, as the
//! DaemonSet controller does: it accepts any node name), on Linux nodes only (`nodeSelector
//! kubernetes.io/os: linux`), running psk-guard with the host's `/var/run/antrea` mounted
//! read-only (a unix socket can be connected through a read-only mount), hardened security
//! context. Results are read from the pod's log through the framed result line of [`super::frame`]
//! (the log merges stdout and stderr); the Jobs are deleted afterwards.
//!
//! A node name may be 253 characters; label values and the Job name (which the Job controller
//! copies into the `job-name` label) may be 63. So node names never appear raw in a label or a
//! name: the label `psk-guard.io/node` is the first 16 hex digits of the name's SHA-256, the name
//! itself is in the annotation `psk-guard.io/node-name`, and Jobs are named
//! `psk-guard-<purpose>-<nonce>-<hash>` (at most 52 characters).
//!
//! Every Job mounts the run directory read-only; audit's check Jobs also mount the log directory
//! `/var/log/antrea` read-only ([`NodeJob::logs`]), so the node check searches it for keys
//! (docs/deploy/admission-policy.yaml admits these two read-only host paths and nothing else). Compaction makes ovsdb-server recreate conf.db with its default mode; `fix
//! --only-compact` chmods only if that added a bit, so it works through the read-only mount; a mode
//! that compaction loosened and the mount cannot restore is reported (see `fix`).

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::Client;
use serde_json::json;
use sha2::Digest;

use super::watch::Watched;
use super::ClusterError;

/// What one node's Job produced. `Succeeded`/`Failed` carry the node's result: the JSON of its
/// result frame, or the reason there is none (see [`Outcome::result`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded(String),
    /// The container exited non-zero.
    Failed(String),
    TimedOut,
    NotCreated(String),
    /// The Job's pod cannot start, as the Events say (seen before the timeout).
    NotStarted(NotStarted),
}

/// Why a Job's pod cannot start, from the Events the Job controller and the kubelet record.
/// Both keep retrying for ever; waiting out the timeout would only hide the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStarted {
    /// Admission refused the pod (`FailedCreate` on the Job), by what `by` says.
    Refused { message: String, by: RefusedBy },
    /// The kubelet cannot set up the hostPath volume of host path `path` (`FailedMount` on the
    /// pod): a `Directory` hostPath that does not exist on the node or is no directory
    /// (pkg/volume/hostpath/host_path.go `checkType`: "hostPath PATH doesn't exist").
    HostPath { path: String, message: String },
}

/// Who refused a Job's pod, from the `FailedCreate` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// Pod Security admission ("violates PodSecurity", pod-security-admission's `admission.go`).
    PodSecurity,
    /// The ServiceAccount admission plugin: the pod names a missing service account ("error
    /// looking up service account", plugin/pkg/admission/serviceaccount/admission.go).
    MissingServiceAccount,
    /// Anything else: a webhook, a policy, a quota, the API server itself.
    Other,
}

impl RefusedBy {
    fn of(message: &str) -> RefusedBy {
        if message.contains("violates PodSecurity") {
            RefusedBy::PodSecurity
        } else if message.contains("error looking up service account") {
            RefusedBy::MissingServiceAccount
        } else {
            RefusedBy::Other
        }
    }

    /// Whether the refusal lasts until someone changes the cluster (Pod Security's level, a
    /// missing service account). Any other (a webhook that timed out, a quota used up, the API
    /// server busy) may clear at one of the Job controller's next tries: it retries with
    /// backoff, 1 s doubling up to 60 s (pkg/controller/job `DefaultJobApiBackOff`,
    /// `MaxJobApiBackOff`), so the pod may still come.
    fn lasts(self) -> bool {
        self != RefusedBy::Other
    }
}

impl std::fmt::Display for NotStarted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotStarted::Refused {
                message,
                by: RefusedBy::PodSecurity,
            } => write!(f, "Pod Security admission refused its pod ({message})"),
            NotStarted::Refused { message, .. } => write!(f, "its pod was refused ({message})"),
            NotStarted::HostPath { path, message } => {
                write!(
                    f,
                    "the kubelet cannot mount the host path {path} ({message})"
                )
            }
        }
    }
}

/// A Job to run on each node.
#[derive(Debug, Clone)]
pub struct NodeJob {
    pub namespace: String,
    pub image: String,
    /// e.g. "verify"; part of the Job name and a label.
    pub purpose: &'static str,
    /// Label value tying the Jobs to one run.
    pub run_id: String,
    pub args: Vec<String>,
    /// Environment variable set from a Secret key: (env name, secret, key).
    pub env_from_secret: Option<(String, String, String)>,
    pub service_account: String,
    pub timeout: Duration,
    /// Also mount the host's log directory `/var/log/antrea` read-only at the same path (for
    /// `check`'s search of the logs). Antrea's agent DaemonSet mounts it as a `DirectoryOrCreate`
    /// hostPath (build/yamls/antrea.yml, `host-var-log-antrea`), so it exists on every node that
    /// runs the agent; `Directory` here never creates anything on the node.
    pub logs: bool,
    /// A barrier Job (`push-key --barrier`): its pod gets an emptyDir for the readiness file, a
    /// readinessProbe testing it, and its service account's token (to watch the rotation Lease
    /// for the write instant; `psk-guard-node` may only read that Lease).
    pub barrier: bool,
}

/// Where a barrier Job's pod says it is ready: a file in an emptyDir (the root file system is
/// read-only), tested by its readinessProbe.
pub const READY_DIR: &str = "/run/psk-guard";
pub const READY_FILE: &str = "/run/psk-guard/ready";
/// The binary in the psk-guard image (scripts/release; the image has nothing else, so the
/// readinessProbe execs it).
pub const IMAGE_BINARY: &str = "/usr/local/bin/psk-guard";
/// The barrier Job's emptyDir volume (the admission policy admits a writable mount of this name
/// only on an emptyDir).
pub const READY_VOLUME: &str = "psk-guard-ready";

/// The host's log directory, mounted by [`NodeJob::logs`] Jobs.
pub const LOG_DIR: &str = "/var/log/antrea";

/// The host's run directory, mounted by every Job.
pub const RUN_DIR: &str = "/var/run/antrea";

/// The hostPath volumes of `j`'s pods: (volume name, host path).
fn host_paths(j: &NodeJob) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("antrea-run", RUN_DIR)];
    if j.logs {
        v.push(("antrea-log", LOG_DIR));
    }
    v
}

/// The label value standing for a node: the first 16 hex digits of its name's SHA-256.
pub fn node_hash(node: &str) -> String {
    hex::encode(&sha2::Sha256::digest(node.as_bytes())[..8])
}

/// `psk-guard-<purpose>-<nonce>-<node hash>`: a DNS-1123 name of at most 52 characters (so the
/// Job controller's `job-name` label fits). `nonce` tells apart reruns for the same node.
pub fn job_name(purpose: &str, nonce: &str, node: &str) -> String {
    let purpose: String = purpose
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(16)
        .collect();
    let nonce: String = nonce
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(8)
        .collect();
    format!("psk-guard-{purpose}-{nonce}-{}", node_hash(node))
}

/// The name of the node Jobs' one container.
pub const CONTAINER: &str = "psk-guard";

/// A new nonce for [`job_name`]: 6 hex digits.
pub fn nonce() -> String {
    hex::encode(rand::random::<[u8; 3]>())
}

/// The Job manifest for `node`, named after `j.run_id`.
pub fn manifest(j: &NodeJob, node: &str) -> serde_json::Value {
    manifest_named(j, node, &job_name(j.purpose, &j.run_id, node))
}

/// The Job manifest for `node` named `name`. Node commands print a framed result
/// (`--result-frame`).
pub fn manifest_named(j: &NodeJob, node: &str, name: &str) -> serde_json::Value {
    let mut args = j.args.clone();
    args.push("--result-frame".into());
    let mut container = json!({
        "name": CONTAINER,
        "image": j.image,
        "args": args,
        "securityContext": {
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
    });
    let paths = host_paths(j);
    container["volumeMounts"] = paths
        .iter()
        .map(|(name, path)| json!({"name": name, "mountPath": path, "readOnly": true}))
        .collect();
    let volumes: serde_json::Value = paths
        .iter()
        .map(|(name, path)| json!({"name": name, "hostPath": {"path": path, "type": "Directory"}}))
        .collect();
    if let Some((env, secret, key)) = &j.env_from_secret {
        container["env"] =
            json!([{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}]);
    }
    let mut volumes = volumes;
    if j.barrier {
        add_readiness(&mut container, &mut volumes);
    }
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": j.namespace,
            "labels": {"app.kubernetes.io/name": "psk-guard", "psk-guard.io/run": j.run_id, "psk-guard.io/purpose": j.purpose, "psk-guard.io/node": node_hash(node)},
            "annotations": {"psk-guard.io/node-name": node},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": j.timeout.as_secs().max(1),
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "psk-guard", "psk-guard.io/run": j.run_id, "psk-guard.io/purpose": j.purpose}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "serviceAccountName": j.service_account,
                    // No API token, except for a barrier Job: it watches the rotation Lease for
                    // the write instant (psk-guard-node may read only that Lease).
                    "automountServiceAccountToken": j.barrier,
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    })
}

/// A barrier Job's readiness: the emptyDir for the file and the exec probe testing it. The
/// kubelet runs the probe every `periodSeconds` from the container's start and marks the pod
/// Ready only after it succeeded (pkg/kubelet/prober/worker.go: readiness starts as Failure).
fn add_readiness(container: &mut serde_json::Value, volumes: &mut serde_json::Value) {
    if let Some(m) = container["volumeMounts"].as_array_mut() {
        m.push(json!({"name": READY_VOLUME, "mountPath": READY_DIR}));
    }
    if let Some(v) = volumes.as_array_mut() {
        v.push(json!({"name": READY_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}));
    }
    container["readinessProbe"] = json!({
        "exec": {"command": [IMAGE_BINARY, "push-key", "--probe-ready", READY_FILE]},
        "periodSeconds": 1, "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": 3,
    });
}

/// The Jobs [`create_on_nodes`] created: (node, Job name, Job uid), and the nodes whose Job could
/// not be created.
pub struct Created {
    pending: Vec<(String, String, String)>,
    failed: Vec<(String, Outcome)>,
}

impl Created {
    /// The nodes whose Job could not be created, and why.
    pub fn not_created(&self) -> impl Iterator<Item = (&str, String)> {
        self.failed
            .iter()
            .map(|(n, o)| (n.as_str(), o.result().err().unwrap_or_default()))
    }
}

/// Runs `job` on every node in `nodes`, all created first (so they start together), then waits
/// for them through one watch of the run's Jobs, reads each one's log and deletes it. Never fails as a whole: each node gets an outcome.
pub async fn run_on_nodes(
    client: &Client,
    job: &NodeJob,
    nodes: &[String],
) -> Vec<(String, Outcome)> {
    let created = create_on_nodes(client, job, nodes).await;
    wait_on_nodes(client, job, created).await
}

/// Creates `job` on every node in `nodes`.
pub async fn create_on_nodes(client: &Client, job: &NodeJob, nodes: &[String]) -> Created {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &job.namespace);
    let mut created = vec![];
    let mut out = vec![];
    let nonce = nonce();
    for node in nodes {
        let name = job_name(job.purpose, &nonce, node);
        let manifest: Result<Job, _> = serde_json::from_value(manifest_named(job, node, &name));
        let res = match manifest {
            Ok(m) => jobs
                .create(&PostParams::default(), &m)
                .await
                .map_err(|e| ClusterError::api("create", format!("job {name}"), e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match res {
            Ok(j) => created.push((node.clone(), name, j.metadata.uid.unwrap_or_default())),
            Err(e) => out.push((node.clone(), Outcome::NotCreated(e))),
        }
    }
    Created {
        pending: created,
        failed: out,
    }
}

/// Waits for the Jobs of [`create_on_nodes`] to finish (each node gets an outcome), reads each
/// one's result and deletes it.
pub async fn wait_on_nodes(
    client: &Client,
    job: &NodeJob,
    created: Created,
) -> Vec<(String, Outcome)> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &job.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &job.namespace);
    let Created {
        pending: created,
        failed: mut out,
    } = created;
    let deadline = Instant::now() + job.timeout;
    // One watch of this run's Jobs for every node, not a poll per Job (see `super::watch`).
    let mut watched = run_watch(jobs.clone(), job);
    // A pod that cannot start shows only in Events: watched too, by reason.
    let (mut refused, mut unmounted) = event_watches(client, job);
    let mut pending = created;
    while !pending.is_empty() {
        let mut still = vec![];
        for (node, name, uid) in pending {
            let outcome = match watched.get(&name) {
                _ if !watched.synced() => None,
                Some(j) if j.metadata.uid.as_deref() == Some(uid.as_str()) => {
                    let st = j.status.clone().unwrap_or_default();
                    if st.succeeded.unwrap_or(0) > 0 {
                        Some(Outcome::Succeeded(result_of(&pods, &uid).await))
                    } else if past_deadline(&st) {
                        // The controller counts the pod it deleted as failed: with none, no pod
                        // was ever created.
                        let had_pod = st.failed.unwrap_or(0) > 0;
                        Some(timed_out(&refused, &unmounted, job, &name, &uid, had_pod))
                    } else if st.failed.unwrap_or(0) > 0 {
                        Some(Outcome::Failed(result_of(&pods, &uid).await))
                    } else {
                        None
                    }
                }
                _ => Some(Outcome::NotCreated(format!("job {name} disappeared"))),
            }
            .or_else(|| {
                not_started(&refused, &unmounted, job, &name, &uid, false).map(Outcome::NotStarted)
            });
            match outcome {
                Some(o) => {
                    delete_job(&jobs, &name).await;
                    out.push((node, o));
                }
                None => still.push((node, name, uid)),
            }
        }
        pending = still;
        let changed = pending.is_empty()
            || tokio::select! {
                c = watched.changed(deadline) => c,
                c = refused.changed(deadline) => c,
                c = unmounted.changed(deadline) => c,
            };
        if !changed {
            for (node, name, uid) in pending.drain(..) {
                let had_pod = watched.get(&name).is_some_and(|j| {
                    j.status
                        .as_ref()
                        .is_some_and(|s| s.active.unwrap_or(0) + s.failed.unwrap_or(0) > 0)
                });
                let outcome = timed_out(&refused, &unmounted, job, &name, &uid, had_pod);
                delete_job(&jobs, &name).await;
                out.push((node, outcome));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether the Job controller ended the Job at its `activeDeadlineSeconds`: a `FailureTarget` or
/// `Failed` condition with reason `DeadlineExceeded` (pkg/controller/job/job_controller.go
/// `pastActiveDeadline`; it deletes the pod and counts it failed, or none when no pod was ever
/// created). That is the node's timeout, not a failure of psk-guard there. Its clock starts when
/// the Job is created, [`wait_on_nodes`]'s after every Job is, so it usually comes first.
fn past_deadline(st: &k8s_openapi::api::batch::v1::JobStatus) -> bool {
    st.conditions.iter().flatten().any(|c| {
        (c.type_ == "FailureTarget" || c.type_ == "Failed")
            && c.status == "True"
            && c.reason.as_deref() == Some("DeadlineExceeded")
    })
}

/// [`Readiness::Waiting`] of a Job without a pod.
const NO_POD: &str = "no pod yet";

/// Where one barrier Job's pod stands.
enum Readiness {
    Ready,
    /// The pod finished (phase Succeeded or Failed) without having been Ready.
    Ended(String),
    /// Not (yet) Ready: the pod's phase, or that there is no pod yet.
    Waiting(String),
}

/// The readiness of the pod of the Job with uid `job_uid` (its controller ownerReference).
fn readiness(pods: &Watched<Pod>, job_uid: &str) -> Readiness {
    let pod = pods.objects().find(|p| {
        p.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == job_uid && o.controller == Some(true))
    });
    let Some(pod) = pod else {
        return Readiness::Waiting(NO_POD.into());
    };
    let st = pod.status.clone().unwrap_or_default();
    let phase = st.phase.unwrap_or_else(|| "Pending".into());
    let ready = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    match phase.as_str() {
        "Succeeded" | "Failed" => Readiness::Ended(phase),
        _ if ready => Readiness::Ready,
        _ => Readiness::Waiting(format!("{phase}, not Ready")),
    }
}

/// The barrier: waits until the pod of every Job of `created` is Ready (its readinessProbe
/// passed), through one watch of the run's pods. `Err` names every node that is not, with why:
/// its Job could not be created, its pod cannot start (the Events say), its pod ended before it
/// was Ready (with the reason from its log), or it was not Ready by `deadline`. Once one node
/// has failed, the wait goes on until every other node is Ready or has failed too (or
/// `deadline`), so that every failed node is named at once, not only the first one seen: no
/// instant is announced before this returns `Ok`, so no node writes meanwhile. Reads only.
pub async fn wait_ready(
    client: &Client,
    job: &NodeJob,
    created: &Created,
    deadline: Instant,
) -> Result<(), Vec<(String, String)>> {
    // Failures are final (a pod that ended, an Event that says it cannot start): each node's
    // reason is read once.
    let mut bad: std::collections::BTreeMap<String, String> = created
        .not_created()
        .map(|(n, why)| (n.to_owned(), why))
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &job.namespace);
    // The run's pods carry its labels too (the Job's pod template).
    let mut pods = run_watch(pods_api.clone(), job);
    let (mut refused, mut unmounted) = event_watches(client, job);
    loop {
        let mut waiting = vec![];
        for (node, name, uid) in &created.pending {
            if bad.contains_key(node) {
                continue;
            }
            let why = match readiness(&pods, uid) {
                Readiness::Ready if pods.synced() => continue,
                Readiness::Ended(phase) => {
                    let log = result_of(&pods_api, uid).await;
                    bad.insert(
                        node.clone(),
                        format!("its pod ended ({phase}) before it was ready: {log}"),
                    );
                    continue;
                }
                Readiness::Ready => "not listed yet".to_owned(),
                Readiness::Waiting(why) => why,
            };
            match not_started(&refused, &unmounted, job, name, uid, false) {
                Some(ns) => {
                    bad.insert(node.clone(), format!("its pod cannot start: {ns}"));
                }
                None => waiting.push((node.clone(), why)),
            }
        }
        if waiting.is_empty() {
            return if bad.is_empty() {
                Ok(())
            } else {
                Err(bad.into_iter().collect())
            };
        }
        let changed = tokio::select! {
            c = pods.changed(deadline) => c,
            c = refused.changed(deadline) => c,
            c = unmounted.changed(deadline) => c,
        };
        if !changed {
            // A refusal that may have cleared (see `RefusedBy::lasts`) is the best account of a pod
            // that never came.
            let late = waiting.into_iter().map(|(n, why)| {
                // Unless a pod did come after it.
                let refusal = created
                    .pending
                    .iter()
                    .find(|(node, _, _)| *node == n)
                    .filter(|(_, _, uid)| matches!(readiness(&pods, uid), Readiness::Waiting(w) if w == NO_POD))
                    .and_then(|(_, name, uid)| {
                        not_started(&refused, &unmounted, job, name, uid, true)
                    });
                let why = match refusal {
                    Some(ns) => format!("its pod was not ready in time: {ns}"),
                    None => format!("its pod was not ready in time ({why})"),
                };
                (n, why)
            });
            return Err(bad.into_iter().chain(late).collect());
        }
    }
}

/// Deletes every Job of `created` (a barrier given up): their pods go with them.
pub async fn abandon(client: &Client, job: &NodeJob, created: Created) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), &job.namespace);
    for (_, name, _) in &created.pending {
        delete_job(&jobs, name).await;
    }
}

/// One watch of the objects (Jobs, or their pods) labelled with `job`'s run and purpose.
fn run_watch<K>(api: Api<K>, job: &NodeJob) -> Watched<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let selector = format!(
        "psk-guard.io/run={},psk-guard.io/purpose={}",
        job.run_id, job.purpose
    );
    Watched::new(
        api,
        kube::runtime::watcher::Config::default().labels(&selector),
    )
}

/// The watches of the Job namespace's `FailedCreate` and `FailedMount` Events (see
/// [`not_started`]).
fn event_watches(client: &Client, job: &NodeJob) -> (Watched<Event>, Watched<Event>) {
    let events: Api<Event> = Api::namespaced(client.clone(), &job.namespace);
    (
        Watched::new(events.clone(), events_config("FailedCreate")),
        Watched::new(events, events_config("FailedMount")),
    )
}

/// Deletes a finished (or abandoned) Job and, in the background, its pod.
async fn delete_job(jobs: &Api<Job>, name: &str) {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    if let Err(e) = jobs.delete(name, &dp).await {
        tracing::warn!(error = %e, job = %name, "could not delete a finished job");
    }
}

/// Longest Event message kept (the rest is cut).
const MAX_EVENT_MESSAGE: usize = 512;

/// The permissions [`run_on_nodes`] uses to see why a Job's pod cannot start (without them, the
/// wait runs to the timeout).
pub const EVENT_PERMISSIONS: [super::Permission; 2] = [
    super::Permission::any("list", "", "events"),
    super::Permission::any("watch", "", "events"),
];

/// A watch of the Job namespace's Events with `reason`.
fn events_config(reason: &str) -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().fields(&format!("reason={reason}"))
}

/// The message of `e`, escaped and bounded.
fn event_message(e: &Event) -> String {
    let m = e.message.as_deref().unwrap_or("");
    crate::report::sanitize::bounded(m, MAX_EVENT_MESSAGE).into_owned()
}

/// The outcome of a Job that ran out of time: why its pod never started, when the Events say so
/// (a refusal that might have cleared included, unless a pod did come: `had_pod`), else a
/// timeout.
fn timed_out(
    refused: &Watched<Event>,
    unmounted: &Watched<Event>,
    job: &NodeJob,
    name: &str,
    job_uid: &str,
    had_pod: bool,
) -> Outcome {
    not_started(refused, unmounted, job, name, job_uid, !had_pod)
        .map_or(Outcome::TimedOut, Outcome::NotStarted)
}

/// Why the pod of Job `name` (uid `job_uid`) cannot start, when the Events say so: the Job
/// controller's `FailedCreate` on the Job (admission refused the pod; it retries for ever; a
/// refusal that may clear counts only `at_deadline`, see [`RefusedBy::lasts`]), or the kubelet's
/// `FailedMount` for one of the Job's hostPath volumes on its pod (named `<job>-<suffix>` by the
/// Job controller's generateName).
fn not_started(
    refused: &Watched<Event>,
    unmounted: &Watched<Event>,
    job: &NodeJob,
    name: &str,
    job_uid: &str,
    at_deadline: bool,
) -> Option<NotStarted> {
    if let Some(e) = refused
        .objects()
        .find(|e| e.involved_object.uid.as_deref() == Some(job_uid))
    {
        let message = event_message(e);
        let by = RefusedBy::of(&message);
        if at_deadline || by.lasts() {
            return Some(NotStarted::Refused { message, by });
        }
    }
    let pod_prefix = format!("{name}-");
    unmounted.objects().find_map(|e| {
        let o = &e.involved_object;
        let ours = o.kind.as_deref() == Some("Pod")
            && o.name
                .as_deref()
                .is_some_and(|n| n.starts_with(&pod_prefix));
        let message = event_message(e);
        let (_, path) = host_paths(job)
            .into_iter()
            .find(|(v, _)| ours && message.contains(&format!("volume \"{v}\"")))?;
        Some(NotStarted::HostPath {
            path: path.to_owned(),
            message,
        })
    })
}

/// Largest pod log read (a node report of thousands of tunnels fits easily).
const MAX_LOG_BYTES: i64 = 16 << 20;

/// The node's result from its Job's pod log: the JSON text of the log's result frame, or, when
/// there is none, the reason (from the log's last lines, sanitized). The pod is found by the
/// Job's uid (`batch.kubernetes.io/controller-uid`), never by name: a pod of an earlier Job of
/// the same name may linger until the garbage collector removes it.
async fn result_of(pods: &Api<Pod>, job_uid: &str) -> String {
    let lp = ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={job_uid}"));
    let log = match pods.list(&lp).await {
        Ok(list) => match list.items.first().and_then(|p| p.metadata.name.clone()) {
            Some(pod) => {
                // Named: a pod with a second container (a sidecar a mutating webhook injected)
                // answers a log request without one with 400 (pkg/registry/core/pod/strategy.go
                // `ValidateContainer`).
                let lp = LogParams {
                    container: Some(CONTAINER.into()),
                    limit_bytes: Some(MAX_LOG_BYTES),
                    ..LogParams::default()
                };
                match pods.logs(&pod, &lp).await {
                    Ok(l) => l,
                    Err(e) => return format!("its log could not be read: {e}"),
                }
            }
            None => return "its pod is gone".into(),
        },
        Err(e) => return format!("its pod could not be listed: {e}"),
    };
    match super::frame::decode(&log) {
        Ok(v) => v.to_string(),
        Err(why) => why,
    }
}

impl Outcome {
    /// The node's report (from its result frame), or why there is none.
    pub fn result(&self) -> Result<serde_json::Value, String> {
        match self {
            Outcome::Succeeded(r) | Outcome::Failed(r) => {
                serde_json::from_str::<serde_json::Value>(r)
                    .ok()
                    .filter(serde_json::Value::is_object)
                    .ok_or_else(|| r.clone())
            }
            Outcome::TimedOut => Err("the Job timed out".into()),
            Outcome::NotCreated(e) => Err(format!("the Job could not be created: {e}")),
            Outcome::NotStarted(why) => Err(format!("the Job never started: {why}")),
        }
    }
}

/// What a server-side dry run of creating a node Job tells: the Job was admitted (with the
/// admission warnings the answer carried), or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted {
        warnings: Vec<String>,
    },
    /// Refused with HTTP `code`: admission (a ValidatingAdmissionPolicy or a webhook: 403 or 422,
    /// its message naming the policy), validation (422), a ResourceQuota on Jobs (403), or a
    /// webhook that cannot be asked without side effects (400 "does not support dry run").
    Refused {
        code: u16,
        message: String,
    },
}

/// Longest admission message or warning kept (the rest is cut).
const MAX_ADMISSION_MESSAGE: usize = 512;
/// The most of a refused dry run's response body read (a Status is a few hundred bytes).
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Asks the API server to create Job `manifest` in `namespace` with `dryRun=All`: validation and
/// every admission step run, nothing is stored (k8s.io/apiserver pkg/endpoints/handlers/create.go).
/// A dry run is authorized as the same verb, `create jobs` (k8s.io/apiserver pkg/endpoints/request/
/// requestinfo.go derives the verb from the HTTP method; `dryRun` is a CreateOptions field, not
/// part of the authorization attributes). kube's `Api::create` drops the response headers, and
/// admission warnings come only in `Warning` headers: so the request is sent raw.
pub async fn dry_run_create(
    client: &Client,
    namespace: &str,
    manifest: &serde_json::Value,
) -> Result<Admission, kube::Error> {
    let url = <Job as kube::Resource>::url_path(&(), Some(namespace));
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let body = serde_json::to_vec(manifest).map_err(kube::Error::SerdeError)?;
    let req = kube::core::Request::new(url)
        .create(&pp, body)
        .map_err(kube::Error::BuildRequest)?;
    let res = client.send(req.map(kube::client::Body::from)).await?;
    let code = res.status().as_u16();
    let warnings: Vec<String> = res
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(warning_texts)
        .map(|w| crate::report::sanitize::bounded(&w, MAX_ADMISSION_MESSAGE).into_owned())
        .collect();
    if (200..300).contains(&code) {
        return Ok(Admission::Admitted { warnings });
    }
    // The refusal's body is the server's to shape: read at most MAX_REFUSAL_BODY of it.
    use http_body_util::BodyExt;
    let bytes = match http_body_util::Limited::new(res.into_body(), MAX_REFUSAL_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => b"(a response body too large or cut off)".to_vec(),
    };
    let text = String::from_utf8_lossy(&bytes);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    Ok(Admission::Refused {
        code,
        message: crate::report::sanitize::bounded(&message, MAX_ADMISSION_MESSAGE).into_owned(),
    })
}

/// The texts of one `Warning` header value: `<code> <agent> "<text>"`, several separated by
/// commas, `\` escaping the next character in the quoted text (RFC 7234 section 5.5, as
/// k8s.io/apimachinery pkg/util/net/http.go `ParseWarningHeaders` reads them). A value that does
/// not parse is kept whole.
pub fn warning_texts(header: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = header.trim();
    while !rest.is_empty() {
        let Some(quote) = rest.find('"') else {
            out.push(rest.to_owned());
            break;
        };
        let mut text = String::new();
        let mut chars = rest[quote + 1..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => text.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = Some(quote + 1 + i + 1);
                    break;
                }
                c => text.push(c),
            }
        }
        let Some(end) = end else {
            out.push(rest.to_owned());
            break;
        };
        out.push(text);
        rest = rest[end..].trim_start_matches([' ', ',']);
    }
    out
}

/// Whether an admission warning is Pod Security's about a pod template (pod-security-admission
/// admission/admission.go `EvaluatePod`: `would violate PodSecurity "<level>:<version>": …`).
pub fn is_pod_security_warning(w: &str) -> bool {
    w.contains("would violate PodSecurity")
}

#[cfg(test)]
mod tests {
    use super::warning_texts;

    #[test]
    fn warning_headers() {
        assert_eq!(
            warning_texts(
                r#"299 - "would violate PodSecurity \"baseline:latest\": hostPath volumes (volume \"antrea-run\")""#
            ),
            vec![
                r#"would violate PodSecurity "baseline:latest": hostPath volumes (volume "antrea-run")"#
            ]
        );
        assert_eq!(
            warning_texts(r#"299 - "a, b", 299 - "c\\d""#),
            vec!["a, b", r"c\d"]
        );
        assert_eq!(warning_texts("299 - \"open"), vec!["299 - \"open"]);
        assert_eq!(warning_texts("garbage"), vec!["garbage"]);
    }
}
