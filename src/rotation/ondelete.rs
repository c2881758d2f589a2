//! The roll-out of an `OnDelete` DaemonSet, where the controller replaces a pod only once it is
//! gone: the agents not yet on this rotation's template are evicted in batches of the
//! DaemonSet's `maxUnavailable` (default 1; a percentage of the desired pods rounded up, as the
//! DaemonSet controller's `UnavailableCount` does), through the Eviction API (`pods/eviction`,
//! `policy/v1`) so PodDisruptionBudgets are honoured (a 429 is retried with backoff), and each
//! batch's replacements must be Ready before the next batch starts (waited for through a watch of
//! the DaemonSet's pods). A pod that stays
//! Terminating (its node unreachable, so no kubelet confirms the deletion) is reported by name
//! once no progress was made for the progress deadline; it is never waited on forever.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::Client;
use serde_json::json;
use tokio::time::Instant;

use super::rollout::{agent_pods, on_template, owned_by, watch_agent_pods};
use crate::cluster::lease::Held;
use crate::cluster::ClusterError;

/// How many agents may be down at once: the DaemonSet's `maxUnavailable` (an int, or a
/// percentage of `desired` rounded up), at least 1.
pub fn batch_size(ds: &DaemonSet, desired: usize) -> usize {
    let max = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    let n = match max {
        None => 1,
        Some(IntOrString::Int(i)) => (*i).max(0) as usize,
        Some(IntOrString::String(s)) => match s.strip_suffix('%').map(str::parse::<usize>) {
            Some(Ok(pct)) => (desired * pct).div_ceil(100),
            _ => s.parse().unwrap_or(1),
        },
    };
    n.max(1)
}

pub fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

/// One agent pod to replace: (node, pod name, pod uid).
type Stale = (String, String, String);

/// Evicts the target nodes' agents that are not on rotation `id`'s template, in batches, each
/// batch waited for until its replacements are Ready.
pub async fn evict_in_batches(
    client: &Client,
    namespace: &str,
    ds: &DaemonSet,
    id: &str,
    nodes: &[String],
    progress_deadline: Duration,
    held: &Held,
) -> Result<(), ClusterError> {
    let pods = agent_pods(client, namespace, ds).await?;
    let stale: Vec<Stale> = pods
        .iter()
        .filter(|p| !on_template(p, id))
        .filter_map(|p| {
            let node = node_of(p)?;
            nodes.iter().any(|n| n == node).then(|| {
                (
                    node.to_owned(),
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.uid.clone().unwrap_or_default(),
                )
            })
        })
        .collect();
    let desired = ds
        .status
        .as_ref()
        .map(|s| s.desired_number_scheduled.max(0) as usize)
        .unwrap_or(nodes.len());
    let size = batch_size(ds, desired.max(nodes.len()));
    for batch in stale.chunks(size) {
        let names: Vec<&str> = batch.iter().map(|s| s.0.as_str()).collect();
        crate::report::progress(
            "rotate",
            &format!(
                "evicting the antrea-agent on {} (batches of {size})",
                names.join(", ")
            ),
        );
        for (node, pod, _) in batch {
            evict(client, namespace, node, pod, progress_deadline, held).await?;
        }
        wait_replaced(client, namespace, ds, id, batch, progress_deadline).await?;
    }
    Ok(())
}

/// Evicts one pod through `pods/eviction`. A 429 (a PodDisruptionBudget allows no disruption
/// now) is retried with backoff until the progress deadline; a pod already gone is fine.
async fn evict(
    client: &Client,
    namespace: &str,
    node: &str,
    pod: &str,
    progress_deadline: Duration,
    held: &Held,
) -> Result<(), ClusterError> {
    let what = format!("pod {namespace}/{pod} (antrea-agent on {node})");
    let body = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": namespace},
    });
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| ClusterError::Precondition(format!("building an eviction: {e}")))?;
    let since = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        held.check()?;
        let req = kube::core::Request::new(format!(
            "/api/v1/namespaces/{namespace}/pods/{pod}/eviction"
        ))
        .create(&PostParams::default(), bytes.clone())
        .map_err(|e| ClusterError::Precondition(format!("building an eviction: {e}")))?;
        let err = match client.request::<serde_json::Value>(req).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
            Err(e) => e,
        };
        let blocked = matches!(&err, kube::Error::Api(s) if s.code == 429);
        if !crate::cluster::transient(&err) {
            return Err(ClusterError::api("create eviction of", what, err));
        }
        if since.elapsed() >= progress_deadline {
            return Err(ClusterError::Timeout {
                what: format!(
                    "the eviction of {what}{}; check the budget and the node, then rerun psk-guard rotate to resume",
                    if blocked { ", refused by a PodDisruptionBudget (429)" } else { "" }
                ),
                secs: progress_deadline.as_secs(),
            });
        }
        tracing::info!(error = %err, "eviction of {pod} refused; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Waits until every node of `batch` runs an agent pod on rotation `id`'s template, other than
/// the evicted one, and Ready. Fails, naming the nodes, once the batch made no progress for the
/// progress deadline, saying which old pods are stuck Terminating.
async fn wait_replaced(
    client: &Client,
    namespace: &str,
    ds: &DaemonSet,
    id: &str,
    batch: &[Stale],
    progress_deadline: Duration,
) -> Result<(), ClusterError> {
    let mut last_done = 0;
    let mut since = Instant::now();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    // A watch of the DaemonSet's pods, not a list every 250 ms.
    let mut watched = watch_agent_pods(client, namespace, ds);
    loop {
        let pods: Vec<&Pod> = watched.objects().filter(|p| owned_by(p, &uid)).collect();
        let replaced = |(node, _, uid): &Stale| {
            pods.iter().any(|p| {
                node_of(p) == Some(node)
                    && p.metadata.uid.as_deref() != Some(uid)
                    && on_template(p, id)
                    && ready(p)
            })
        };
        let waiting: Vec<&Stale> = batch.iter().filter(|s| !replaced(s)).collect();
        if watched.synced() && waiting.is_empty() {
            return Ok(());
        }
        if batch.len() - waiting.len() > last_done {
            last_done = batch.len() - waiting.len();
            since = Instant::now();
        }
        let deadline = since + progress_deadline;
        if Instant::now() >= deadline {
            return Err(stuck(&waiting, &pods, progress_deadline));
        }
        watched.changed(deadline).await;
    }
}

/// The error for a batch whose replacements did not come: which old pods are stuck Terminating.
fn stuck(waiting: &[&Stale], pods: &[&Pod], progress_deadline: Duration) -> ClusterError {
    let why: Vec<String> = waiting
        .iter()
        .map(|(node, pod, uid)| {
            let terminating = pods.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(uid.as_str())
                    && p.metadata.deletion_timestamp.is_some()
            });
            if terminating {
                format!("{node} (pod {pod} is stuck Terminating: is the node unreachable?)")
            } else {
                format!("{node} (no Ready replacement of pod {pod})")
            }
        })
        .collect();
    ClusterError::Timeout {
        what: format!(
            "the antrea-agent replacements on {}; check those nodes (or leave them out with --exclude-node), then rerun psk-guard rotate to resume",
            why.join(", ")
        ),
        secs: progress_deadline.as_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(max: Option<serde_json::Value>) -> DaemonSet {
        let mut v = json!({"metadata": {"name": "a"}, "spec": {"selector": {}, "template": {},
            "updateStrategy": {"type": "OnDelete"}}});
        if let Some(m) = max {
            v["spec"]["updateStrategy"]["rollingUpdate"] = json!({"maxUnavailable": m});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn batches_follow_max_unavailable_like_the_controller() {
        assert_eq!(batch_size(&ds(None), 10), 1);
        assert_eq!(batch_size(&ds(Some(json!(3))), 10), 3);
        assert_eq!(batch_size(&ds(Some(json!(0))), 10), 1);
        // Percentages of the desired pods, rounded up (intstr.GetScaledValueFromIntOrPercent).
        assert_eq!(batch_size(&ds(Some(json!("25%"))), 10), 3);
        assert_eq!(batch_size(&ds(Some(json!("50%"))), 4), 2);
        assert_eq!(batch_size(&ds(Some(json!("1%"))), 3), 1);
    }
}
