//! The `coordination.k8s.io/v1` Lease that makes a rotation exclusive, with client-go's leader
//! election rules (`tools/leaderelection/leaderelection.go`, read for this module):
//!
//! - Expiry is judged on this host's monotonic clock: a Lease held by someone else counts as
//!   expired only after this client has watched it for `leaseDurationSeconds` without seeing its
//!   holder, `renewTime` or resourceVersion change. Another host's `renewTime` is never compared
//!   with the local clock, so clock skew cannot cause a takeover. (A change seen while watching
//!   means the holder is alive: a one-shot CLI stops there instead of queueing behind it.)
//! - `leaseTransitions` is incremented whenever the holder changes to us; `leaseDurationSeconds`
//!   must be > 0.
//! - The holder renews every `duration / 6` (client-go's retry period), retrying failures (5xx,
//!   transport) with backoff. If no renewal succeeds within the renew deadline (`2/3` of the
//!   duration, before anyone else may take over) or the Lease shows another holder, the Lease is
//!   lost: [`Held`] reports it, and the rotation stops every write.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::ClusterError;

/// The renew cadence and deadline for a Lease of `duration` (client-go's defaults keep the same
/// proportions: 15 s duration, 10 s renew deadline, 2 s retry period).
fn retry_period(duration: Duration) -> Duration {
    (duration / 6).max(Duration::from_millis(100))
}

fn renew_deadline(duration: Duration) -> Duration {
    duration * 2 / 3
}

/// Whether the rotation still holds its Lease: checked before every write. Cloneable; a `Held`
/// made by [`Held::always`] never reports a loss (runs that write nothing).
#[derive(Clone)]
pub struct Held(watch::Receiver<Option<String>>);

impl Held {
    pub fn always() -> Held {
        Held(watch::channel(None).1)
    }

    /// `Err` once the Lease is lost, saying why.
    pub fn check(&self) -> Result<(), ClusterError> {
        match self.0.borrow().as_ref() {
            None => Ok(()),
            Some(why) => Err(ClusterError::LeaseLost(why.clone())),
        }
    }

    /// Resolves when the Lease is lost, with why (never, for [`Held::always`]).
    pub async fn lost(&mut self) -> ClusterError {
        loop {
            if let Some(why) = self.0.borrow_and_update().clone() {
                return ClusterError::LeaseLost(why);
            }
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
    held: Held,
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

fn spec(holder: &str, duration: Duration, transitions: i32) -> serde_json::Value {
    json!({
        "holderIdentity": holder,
        "leaseDurationSeconds": duration.as_secs(),
        "acquireTime": micro_now(),
        "renewTime": micro_now(),
        "leaseTransitions": transitions,
    })
}

/// What identifies one observation of a Lease: any change of it means its holder is acting.
fn observed(l: &Lease) -> (Option<String>, Option<String>, Option<String>) {
    let s = l.spec.as_ref();
    (
        s.and_then(|s| s.holder_identity.clone()),
        s.and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string()),
        l.metadata.resource_version.clone(),
    )
}

fn holder_of(l: &Lease) -> String {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// Takes the Lease `name` for `holder`, or fails naming the current holder.
pub async fn acquire(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
    duration: Duration,
) -> Result<LeaseGuard, ClusterError> {
    if duration.as_secs() == 0 {
        return Err(ClusterError::Precondition(
            "--lease-duration must be at least 1 second (the Lease's leaseDurationSeconds must be > 0)".into(),
        ));
    }
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let what = format!("lease {namespace}/{name}");
    let raced = || {
        ClusterError::Precondition(format!(
            "another psk-guard rotation took {what} at the same moment; try again later"
        ))
    };
    let existing = super::retry("reading the rotation lease", || api.get_opt(name))
        .await
        .map_err(|e| ClusterError::api("get", &what, e))?;
    let mine = match existing {
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": "psk-guard"}},
                "spec": spec(holder, duration, 0),
            }))
            .map_err(|e| ClusterError::Precondition(format!("building the lease: {e}")))?;
            api.create(&PostParams::default(), &lease)
                .await
                .map_err(|e| match &e {
                    kube::Error::Api(s) if s.is_already_exists() || s.is_conflict() => raced(),
                    _ => ClusterError::api("create", &what, e),
                })?
        }
        Some(lease) => {
            let lease = wait_until_free(&api, &what, lease).await?;
            let mut mine = lease.clone();
            let transitions = lease
                .spec
                .as_ref()
                .and_then(|s| s.lease_transitions)
                .unwrap_or(0);
            mine.spec = Some(
                serde_json::from_value(spec(holder, duration, transitions + 1))
                    .map_err(|e| ClusterError::Precondition(e.to_string()))?,
            );
            // The resourceVersion of the observed Lease is the precondition: if anyone wrote it
            // since, this is a 409 and we do not take it.
            api.replace(name, &PostParams::default(), &mine)
                .await
                .map_err(|e| match &e {
                    kube::Error::Api(st) if st.is_conflict() => raced(),
                    _ => ClusterError::api("update", &what, e),
                })?
        }
    };
    let (tx, rx) = watch::channel(None);
    let renewer = tokio::spawn(renew(
        api.clone(),
        what,
        holder.to_owned(),
        duration,
        mine,
        tx,
    ));
    Ok(LeaseGuard {
        api,
        name: name.to_owned(),
        holder: holder.to_owned(),
        renewer,
        held: Held(rx),
    })
}

/// Returns the Lease once it may be taken: released (no holder), or held by someone whose Lease
/// this client watched for its whole duration without seeing it change. Fails as soon as a
/// change shows the holder alive.
async fn wait_until_free(
    api: &Api<Lease>,
    what: &str,
    first: Lease,
) -> Result<Lease, ClusterError> {
    let current = holder_of(&first);
    if current.is_empty() {
        return Ok(first);
    }
    let secs = first
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(0)
        .max(1) as u64;
    let dur = Duration::from_secs(secs);
    crate::report::progress(
        "rotate",
        &format!("{what} is held by {current:?}; watching it for up to {secs}s to see whether that run is still alive"),
    );
    let seen = observed(&first);
    let since = Instant::now();
    let name = first.metadata.name.clone().unwrap_or_default();
    loop {
        tokio::time::sleep(retry_period(dur).min(Duration::from_secs(2))).await;
        let now = super::retry("reading the rotation lease", || api.get_opt(&name))
            .await
            .map_err(|e| ClusterError::api("get", what, e))?;
        let Some(now) = now else {
            return Err(ClusterError::Precondition(format!(
                "{what} was deleted while psk-guard watched it; try again"
            )));
        };
        if observed(&now) != seen {
            if holder_of(&now).is_empty() {
                return Ok(now);
            }
            return Err(ClusterError::Precondition(format!(
                "another rotation is running: {what} is held by {:?} and was renewed while psk-guard watched it. Wait for that run to finish, then try again",
                holder_of(&now)
            )));
        }
        if since.elapsed() >= dur {
            crate::report::progress(
                "rotate",
                &format!("{what} was not renewed for {secs}s: taking it over from {current:?}"),
            );
            return Ok(now);
        }
    }
}

/// The renewer: renews every retry period; on failure retries with backoff until the renew
/// deadline; reports the loss through `tx` and stops.
async fn renew(
    api: Api<Lease>,
    what: String,
    holder: String,
    duration: Duration,
    mut lease: Lease,
    tx: watch::Sender<Option<String>>,
) {
    let name = lease.metadata.name.clone().unwrap_or_default();
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(retry_period(duration)).await;
        let deadline = last_ok + renew_deadline(duration);
        let mut delay = Duration::from_millis(100);
        let outcome = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(format!(
                    "could not renew {what} within {}s (the API server kept failing)",
                    renew_deadline(duration).as_secs_f64()
                ));
            }
            match tokio::time::timeout(left, renew_once(&api, &name, &holder, &lease)).await {
                Ok(Ok(l)) => break Ok(l),
                Ok(Err(Lost(why))) => break Err(why),
                Ok(Err(Stale)) => {
                    // Our own annotation (the push instant) changed it: renew the fresh copy.
                    if let Ok(Some(l)) = api.get_opt(&name).await {
                        lease = l;
                        continue;
                    }
                }
                Ok(Err(Retry(e))) => {
                    tracing::warn!(error = %e, "renewing the rotation lease failed; retrying");
                    if let Ok(Some(l)) = api.get_opt(&name).await {
                        lease = l;
                    }
                }
                Err(_) => {}
            }
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            delay = (delay * 2).min(retry_period(duration));
        };
        match outcome {
            Ok(l) => {
                lease = l;
                last_ok = Instant::now();
            }
            Err(why) => {
                let _ = tx.send(Some(why));
                return;
            }
        }
    }
}

enum RenewError {
    /// Someone else holds the Lease now.
    Lost(String),
    /// A failure worth retrying (5xx, transport).
    Retry(String),
    /// 409: our copy is stale (the rotation annotated the Lease since); re-read and renew.
    Stale,
}
use RenewError::{Lost, Retry, Stale};

async fn renew_once(
    api: &Api<Lease>,
    name: &str,
    holder: &str,
    lease: &Lease,
) -> Result<Lease, RenewError> {
    if holder_of(lease) != holder {
        return Err(Lost(format!(
            "the rotation lease was taken over by {:?}",
            holder_of(lease)
        )));
    }
    let mut next = lease.clone();
    if let Some(s) = next.spec.as_mut() {
        s.renew_time = serde_json::from_value(json!(micro_now())).ok();
    }
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(l) if holder_of(&l) == holder => Ok(l),
        Ok(l) => Err(Lost(format!(
            "the rotation lease was taken over by {:?}",
            holder_of(&l)
        ))),
        Err(kube::Error::Api(s)) if s.is_not_found() => {
            Err(Lost("the rotation lease was deleted".into()))
        }
        Err(kube::Error::Api(s)) if s.is_conflict() => Err(Stale),
        Err(e) => Err(Retry(e.to_string())),
    }
}

/// Sets annotation `key` to `value` on the Lease `namespace/name`, which `holder` must hold (the
/// push instant, read by the push pods): a read and an update, the permissions the rotation
/// already has on its Lease; a conflict with the renewer is retried on a fresh read.
pub async fn annotate(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
    key: &str,
    value: &str,
) -> Result<(), ClusterError> {
    annotate_unless(
        client,
        namespace,
        name,
        holder,
        (key, &mut || value.to_owned()),
        None,
    )
    .await
    .map(drop)
}

/// What [`annotate_unless`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Annotated {
    /// The value was written.
    Written,
    /// The annotation already held the `unless` value: nothing was written.
    Kept,
}

/// [`annotate`], except that the value is made by `value` right before each update is sent (the
/// push instant is fixed after the read, not a round trip earlier), and that when the annotation
/// already holds `unless` nothing is written ([`Annotated::Kept`]). Each attempt reads the Lease and writes with that read's
/// resourceVersion as precondition, so the value is never written over `unless` stored
/// meanwhile (e.g. by an earlier update whose answer was lost): that write is a 409, and the
/// re-read sees it. `unless` is checked before the holder, so it is found even on a Lease lost
/// since.
pub async fn annotate_unless(
    client: &Client,
    namespace: &str,
    name: &str,
    holder: &str,
    (key, value): (&str, &mut dyn FnMut() -> String),
    unless: Option<&str>,
) -> Result<Annotated, ClusterError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let what = format!("lease {namespace}/{name}");
    for _attempt in 0..5 {
        let mut l = super::retry("reading the rotation lease", || api.get(name))
            .await
            .map_err(|e| ClusterError::api("get", &what, e))?;
        let current = l.metadata.annotations.as_ref().and_then(|a| a.get(key));
        if unless.is_some() && current.map(String::as_str) == unless {
            return Ok(Annotated::Kept);
        }
        if holder_of(&l) != holder {
            return Err(ClusterError::LeaseLost(format!(
                "the rotation lease was taken over by {:?}",
                holder_of(&l)
            )));
        }
        l.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value());
        match api.replace(name, &PostParams::default(), &l).await {
            Ok(_) => return Ok(Annotated::Written),
            Err(kube::Error::Api(s)) if s.is_conflict() => continue,
            Err(e) => return Err(ClusterError::api("update", &what, e)),
        }
    }
    Err(ClusterError::Precondition(format!(
        "{what} kept changing (5 conflicts in a row) while announcing the push instant: try again"
    )))
}

impl LeaseGuard {
    /// The handle the rotation checks before each write.
    pub fn held(&self) -> Held {
        self.held.clone()
    }

    /// Gives the Lease up (clears the holder) so the next rotation need not wait for expiry.
    /// A Lease that is no longer ours is left alone.
    pub async fn release(self) {
        self.renewer.abort();
        if self.held.check().is_err() {
            return;
        }
        if let Ok(Some(mut l)) = self.api.get_opt(&self.name).await {
            if holder_of(&l) == self.holder {
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
