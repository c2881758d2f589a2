//! The one place `audit` reads the cluster: every object kind is listed once (paginated, each
//! page retried on transient failures) and handed to the questions as a [`Snapshot`].
//!
//! A kind that could not be read is `None` and recorded in [`Snapshot::incomplete`]; no question
//! may derive a finding from objects that were not read. An optional API group that is not
//! installed (Gatekeeper's CRDs) is answered by kube-apiserver with a 404 whose body is plain text,
//! not a JSON Status: any 404 on such a list means "absent" (an empty list), whatever the body.
//!
//! The Secret is read here too, but its key never leaves this module: it is moved into a
//! [`Psk`](crate::secret::Psk), assessed and fingerprinted, and every byte of the object wiped.

use std::fmt::Debug;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, PersistentVolume, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::Client;
use serde::de::DeserializeOwned;
use zeroize::Zeroize;

use super::AuditConfig;
use crate::cluster::{self, ClusterError};
use crate::report::Incomplete;
use crate::secret::{Fingerprint, FingerprintKey, Psk, Strength};

/// Objects per list page.
pub const PAGE: u32 = 500;

/// What was learnt about the key in the Secret (never the key itself).
#[derive(Debug, Clone)]
pub struct KeyView {
    pub strength: Strength,
    pub fingerprint: Fingerprint,
}

/// Everything the questions look at. `None`: could not be read (see `incomplete`).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The Secret's key, assessed; `None` when absent or unreadable (recorded).
    pub key: Option<KeyView>,
    /// `antrea-agent.conf` from Antrea's ConfigMap.
    pub agent_conf: Option<String>,
    pub constraint_templates: Option<Vec<DynamicObject>>,
    pub constraints: Option<Vec<DynamicObject>>,
    /// Gatekeeper's Config objects (`config.gatekeeper.sh`), which may exempt namespaces.
    pub gatekeeper_configs: Option<Vec<DynamicObject>>,
    pub webhooks: Option<Vec<ValidatingWebhookConfiguration>>,
    pub cluster_roles: Option<Vec<ClusterRole>>,
    pub nodes: Option<Vec<Node>>,
    pub namespaces: Option<Vec<Namespace>>,
    pub pods: Option<Vec<Pod>>,
    pub daemonsets: Option<Vec<DaemonSet>>,
    pub deployments: Option<Vec<Deployment>>,
    pub statefulsets: Option<Vec<StatefulSet>>,
    pub replicasets: Option<Vec<ReplicaSet>>,
    pub jobs: Option<Vec<Job>>,
    pub cronjobs: Option<Vec<CronJob>>,
    pub persistent_volumes: Option<Vec<PersistentVolume>>,
    /// Roles in every namespace.
    pub roles: Option<Vec<Role>>,
    /// RoleBindings in every namespace (service-account hops cross namespaces).
    pub role_bindings: Option<Vec<RoleBinding>>,
    pub cluster_role_bindings: Option<Vec<ClusterRoleBinding>>,
    /// What could not be read, and why.
    pub incomplete: Vec<Incomplete>,
    /// Set when the API server could not be reached: the remaining kinds are not asked for (each
    /// would wait out its own retries), only recorded.
    unreachable: Option<String>,
}

impl Snapshot {
    fn not_checked(&mut self, check: impl Into<String>, reason: impl Into<String>) {
        self.incomplete.push(Incomplete::new(check, reason));
    }

    /// Records a failed list under `what` and returns `None`; a success passes through.
    /// Lists a kind, unless the API server already proved unreachable (then `None`).
    async fn list<K>(&mut self, api: &Api<K>, what: &str) -> Option<Result<Vec<K>, kube::Error>>
    where
        K: Clone + DeserializeOwned + Debug,
    {
        if self.unreachable.is_some() {
            return None;
        }
        let r = list_all(api, what).await;
        if let Err(e) = &r {
            if !matches!(e, kube::Error::Api(_)) {
                self.unreachable = Some(what.to_owned());
            }
        }
        Some(r)
    }

    fn skipped(&mut self, check: &str) {
        let first = self.unreachable.clone().unwrap_or_default();
        self.not_checked(
            check,
            format!("not asked: the API server could not be reached when listing {first}"),
        );
    }

    fn record<T>(&mut self, what: &str, r: Option<Result<Vec<T>, kube::Error>>) -> Option<Vec<T>> {
        let Some(r) = r else {
            self.skipped(what);
            return None;
        };
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.not_checked(what, ClusterError::api("list", what, e).to_string());
                None
            }
        }
    }

    /// Like [`Snapshot::record`], for a kind of an optional API group: a 404 is an empty list.
    fn record_optional<T>(
        &mut self,
        check: &str,
        what: &str,
        r: Option<Result<Vec<T>, kube::Error>>,
    ) -> Option<Vec<T>> {
        let Some(r) = r else {
            self.skipped(check);
            return None;
        };
        match r {
            Err(kube::Error::Api(s)) if is_absent(&s) => Some(vec![]),
            Err(e) => {
                self.not_checked(check, ClusterError::api("list", what, e).to_string());
                None
            }
            Ok(v) => Some(v),
        }
    }
}

/// Whether an error status means "no such API group or resource". kube-apiserver answers an
/// uninstalled group with `404` and a `text/plain` body `404 page not found` (the end of its
/// delegation chain, k8s.io/apiserver/pkg/util/notfoundhandler, calls Go's `http.NotFound`);
/// kube-rs then builds a Status with code 404 but no `NotFound` reason, so the reason is not
/// enough: the code decides.
pub fn is_absent(s: &kube::core::Status) -> bool {
    s.code == 404 || s.is_not_found()
}

/// Lists every object of `api`, page by page.
pub async fn list_all<K>(api: &Api<K>, what: &str) -> Result<Vec<K>, kube::Error>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut out = vec![];
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = cluster::retry(&format!("listing {what}"), || api.list(&lp)).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}

fn dyn_api(
    client: &Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::all_with(client.clone(), &ar)
}

/// Reads the cluster once.
pub async fn load(client: &Client, cfg: &AuditConfig, fp_key: &FingerprintKey) -> Snapshot {
    let mut s = Snapshot::default();
    s.key = read_key(client, cfg, fp_key, &mut s).await;
    s.agent_conf = read_agent_conf(client, cfg, &mut s).await;

    let templates = dyn_api(
        client,
        "templates.gatekeeper.sh",
        "v1",
        "ConstraintTemplate",
        "constrainttemplates",
    );
    let r = s.list(&templates, "constrainttemplates").await;
    s.constraint_templates =
        s.record_optional("Gatekeeper ConstraintTemplate", "constrainttemplates", r);
    let constraints = dyn_api(
        client,
        "constraints.gatekeeper.sh",
        "v1beta1",
        "AntreaAgentStatusUpdates",
        "antreaagentstatusupdates",
    );
    let r = s.list(&constraints, "antreaagentstatusupdates").await;
    s.constraints = s.record_optional("Gatekeeper Constraint", "antreaagentstatusupdates", r);
    let configs = dyn_api(
        client,
        "config.gatekeeper.sh",
        "v1alpha1",
        "Config",
        "configs",
    );
    let r = s.list(&configs, "configs.config.gatekeeper.sh").await;
    s.gatekeeper_configs =
        s.record_optional("Gatekeeper Config", "configs.config.gatekeeper.sh", r);

    let r = s
        .list(
            &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            "validatingwebhookconfigurations",
        )
        .await;
    s.webhooks = s.record("validatingwebhookconfigurations", r);
    let r = s
        .list(&Api::<ClusterRole>::all(client.clone()), "clusterroles")
        .await;
    s.cluster_roles = s.record("clusterroles", r);
    let r = s.list(&Api::<Node>::all(client.clone()), "nodes").await;
    s.nodes = s.record("nodes", r);
    let r = s
        .list(&Api::<Namespace>::all(client.clone()), "namespaces")
        .await;
    s.namespaces = s.record("namespaces", r);
    let r = s.list(&Api::<Pod>::all(client.clone()), "pods").await;
    s.pods = s.record("pods", r);
    let r = s
        .list(&Api::<DaemonSet>::all(client.clone()), "daemonsets")
        .await;
    s.daemonsets = s.record("daemonsets", r);
    let r = s
        .list(&Api::<Deployment>::all(client.clone()), "deployments")
        .await;
    s.deployments = s.record("deployments", r);
    let r = s
        .list(&Api::<StatefulSet>::all(client.clone()), "statefulsets")
        .await;
    s.statefulsets = s.record("statefulsets", r);
    let r = s
        .list(&Api::<ReplicaSet>::all(client.clone()), "replicasets")
        .await;
    s.replicasets = s.record("replicasets", r);
    let r = s.list(&Api::<Job>::all(client.clone()), "jobs").await;
    s.jobs = s.record("jobs", r);
    let r = s
        .list(&Api::<CronJob>::all(client.clone()), "cronjobs")
        .await;
    s.cronjobs = s.record("cronjobs", r);
    let r = s
        .list(
            &Api::<PersistentVolume>::all(client.clone()),
            "persistentvolumes",
        )
        .await;
    s.persistent_volumes = s.record("persistentvolumes", r);
    let r = s.list(&Api::<Role>::all(client.clone()), "roles").await;
    s.roles = s.record("roles", r);
    let r = s
        .list(&Api::<RoleBinding>::all(client.clone()), "rolebindings")
        .await;
    s.role_bindings = s.record("rolebindings", r);
    let r = s
        .list(
            &Api::<ClusterRoleBinding>::all(client.clone()),
            "clusterrolebindings",
        )
        .await;
    s.cluster_role_bindings = s.record("clusterrolebindings", r);
    s
}

const KEY_CHECK: &str = "Secret key strength";

/// Reads the Secret, assesses its key and wipes every byte of it.
async fn read_key(
    client: &Client,
    cfg: &AuditConfig,
    fp_key: &FingerprintKey,
    s: &mut Snapshot,
) -> Option<KeyView> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut secret =
        match cluster::retry("reading the Secret", || secrets.get_opt(&cfg.secret)).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                s.not_checked(
                    KEY_CHECK,
                    format!(
                        "secret {}/{} not found (IPsec off, or another --secret)",
                        cfg.namespace, cfg.secret
                    ),
                );
                return None;
            }
            Err(e) => {
                s.not_checked(KEY_CHECK, ClusterError::api("get", "secret", e).to_string());
                return None;
            }
        };
    let raw = secret
        .data
        .as_mut()
        .and_then(|d| d.get_mut(&cfg.key))
        .map(|b| std::mem::take(&mut b.0));
    if let Some(d) = secret.data.as_mut() {
        d.values_mut().for_each(|b| b.0.zeroize());
    }
    let Some(raw) = raw else {
        s.not_checked(
            KEY_CHECK,
            format!(
                "secret {}/{} has no key {:?}",
                cfg.namespace, cfg.secret, cfg.key
            ),
        );
        return None;
    };
    match String::from_utf8(raw) {
        Ok(text) => {
            let psk = Psk::new(text);
            Some(KeyView {
                strength: crate::secret::assess(&psk),
                fingerprint: fp_key.fingerprint(&psk),
            })
        }
        Err(e) => {
            e.into_bytes().zeroize();
            s.not_checked(KEY_CHECK, format!("key {:?} is not UTF-8", cfg.key));
            None
        }
    }
}

const MODE_CHECK: &str = "IPsec authentication mode";

async fn read_agent_conf(client: &Client, cfg: &AuditConfig, s: &mut Snapshot) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &cfg.namespace);
    match cms.get_opt(&cfg.config_map).await {
        Ok(Some(cm)) => Some(
            cm.data
                .as_ref()
                .and_then(|d| d.get("antrea-agent.conf"))
                .cloned()
                .unwrap_or_default(),
        ),
        Ok(None) => {
            s.not_checked(
                MODE_CHECK,
                format!("configmap {}/{} not found", cfg.namespace, cfg.config_map),
            );
            None
        }
        Err(e) => {
            s.not_checked(
                MODE_CHECK,
                ClusterError::api("get", "configmap", e).to_string(),
            );
            None
        }
    }
}
