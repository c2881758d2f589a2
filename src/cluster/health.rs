//! What must hold before a rotation writes anything, read from the cluster: which pods are the
//! agent DaemonSet's own, whether it and every target node are healthy, and whether the Job
//! namespace admits the node Jobs' hostPath and the API server admits the Jobs themselves
//! ([`node_jobs_admitted`], a server-side dry run of each, and their service account).
//!
//! Agent pods are matched as the DaemonSet controller matches them: the DaemonSet's full
//! selector (matchLabels AND matchExpressions; an empty selector matches nothing, as
//! `metav1.LabelSelectorAsSelector` of an empty selector in a controller's pod adoption would
//! refuse) AND a controller ownerReference to the DaemonSet's uid. Antrea's Windows agent
//! DaemonSet carries the same labels; its pods are not ours.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use kube::Client;

use super::{jobs, ClusterError};

/// Page size of list calls.
const PAGE: u32 = 500;

/// The label `pod-security.kubernetes.io/enforce` of a namespace.
pub const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// A label selector in the API's string form, or None when it selects nothing.
pub fn selector_string(sel: &LabelSelector) -> Option<String> {
    let mut reqs: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let vals = e.values.clone().unwrap_or_default().join(",");
        reqs.push(match e.operator.as_str() {
            "In" => format!("{} in ({vals})", e.key),
            "NotIn" => format!("{} notin ({vals})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            // An operator this version does not know: select nothing rather than too much.
            _ => return None,
        });
    }
    (!reqs.is_empty()).then(|| reqs.join(","))
}

/// Lists everything matching `lp`, page by page (`limit` + `continue`).
pub async fn list_all<K>(api: &Api<K>, lp: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = vec![];
    let mut lp = lp.clone().limit(PAGE);
    loop {
        let page = super::retry("listing objects", || api.list(&lp)).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return Ok(out),
        }
    }
}

/// The pods of DaemonSet `ds`: its selector AND a controller ownerReference to its uid.
pub async fn agent_pods(
    client: &Client,
    namespace: &str,
    ds: &DaemonSet,
) -> Result<Vec<Pod>, ClusterError> {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let what = format!("pods of daemonset {namespace}/{name}");
    let sel = ds
        .spec
        .as_ref()
        .and_then(|s| selector_string(&s.selector))
        .ok_or_else(|| {
            ClusterError::Precondition(format!(
                "daemonset {namespace}/{name} has an empty or unreadable selector: it selects no pods"
            ))
        })?;
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = list_all(&api, &ListParams::default().labels(&sel))
        .await
        .map_err(|e| ClusterError::api("list", what, e))?;
    Ok(pods
        .into_iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid && o.kind == "DaemonSet")
        })
        .collect())
}

fn pod_node(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The nodes a rotation acts on, and those the user excluded.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub nodes: Vec<String>,
    pub excluded: Vec<String>,
}

/// `maxUnavailable` of a RollingUpdate DaemonSet as a number (default 1).
fn max_unavailable(ds: &DaemonSet, desired: i32) -> i32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let m = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone());
    match m {
        Some(IntOrString::Int(n)) => n.max(1),
        Some(IntOrString::String(p)) => {
            let pct: i32 = p.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * desired + 99) / 100).max(1)
        }
        None => 1,
    }
}

/// The health preflight: the DaemonSet fully rolled out and available, every target node Ready
/// and Linux, except the nodes the user excluded (`--exclude-node`). Says what is unhealthy.
pub async fn preflight(
    client: &Client,
    namespace: &str,
    ds: &DaemonSet,
    exclude: &[String],
) -> Result<Targets, ClusterError> {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let pods = agent_pods(client, namespace, ds).await?;
    let mut all: Vec<String> = pods.iter().filter_map(pod_node).collect();
    all.sort();
    all.dedup();
    for x in exclude {
        if !all.contains(x) {
            return Err(ClusterError::Precondition(format!(
                "--exclude-node {x}: no pod of daemonset {namespace}/{name} runs on a node of that name (nodes: {})",
                all.join(", ")
            )));
        }
    }
    let nodes_api: Api<Node> = Api::all(client.clone());
    let nodes = list_all(&nodes_api, &ListParams::default())
        .await
        .map_err(|e| ClusterError::api("list", "nodes", e))?;
    let mut problems = vec![];
    let mut unavailable_excluded = 0;
    for n in &all {
        let excluded = exclude.contains(n);
        let node = nodes.iter().find(|x| x.metadata.name.as_deref() == Some(n));
        let mut why = vec![];
        match node {
            None => why.push(format!("node {n} does not exist")),
            Some(node) => {
                if !node_ready(node) {
                    why.push(format!("node {n} is NotReady"));
                }
                let os = node
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/os"))
                    .map(String::as_str);
                if os != Some("linux") {
                    why.push(format!(
                        "node {n} is not a Linux node (kubernetes.io/os={})",
                        os.unwrap_or("unset")
                    ));
                }
            }
        }
        for p in pods.iter().filter(|p| pod_node(p).as_deref() == Some(n)) {
            if !pod_ready(p) {
                let phase = p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_else(|| "unknown".into());
                why.push(format!(
                    "agent pod {} on {n} is not available ({phase}, not Ready)",
                    p.metadata.name.clone().unwrap_or_default()
                ));
            }
        }
        if excluded {
            unavailable_excluded += i32::from(!why.is_empty());
        } else {
            problems.extend(why);
        }
    }
    let st = ds.status.clone().unwrap_or_default();
    let desired = st.desired_number_scheduled;
    let available = st.number_available.unwrap_or(0);
    let updated = st.updated_number_scheduled.unwrap_or(0);
    let generation = ds.metadata.generation.unwrap_or(0);
    if st.observed_generation.unwrap_or(0) < generation || updated < desired {
        problems.push(format!(
            "daemonset {namespace}/{name} is still rolling out ({updated}/{desired} updated, observed generation {} of {generation})",
            st.observed_generation.unwrap_or(0)
        ));
    }
    if available + unavailable_excluded < desired {
        problems.push(format!(
            "daemonset {namespace}/{name}: {available}/{desired} available"
        ));
    }
    let on_delete = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");
    let max = max_unavailable(ds, desired);
    if problems.is_empty() && !on_delete && unavailable_excluded >= max {
        problems.push(format!(
            "{unavailable_excluded} excluded node(s) have no available agent, and daemonset {namespace}/{name} rolls out with maxUnavailable {max}: the DaemonSet controller would stall on them. Bring them back, or remove them from the cluster"
        ));
    }
    if !problems.is_empty() {
        return Err(ClusterError::Precondition(format!(
            "the cluster is not healthy enough to rotate (nothing was changed): {}. Fix that first, or leave a node out with --exclude-node NAME (it keeps the old key until you rotate again)",
            problems.join("; ")
        )));
    }
    Ok(Targets {
        nodes: all
            .iter()
            .filter(|n| !exclude.contains(n))
            .cloned()
            .collect(),
        excluded: exclude.to_vec(),
    })
}

/// The `pod-security.kubernetes.io/enforce` level of `ns` when Pod Security admission would
/// reject the node Jobs' pods (hostPath needs `privileged`; unset means the cluster default,
/// privileged unless configured otherwise). None when the pods are admitted.
pub fn rejecting_level(ns: &Namespace) -> Option<String> {
    let level = ns.metadata.labels.as_ref().and_then(|l| l.get(PSA_ENFORCE));
    match level.map(String::as_str) {
        None | Some("privileged") => None,
        Some(other) => Some(other.to_owned()),
    }
}

/// What is wrong with namespace `namespace` at Pod Security level `level`, and how to fix it.
pub fn pod_security_problem(namespace: &str, level: &str) -> String {
    format!(
        "namespace {namespace} has {PSA_ENFORCE}={level}: Pod Security admission would reject the node Jobs' pods (they mount host paths, /var/run/antrea and for audit /var/log/antrea, which only the privileged level admits)"
    )
}

/// The fix for [`pod_security_problem`].
pub fn pod_security_fix(namespace: &str) -> String {
    format!(
        "run the Jobs in a privileged namespace, or label this one: kubectl label namespace {namespace} {PSA_ENFORCE}=privileged --overwrite"
    )
}

/// Pod Security admission rejects the node Jobs' pods (hostPath) unless the namespace's enforce
/// level is `privileged` (or unset, under the default privileged cluster policy). Refuses early,
/// naming the label and the fix. Returns the namespace (for [`node_jobs_admitted`]).
pub async fn pod_security(client: &Client, namespace: &str) -> Result<Namespace, ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = super::retry("reading the Job namespace", || api.get(namespace))
        .await
        .map_err(|e| ClusterError::api("get", format!("namespace {namespace}"), e))?;
    match rejecting_level(&ns) {
        None => Ok(ns),
        Some(level) => Err(ClusterError::Precondition(format!(
            "{}, so nothing was changed: {}",
            pod_security_problem(namespace, &level),
            pod_security_fix(namespace)
        ))),
    }
}

/// Whether the API server admits each of `jobs` (a Job and the node it is for), asked by creating
/// it with `dryRun=All` ([`jobs::dry_run_create`]); refuses, naming the Job and the reason, when
/// one is refused (an admission policy or webhook, validation, a quota), or when Pod Security
/// warns that its pods would break the namespace's level and the namespace `ns` has no explicit
/// `enforce=privileged` label.
///
/// What the dry run cannot show (pod-security-admission admission/admission.go, read for this):
/// Pod Security never refuses a Job, only its pods, which the Job controller creates later
/// (`ValidatePodController` evaluates the template with `enforce=false`). It WARNS about the
/// template when the namespace's *warn* level forbids it: the `warn` label, else the
/// AdmissionConfiguration's `defaults.warn`. Those defaults are each `privileged` unless set
/// (admission/api/v1/defaults.go: warn is not defaulted from enforce), and when warn and audit are
/// both privileged the check stops before evaluating anything. So a cluster-wide default
/// `enforce: baseline` with `warn` left unset, an `enforce` label with a lower `warn` label, or an
/// exemption of psk-guard's user that the Job controller's pods do not share, all pass here; the
/// refused pod is then named from the Job's `FailedCreate` Event (see [`jobs::run_on_nodes`]).
pub async fn node_jobs_admitted(
    client: &Client,
    ns: &Namespace,
    jobs: &[(jobs::NodeJob, String)],
) -> Result<(), ClusterError> {
    let namespace = ns.metadata.name.clone().unwrap_or_default();
    let nonce = jobs::nonce();
    for (job, node) in jobs {
        let name = jobs::job_name(job.purpose, &nonce, node);
        let manifest = jobs::manifest_named(job, node, &name);
        // A dry run stores nothing, so it is retried like a read.
        let admission = super::retry("a dry run of a node Job", || {
            jobs::dry_run_create(client, &namespace, &manifest)
        })
        .await
        .map_err(|e| ClusterError::api("create (dry run)", format!("job {namespace}/{name}"), e))?;
        match admission {
            jobs::Admission::Refused { code, message } => {
                return Err(ClusterError::Precondition(job_refused(
                    job, &name, code, &message,
                )))
            }
            jobs::Admission::Admitted { warnings } => {
                for w in warnings.iter().filter(|w| jobs::is_pod_security_warning(w)) {
                    if enforces_privileged(ns) {
                        // The namespace's own enforce label decides; the warn level is advice.
                        tracing::info!(warning = %w, "Pod Security warns about the node Job; the namespace enforces privileged");
                        continue;
                    }
                    return Err(ClusterError::Precondition(format!(
                        "Pod Security would refuse the pods of the node Job {} in namespace {namespace}: {w}. The namespace has no {PSA_ENFORCE} label, so the cluster's default level (the PodSecurity admission configuration) applies; nothing was changed: {}",
                        job.purpose,
                        pod_security_fix(&namespace)
                    )));
                }
            }
        }
    }
    let mut accounts: Vec<&str> = jobs
        .iter()
        .map(|(j, _)| j.service_account.as_str())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    for account in accounts {
        service_account_exists(client, &namespace, account).await?;
    }
    Ok(())
}

/// Whether service account `name` exists in `namespace`. The ServiceAccount admission plugin
/// (plugin/pkg/admission/serviceaccount/admission.go, `Admit`) refuses every pod that names a
/// missing one ("error looking up service account"), and a dry run of a Job cannot show it: the
/// plugin admits pods, which the Job controller creates later. Refuses, naming the account and
/// the fix, when it does not exist.
pub async fn service_account_exists(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), ClusterError> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let found = super::retry("reading the node Jobs' service account", || {
        api.get_opt(name)
    })
    .await
    .map_err(|e| ClusterError::api("get", format!("serviceaccount {namespace}/{name}"), e))?;
    match found {
        Some(_) => Ok(()),
        None => Err(ClusterError::Precondition(format!(
            "serviceaccount {namespace}/{name} does not exist: the ServiceAccount admission plugin would refuse every pod of the node Jobs, so nothing was changed: create it (kubectl apply -f docs/deploy/serviceaccounts.yaml creates psk-guard-node), or name an existing one with --service-account"
        ))),
    }
}

fn enforces_privileged(ns: &Namespace) -> bool {
    ns.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PSA_ENFORCE))
        .is_some_and(|l| l == "privileged")
}

/// What to say when the dry run of `job` (named `name`) was refused with `code` and `message`.
fn job_refused(job: &jobs::NodeJob, name: &str, code: u16, message: &str) -> String {
    let fix = if message.contains("does not support dry run") {
        "an admission webhook cannot be asked without side effects, so the node Jobs cannot be checked before the key is written: declare sideEffects: None (or NoneOnDryRun) on that webhook"
    } else if message.contains("ValidatingAdmissionPolicy") || message.contains("admission webhook")
    {
        "let that policy admit psk-guard's node Jobs (docs/deploy/admission-policy.yaml admits exactly them)"
    } else {
        "fix what the API server names (a ResourceQuota on Jobs, a LimitRange, the --image or --service-account given)"
    };
    format!(
        "the API server refuses the node Job {} ({name}, checked with a server-side dry run, HTTP {code}): {message}; nothing was changed: {fix}, then rerun",
        job.purpose
    )
}
