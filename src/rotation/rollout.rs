//! Restarting the antrea-agent DaemonSet so every agent reads the Secret again: a pod-template
//! annotation (RollingUpdate) or pod deletion (OnDelete), then following the rollout until
//! `observedGeneration >= generation` and updated == available == desired, with a progress
//! deadline (the rollout is stuck when no node advanced for that long, like a Deployment's
//! `progressDeadlineSeconds`; a long rollout that keeps advancing is never cut off) and progress
//! (a bar on a TTY, lines otherwise).

use std::time::Duration;

use kube::runtime::watcher;
use tokio::time::Instant;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use crate::cluster::lease::Held;
use crate::cluster::watch::Watched;
use crate::cluster::ClusterError;

pub const RESTART_ANNOTATION: &str = "psk-guard.io/rotation";

/// The DaemonSet's own pods: its full selector and a controller ownerReference to it.
pub async fn agent_pods(
    client: &Client,
    namespace: &str,
    ds: &DaemonSet,
) -> Result<Vec<Pod>, ClusterError> {
    crate::cluster::health::agent_pods(client, namespace, ds).await
}

/// How a rollout is followed: its progress deadline, whether progress is drawn as a bar (a TTY),
/// and the Lease checked before each write.
pub struct Pace<'a> {
    pub progress_deadline: Duration,
    pub tty: bool,
    pub held: &'a Held,
}

/// Whether the DaemonSet's update strategy is `OnDelete` (its pods are replaced only when deleted).
pub fn on_delete(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete")
}

/// Restarts every agent once for rotation `id` and waits for the rollout, for as long as it
/// advances at least once per `progress_deadline`.
pub async fn restart(
    client: &Client,
    namespace: &str,
    ds: &DaemonSet,
    id: &str,
    nodes: &[String],
    pace: Pace<'_>,
) -> Result<(), ClusterError> {
    let Pace {
        progress_deadline,
        tty,
        held,
    } = pace;
    let name = ds.metadata.name.clone().unwrap_or_default();
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let on_delete = on_delete(ds);
    held.check()?;
    let patch =
        json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: id}}}}});
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map_err(|e| ClusterError::api("patch", format!("daemonset {namespace}/{name}"), e))?;
    if on_delete {
        // An annotation rolls nothing under OnDelete: evict the agents, in batches.
        super::ondelete::evict_in_batches(
            client,
            namespace,
            ds,
            id,
            nodes,
            progress_deadline,
            held,
        )
        .await?;
    }
    let mut deadline = Instant::now() + progress_deadline;
    let quiet = crate::report::is_quiet();
    let mut last = None;
    // Watches, not polls: the DaemonSet by name (a name-scoped list/watch), and its pods by its
    // selector (whose Ready condition tells the excluded-nodes case and the stuck nodes).
    let mut ds_watch = Watched::new(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    );
    let mut pod_watch = watch_agent_pods(client, namespace, ds);
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    loop {
        if let (Some(d), true) = (ds_watch.get(&name), pod_watch.synced()) {
            let generation = d.metadata.generation.unwrap_or(0);
            let st = d.status.clone().unwrap_or_default();
            let desired = st.desired_number_scheduled;
            let updated = st.updated_number_scheduled.unwrap_or(0);
            let available = st.number_available.unwrap_or(0);
            if last != Some((updated, available)) {
                show_progress(quiet, tty, updated, desired, available);
                last = Some((updated, available));
                deadline = Instant::now() + progress_deadline;
            }
            let pods: Vec<&Pod> = pod_watch.objects().filter(|p| owned_by(p, &uid)).collect();
            if st.observed_generation.unwrap_or(0) >= generation
                && ((updated == desired && available == desired)
                    || ((nodes.len() as i32) < desired && targets_done(&pods, id, nodes)))
            {
                if tty && !quiet {
                    eprintln!();
                }
                return Ok(());
            }
        }
        let changed = tokio::select! {
            c = ds_watch.changed(deadline) => c,
            c = pod_watch.changed(deadline) => c,
        };
        if !changed && Instant::now() >= deadline {
            if tty && !quiet {
                eprintln!();
            }
            let (updated, available) = last.unwrap_or_default();
            let desired = ds_watch
                .get(&name)
                .and_then(|d| d.status.as_ref())
                .map_or(0, |s| s.desired_number_scheduled);
            // Name the nodes whose agent has not come back (Ready) on the new template: the
            // DaemonSet controller counts a new pod as updated before it is Ready.
            let done: Vec<String> = pod_watch
                .objects()
                .filter(|p| owned_by(p, &uid) && on_template(p, id) && pod_ready(p))
                .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                .collect();
            let stuck: Vec<&str> = nodes
                .iter()
                .filter(|n| !done.contains(n))
                .map(String::as_str)
                .collect();
            let seen = match (&ds_watch.last_error, ds_watch.synced()) {
                (Some(e), false) => format!("; the DaemonSet could not be watched: {e}"),
                _ => String::new(),
            };
            return Err(ClusterError::Timeout {
                what: format!(
                    "progress of the rollout of daemonset {namespace}/{name} ({updated}/{desired} updated, {available} available; antrea-agent not restarted on: {}{seen}); check those nodes, then rerun psk-guard rotate to resume",
                    if stuck.is_empty() { "(unknown)".to_owned() } else { stuck.join(", ") }
                ),
                secs: progress_deadline.as_secs(),
            });
        }
    }
}

/// The rollout's progress: a bar on a TTY, a line otherwise, nothing with --quiet.
fn show_progress(quiet: bool, tty: bool, updated: i32, desired: i32, available: i32) {
    if quiet {
        return;
    }
    if tty {
        let width = 30usize;
        let filled = if desired > 0 {
            (updated.max(0) as usize * width) / desired as usize
        } else {
            width
        };
        eprint!(
            "\rpsk-guard rotate: rollout [{}{}] {updated}/{desired} updated, {available} available ",
            "#".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width))
        );
    } else {
        eprintln!("psk-guard rotate: rollout {updated}/{desired} updated, {available} available");
    }
}

/// A watch of the pods the DaemonSet's selector selects (preflight refused an empty selector);
/// keep only its own with [`owned_by`].
pub(super) fn watch_agent_pods(client: &Client, namespace: &str, ds: &DaemonSet) -> Watched<Pod> {
    let sel = ds
        .spec
        .as_ref()
        .and_then(|s| crate::cluster::health::selector_string(&s.selector))
        .unwrap_or_default();
    Watched::new(
        Api::<Pod>::namespaced(client.clone(), namespace),
        watcher::Config::default().labels(&sel),
    )
}

/// Whether the pod's controller is the DaemonSet with `uid` (see `health::agent_pods`).
pub(super) fn owned_by(p: &Pod, uid: &str) -> bool {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "DaemonSet")
}

/// Whether every target node's agent pod is on rotation `id`'s template and Ready: the rollout
/// is done for the nodes that matter when some nodes were excluded (their agents keep the
/// DaemonSet's counters below desired).
fn targets_done(pods: &[&Pod], id: &str, nodes: &[String]) -> bool {
    nodes.iter().all(|n| {
        pods.iter().any(|p| {
            let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(n);
            on_node && on_template(p, id) && pod_ready(p)
        })
    })
}

/// Whether the pod runs the template of rotation `id` (its restart annotation).
pub(super) fn on_template(p: &Pod, id: &str) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTART_ANNOTATION))
        .map(String::as_str)
        == Some(id)
}

fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}
