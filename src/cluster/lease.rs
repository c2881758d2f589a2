//! The `coordination.k8s.io/v1` Lease that makes a rotation exclusive: taken with a
//! `resourceVersion` precondition, renewed while the run lasts, released at the end. A Lease whose
//! holder stopped renewing expires and may be taken over (a crashed run's resume).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

use super::ClusterError;

pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

fn micro_now() -> String {
    let now = std::time::SystemTime::now();
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    let base = super::rfc3339(now);
    format!("{}.{micros:06}Z", base.trim_end_matches('Z'))
}

fn spec(holder: &str, duration: Duration, acquire: Option<String>) -> serde_json::Value {
    json!({
        "holderIdentity": holder,
        "leaseDurationSeconds": duration.as_secs(),
        "acquireTime": acquire.unwrap_or_else(micro_now),
        "renewTime": micro_now(),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Takes the Lease `name` for `holder`, or fails naming the current holder.
pub async fn acquire(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
    duration: Duration,
) -> Result<LeaseGuard, ClusterError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let what = format!("lease {namespace}/{name}");
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| ClusterError::api("get", &what, e))?;
    match existing {
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "psk-guard"}},
                "spec": spec(holder, duration, None),
            }))
            .map_err(|e| ClusterError::Precondition(format!("building the lease: {e}")))?;
            api.create(&PostParams::default(), &lease).await.map_err(|e| match &e {
                kube::Error::Api(s) if s.is_already_exists() || s.is_conflict() => {
                    ClusterError::Precondition(format!("another psk-guard rotation took {what} at the same moment; try again later"))
                }
                _ => ClusterError::api("create", &what, e),
            })?;
        }
        Some(mut lease) => {
            let s = lease.spec.clone().unwrap_or_default();
            let current = s.holder_identity.clone().unwrap_or_default();
            let renewed_ms = s
                .renew_time
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0);
            let renewed = renewed_ms / 1000;
            let dur = i64::from(s.lease_duration_seconds.unwrap_or(0));
            let expired = renewed_ms + dur * 1000 < now_ms();
            if !current.is_empty() && current != holder && !expired {
                return Err(ClusterError::Precondition(format!(
                    "another rotation is running: {what} is held by {current:?} (renewed {}s ago, expires after {dur}s without renewal). Wait for it, or for the lease to expire if that run died",
                    now_secs() - renewed
                )));
            }
            lease.spec = Some(
                serde_json::from_value(spec(holder, duration, None))
                    .map_err(|e| ClusterError::Precondition(e.to_string()))?,
            );
            api.replace(name, &PostParams::default(), &lease).await.map_err(|e| match &e {
                kube::Error::Api(st) if st.is_conflict() => {
                    ClusterError::Precondition(format!("another psk-guard rotation took {what} at the same moment; try again later"))
                }
                _ => ClusterError::api("update", &what, e),
            })?;
        }
    }
    let renewer = {
        let (api, name, holder) = (api.clone(), name.to_owned(), holder.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(duration / 3).await;
                if let Ok(Some(mut l)) = api.get_opt(&name).await {
                    let ours = l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                        == Some(holder.as_str());
                    if !ours {
                        tracing::warn!("the rotation lease was taken by someone else");
                        return;
                    }
                    if let Some(s) = l.spec.as_mut() {
                        s.renew_time = serde_json::from_value(json!(micro_now())).ok();
                    }
                    if let Err(e) = api.replace(&name, &PostParams::default(), &l).await {
                        tracing::warn!(error = %e, "could not renew the rotation lease");
                    }
                }
            }
        })
    };
    Ok(LeaseGuard {
        api,
        name: name.to_owned(),
        holder: holder.to_owned(),
        renewer,
    })
}

impl LeaseGuard {
    /// Gives the Lease up (clears the holder) so the next rotation need not wait for expiry.
    pub async fn release(self) {
        self.renewer.abort();
        if let Ok(Some(mut l)) = self.api.get_opt(&self.name).await {
            if l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                == Some(self.holder.as_str())
            {
                if let Some(s) = l.spec.as_mut() {
                    s.holder_identity = None;
                }
                let _ = self
                    .api
                    .replace(&self.name, &PostParams::default(), &l)
                    .await;
            }
        }
    }
}
