//! The Kubernetes side: the client, the permissions preflight, the Lease that makes a rotation
//! exclusive, Events, and the per-node Jobs through which psk-guard acts on nodes.
//!
//! Objects are built as JSON and decoded into k8s-openapi types, and all calls go through
//! [`ClusterError`], whose variants name the operation and the object and say what to do.

pub mod frame;
pub mod health;
pub mod jobs;
pub mod lease;
pub mod watch;

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

/// Everything that can fail against the API server.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no usable Kubernetes configuration: {0}. Give one with --kubeconfig FILE (and --context NAME), the KUBECONFIG environment variable or ~/.kube/config, or run in a pod with a service account")]
    Config(String),
    #[error("{op} {what}: {hint}")]
    Api {
        op: &'static str,
        what: String,
        hint: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "missing permissions (nothing was changed): {0}. Grant them with the RBAC in docs/deploy/"
    )]
    Forbidden(String),
    #[error("{0}")]
    Precondition(String),
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("lost the rotation lease ({0}): every write stopped. The rotation is recorded on the Secret; once no other rotation runs, rerun psk-guard rotate to resume it")]
    LeaseLost(String),
}

impl ClusterError {
    /// Wraps a kube error with the operation and object, and a hint for the common statuses.
    pub fn api(op: &'static str, what: impl Into<String>, source: kube::Error) -> Self {
        let hint = match &source {
            kube::Error::Api(s) if s.is_not_found() => "not found".to_owned(),
            kube::Error::Api(s) if s.is_forbidden() => {
                "forbidden: the service account lacks this permission (see docs/deploy/rbac.yaml)"
                    .to_owned()
            }
            kube::Error::Api(s) if s.is_conflict() => {
                "conflict: the object changed meanwhile".to_owned()
            }
            kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
            other => format!(
                "the API server {} could not be reached or answered badly: {other}",
                SERVER.get().map(String::as_str).unwrap_or("(unknown)")
            ),
        };
        ClusterError::Api {
            op,
            what: what.into(),
            hint,
            source: Box::new(source),
        }
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, ClusterError::Api { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.is_conflict()))
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::Api { source, .. } if matches!(source.as_ref(), kube::Error::Api(s) if s.is_not_found()))
    }
}

/// Attempts for an idempotent read before giving up.
pub const ATTEMPTS: u32 = 4;

/// Whether a failed call may succeed if repeated: transport failures, timeouts, 429 and 5xx.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        _ => true,
    }
}

/// Runs an idempotent read, retrying transient failures with exponential backoff (0.5 s, 1 s,
/// 2 s). Writes are not retried this way: a write that went through but whose answer was lost
/// would look like a conflict.
pub async fn retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && attempt < ATTEMPTS => {
                crate::report::progress(
                    "",
                    &format!(
                        "{what} failed (attempt {attempt}/{ATTEMPTS}): {e}; retrying in {:.1}s",
                        delay.as_secs_f64()
                    ),
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Which kubeconfig and context to use (`--kubeconfig`, `--context`); unset: kube's inference
/// (`KUBECONFIG`, `~/.kube/config`, then the in-cluster service account).
#[derive(Clone, Debug, Default)]
pub struct KubeOpts {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
}

static KUBE_OPTS: std::sync::OnceLock<KubeOpts> = std::sync::OnceLock::new();
/// The API server's URL, once a client was made (errors name it).
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the kubeconfig choice for every client this process makes (once, from the CLI).
pub fn set_kube_opts(o: KubeOpts) {
    let _ = KUBE_OPTS.set(o);
}

async fn config() -> Result<kube::Config, ClusterError> {
    let o = KUBE_OPTS.get().cloned().unwrap_or_default();
    let opts = kube::config::KubeConfigOptions {
        context: o.context.clone(),
        ..Default::default()
    };
    match (&o.kubeconfig, &o.context) {
        (Some(path), _) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                ClusterError::Config(format!("--kubeconfig {}: {e}", path.display()))
            })?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| ClusterError::Config(format!("--kubeconfig {}: {e}", path.display())))
        }
        (None, Some(ctx)) => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| ClusterError::Config(format!("--context {ctx}: {e}"))),
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| ClusterError::Config(e.to_string())),
    }
}

/// A client from `--kubeconfig`/`--context`, or the kubeconfig (`KUBECONFIG`, `~/.kube/config`)
/// or the in-cluster service account, with every request bounded by `timeout`.
pub async fn client(timeout: Duration) -> Result<Client, ClusterError> {
    client_with(timeout, Some(timeout)).await
}

/// As [`client`], but a read may wait without bound: for a process that only watches one object
/// that may stay unchanged longer than `timeout` (push-key's watch of the rotation Lease, renewed
/// every `--lease-duration / 6`; a read timeout there would end the watch again and again, and
/// the watcher's growing backoff could make the node see the instant late). That wait has its
/// own deadline.
pub async fn watching_client(timeout: Duration) -> Result<Client, ClusterError> {
    client_with(timeout, None).await
}

async fn client_with(
    timeout: Duration,
    read_timeout: Option<Duration>,
) -> Result<Client, ClusterError> {
    let mut config = config().await?;
    let _ = SERVER.set(
        config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
    );
    config.connect_timeout = Some(timeout);
    config.read_timeout = read_timeout;
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))
}

/// One permission the tool needs: (verb, group, resource, subresource, name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub name_scoped: bool,
}

impl Permission {
    /// `verb` on any object of `group`/`resource`.
    pub const fn any(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Permission {
            verb,
            group,
            resource,
            subresource: "",
            name_scoped: false,
        }
    }
    /// `verb` on objects the Role names (`resourceNames`).
    pub const fn named(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Permission {
            name_scoped: true,
            ..Permission::any(verb, group, resource)
        }
    }
    /// `verb` on `resource/subresource`.
    pub const fn sub(
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        subresource: &'static str,
    ) -> Self {
        Permission {
            subresource,
            ..Permission::any(verb, group, resource)
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        let sub = if self.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", self.subresource)
        };
        write!(f, "{} {}{}{}", self.verb, self.resource, sub, g)
    }
}

/// Resources without a namespace (among those psk-guard uses).
pub const CLUSTER_SCOPED: &[&str] = &["nodes", "namespaces"];

/// Asks the API server, through SelfSubjectAccessReview, whether each permission is granted in
/// `namespace` (for name-scoped ones, on `names[resource]`). Returns the missing ones.
pub async fn missing_permissions(
    client: &Client,
    namespace: &str,
    perms: &[Permission],
    name_of: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Permission>, ClusterError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut missing = vec![];
    for p in perms {
        // Cluster-scoped resources are reviewed without a namespace.
        let ns = if CLUSTER_SCOPED.contains(&p.resource) {
            ""
        } else {
            namespace
        };
        let mut attrs = json!({
            "namespace": ns, "verb": p.verb, "group": p.group, "resource": p.resource,
        });
        if !p.subresource.is_empty() {
            attrs["subresource"] = json!(p.subresource);
        }
        if p.name_scoped {
            if let Some(n) = name_of(p.resource) {
                attrs["name"] = json!(n);
            }
        }
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }))
        .map_err(|e| ClusterError::Precondition(format!("building an access review: {e}")))?;
        let pp = PostParams::default();
        let r = retry("an access review (SelfSubjectAccessReview)", || {
            api.create(&pp, &review)
        })
        .await
        .map_err(|e| ClusterError::api("create", "selfsubjectaccessreview", e))?;
        if !r.status.map(|s| s.allowed).unwrap_or(false) {
            missing.push(*p);
        }
    }
    Ok(missing)
}

/// Records an Event about the Secret. Events are best effort: a failure is logged, not fatal.
pub async fn event(
    client: &Client,
    namespace: &str,
    secret: &str,
    secret_uid: Option<&str>,
    reason: &str,
    message: &str,
    warning: bool,
) {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let now = now_rfc3339();
    let suffix: u32 = rand::random();
    let ev: Result<Event, _> = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{secret}.psk-guard.{suffix:08x}"), "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Secret", "name": secret, "namespace": namespace, "uid": secret_uid},
        "reason": reason, "message": message, "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": "psk-guard"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": "psk-guard", "reportingInstance": hostname(),
    }));
    match ev {
        Ok(ev) => {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::warn!(error = %e, reason, "could not record an Event");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not build an Event"),
    }
}

pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "psk-guard".into())
}

/// Now as RFC 3339 in UTC with second precision.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(super::rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_729_939)),
            "2026-11-26T21:52:19Z"
        );
        assert_eq!(
            super::rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
