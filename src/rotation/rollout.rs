//! Restarting the antrea-agent DaemonSet so every agent reads the Secret again: a pod-template
//! annotation (RollingUpdate) or pod deletion (OnDelete), then following the rollout until
//! `observedGeneration >= generation` and updated == available == desired, with a progress
//! deadline (the rollout is stuck when no node advanced for that long, like a Deployment's
//! `progressDeadlineSeconds`; a long rollout that keeps advancing is never cut off) and progress
//! (a bar on a TTY, lines otherwise).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use crate::cluster::lease::Held;
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
    loop {
        let d = crate::cluster::retry("reading the DaemonSet", || api.get(&name))
            .await
            .map_err(|e| ClusterError::api("get", format!("daemonset {namespace}/{name}"), e))?;
        let generation = d.metadata.generation.unwrap_or(0);
        let st = d.status.unwrap_or_default();
        let desired = st.desired_number_scheduled;
        let updated = st.updated_number_scheduled.unwrap_or(0);
        let available = st.number_available.unwrap_or(0);
        if last != Some((updated, available)) {
            if quiet {
                // --quiet: no bar, no lines.
            } else if tty {
                let width = 30usize;
                let filled = if desired > 0 {
                    (updated as usize * width) / desired as usize
                } else {
                    width
                };
                eprint!("\rpsk-guard rotate: rollout [{}{}] {updated}/{desired} updated, {available} available ", "#".repeat(filled), " ".repeat(width - filled.min(width)));
            } else {
                eprintln!(
                    "psk-guard rotate: rollout {updated}/{desired} updated, {available} available"
                );
            }
            last = Some((updated, available));
            deadline = Instant::now() + progress_deadline;
        }
        if st.observed_generation.unwrap_or(0) >= generation
            && ((updated == desired && available == desired)
                || ((nodes.len() as i32) < desired
                    && targets_done(client, namespace, ds, id, nodes).await))
        {
            if tty && !quiet {
                eprintln!();
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            if tty && !quiet {
                eprintln!();
            }
            // Name the nodes whose agent has not come back (Ready) on the new template: the
            // DaemonSet controller counts a new pod as updated before it is Ready.
            let pods = agent_pods(client, namespace, ds).await.unwrap_or_default();
            let done: Vec<String> = pods
                .iter()
                .filter(|p| on_template(p, id) && pod_ready(p))
                .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                .collect();
            let stuck: Vec<&str> = nodes
                .iter()
                .filter(|n| !done.contains(n))
                .map(String::as_str)
                .collect();
            return Err(ClusterError::Timeout {
                what: format!(
                    "progress of the rollout of daemonset {namespace}/{name} ({updated}/{desired} updated, {available} available; antrea-agent not restarted on: {}); check those nodes, then rerun psk-guard rotate to resume",
                    if stuck.is_empty() { "(unknown)".to_owned() } else { stuck.join(", ") }
                ),
                secs: progress_deadline.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every target node's agent pod is on rotation `id`'s template and Ready: the rollout
/// is done for the nodes that matter when some nodes were excluded (their agents keep the
/// DaemonSet's counters below desired).
async fn targets_done(
    client: &Client,
    namespace: &str,
    ds: &DaemonSet,
    id: &str,
    nodes: &[String],
) -> bool {
    let Ok(pods) = agent_pods(client, namespace, ds).await else {
        return false;
    };
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
