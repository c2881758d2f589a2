//! A Kubernetes API test server on loopback, for the real kube client in the real binary. It keeps
//! the semantics psk-guard relies on: `resourceVersion` on every write and 409 Conflict on a
//! stale one, 404, 403 for a denied verb (and SelfSubjectAccessReview answering the same, with
//! namespace- and name-scoped grants as RBAC's resourceNames), merge and strategic-merge patches,
//! label-selector lists (equality- and set-based), pod logs, `generation` bumped by spec changes,
//! and kube-apiserver's strictness where the tool depends on it:
//! - 422 `Invalid` with a Status body (`details.causes`) for object names that are not DNS-1123
//!   subdomains, label keys/values that are not valid, and Job names too long for the
//!   controller-generated `job-name` label (modelled on k8s.io/apimachinery
//!   pkg/util/validation/validation.go `IsDNS1123Subdomain`, `IsQualifiedName`,
//!   `IsValidLabelValue`, and kubernetes pkg/registry/batch/job/strategy.go, which adds
//!   `batch.kubernetes.io/job-name`/`job-name` to the pod template labels before validation);
//! - `status` is ignored on a PUT or PATCH of the main resource, for every kind (the
//!   `PrepareForUpdate` of every pkg/registry/*/strategy.go copies the old status);
//! - deleting an owner does not delete its dependents: the garbage collector (in `sim`) does,
//!   later (pkg/controller/garbagecollector);
//! - watches (`?watch=true`) and paginated lists (`limit`/`continue`) from a change log, with
//!   410 Gone for a resourceVersion older than the kept history: see [`watch`].
//!
//! - pod logs as the kubelet serves them: 400 "waiting to start" for a Pending pod, the log so
//!   far for a running one, `follow=true` answered when the container exits.
//!
//! Discovery, OpenAPI, strict field validation and tables, for kubectl, are in `kube_discovery`.
//! Controllers (the DaemonSet rollout, Job execution, garbage collection) live in `sim`.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

pub mod watch;

/// (resource plural, namespace, name)
pub type Key = (String, String, String);

#[derive(Default)]
pub struct State {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    /// Pod logs by (namespace, pod).
    pub logs: BTreeMap<(String, String), String>,
    /// (verb, resource[/subresource]) pairs that get 403.
    pub denied: HashSet<(String, String)>,
    /// Grants limited to some namespaces and/or object names (RBAC Role namespaces and
    /// `resourceNames`): a request or access review outside them is denied.
    pub scoped: Vec<Scope>,
    /// Every request: (method, path, verb, resource).
    pub requests: Vec<(String, String, String, String)>,
    /// Faults: make the next N updates of secrets race with another writer (a 409 for the tool).
    pub race_secret_updates: usize,
    /// Fault: another writer changes the Secret's key on the next update.
    pub foreign_key_change: Option<Vec<u8>>,
    pub uid: u64,
    /// Every (verb, resource[/subresource]) the client used.
    pub used: std::collections::BTreeSet<(String, String)>,
    /// Job names created, for the simulator to run.
    pub new_jobs: Vec<Key>,
    /// (group, plural) of the custom resources whose CRD is installed; see [`absent_api`].
    pub custom_resources: std::collections::BTreeSet<(String, String)>,
    /// Fault: the next N updates (PUT) of leases answer 500.
    pub fail_lease_updates: usize,
    /// Fault: the next N Lease updates that announce a push instant (annotation
    /// `psk-guard.io/push-at` set to `<id> <ms>`, not `abort`) are stored, and then the answer is
    /// lost: the connection is closed without a response. kube-apiserver commits a write before
    /// it answers, so an answer lost afterwards (a connection reset by a load balancer, the
    /// client's own timeout) leaves the write standing; its request timeout filter
    /// (k8s.io/apiserver pkg/server/filters/timeout.go) even answers 504 while the handler goes
    /// on, which apimachinery's errors.go words as "the server was unable to return a response in
    /// the time allotted, but may still be processing the request".
    pub lose_instant_responses: usize,
    /// Nodes whose kubelet does not answer: a pod deleted there stays Terminating.
    pub unreachable_nodes: HashSet<String>,
    /// Evictions refused with 429 by a PodDisruptionBudget.
    pub evictions_refused: usize,
    /// The most agent pods ever gone or Terminating at once right after an eviction.
    pub max_evicted_at_once: usize,
    /// Every change, in resourceVersion order (etcd's history as the watch cache keeps it).
    pub events: Vec<watch::Change>,
    /// Changes up to this resourceVersion are no longer kept (compaction): a watch or a `continue`
    /// from before it gets 410 Gone.
    pub compacted_rv: u64,
    /// Woken on every change, for the watches.
    pub changed: Arc<tokio::sync::Notify>,
    /// How often a watch that asked for bookmarks gets one (zero: every second).
    pub bookmark_interval: std::time::Duration,
    /// The Pod Security admission configuration's `defaults` (AdmissionConfiguration, not
    /// visible through the API): see [`PodSecurityDefaults`].
    pub pod_security_defaults: PodSecurityDefaults,
    /// A ValidatingAdmissionPolicy (or webhook) that denies every Job create: see [`JobDeny`].
    pub deny_jobs: Option<JobDeny>,
    /// A mutating webhook that injects a sidecar container (`istio-proxy`) into every pod the
    /// Job controller creates, as service meshes do.
    pub inject_sidecar: bool,
}

/// The `defaults` of kube-apiserver's PodSecurity AdmissionConfiguration: the levels for a
/// namespace without the label. An empty level is `privileged`, each on its own
/// (pod-security-admission admission/api/v1/defaults.go `SetDefaults_PodSecurityDefaults`: warn
/// and audit are NOT defaulted from enforce). Versions are always `latest` here.
#[derive(Clone, Debug, Default)]
pub struct PodSecurityDefaults {
    pub enforce: String,
    pub warn: String,
    pub audit: String,
}

impl PodSecurityDefaults {
    /// Every default at `level` (warn and audit set as strict as enforce).
    pub fn all(level: &str) -> Self {
        PodSecurityDefaults {
            enforce: level.into(),
            warn: level.into(),
            audit: level.into(),
        }
    }
}

/// A validating admission policy denying Job creates, as kube-apiserver answers it
/// (k8s.io/apiserver pkg/admission/plugin/policy/validating/dispatcher.go: `admission.NewForbidden`
/// with the message `ValidatingAdmissionPolicy '<policy>' with binding '<binding>' denied request:
/// <message>`, the status reason the validation's `reason` or `Invalid` when unset (code by
/// `reasonToCode`: Invalid 422, Forbidden 403), and the message as a cause).
#[derive(Clone, Debug, Default)]
pub struct JobDeny {
    pub policy: String,
    pub binding: String,
    pub message: String,
    /// `Forbidden` (403) or, when empty, `Invalid` (422).
    pub reason: String,
}

impl State {
    pub fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    pub fn get(&self, res: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res.into(), ns.into(), name.into()))
    }

    /// Inserts or replaces an object as a controller would (new resourceVersion).
    pub fn put(&mut self, res: &str, ns: &str, mut obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        obj["metadata"]["resourceVersion"] = json!(self.next_rv());
        if obj["metadata"]["uid"].is_null() {
            self.uid += 1;
            obj["metadata"]["uid"] = json!(format!("uid-{}", self.uid));
        }
        if obj["metadata"]["namespace"].is_null() {
            obj["metadata"]["namespace"] = json!(ns);
        }
        self.note_custom_resource(res, &obj);
        let key: Key = (res.into(), ns.into(), name);
        let prev = self.objects.insert(key.clone(), obj.clone());
        self.record(key, prev, Some(obj));
    }

    /// Deletes an object (the deletion gets its own resourceVersion, as in etcd).
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let prev = self.objects.remove(key)?;
        self.rv += 1;
        self.record(key.clone(), Some(prev.clone()), None);
        Some(prev)
    }

    pub fn list(&self, res: &str, ns: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| r == res && n == ns)
            .map(|(_, v)| v)
            .collect()
    }

    pub fn count(&self, method: &str, resource: &str) -> usize {
        self.requests
            .iter()
            .filter(|(m, _, _, r)| m == method && r == resource)
            .count()
    }

    /// Whether `verb` on `resource` (with `/subresource`) in `ns` on `name` is allowed. As RBAC
    /// (plugin/pkg/auth/authorizer/rbac/rbac.go `RuleAllows`): a grant limited by resourceNames
    /// never allows a request without a name (create, list).
    pub fn allowed(&self, verb: &str, resource: &str, ns: &str, name: Option<&str>) -> bool {
        if self
            .denied
            .contains(&(verb.to_owned(), resource.to_owned()))
        {
            return false;
        }
        self.scoped
            .iter()
            .filter(|s| s.verb == verb && s.resource == resource)
            .all(|s| {
                s.namespaces
                    .as_ref()
                    .is_none_or(|n| n.iter().any(|n| n == ns))
                    && s.names
                        .as_ref()
                        .is_none_or(|n| name.is_some_and(|x| n.iter().any(|n| n == x)))
            })
    }

    /// Writes (anything but GET) the tool made.
    pub fn writes(&self) -> Vec<(String, String)> {
        self.requests
            .iter()
            .filter(|(m, p, _, r)| {
                m != "GET" && r != "selfsubjectaccessreviews" && !p.ends_with(DRY_RUN_MARK)
            })
            .map(|(m, p, _, _)| (m.clone(), p.clone()))
            .collect()
    }
}

/// A grant of `verb` on `resource` only in `namespaces` and/or on `names` (None: any).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub verb: String,
    pub resource: String,
    pub namespaces: Option<Vec<String>>,
    pub names: Option<Vec<String>>,
}

pub type Shared = Arc<Mutex<State>>;

pub fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

/// RFC 7386 merge patch (strategic merge patch is the same for the maps psk-guard patches).
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// A label selector in the string form of k8s.io/apimachinery pkg/labels/selector.go: `k=v`,
/// `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k` (does not exist),
/// comma-separated requirements, all of which must hold. An empty selector matches everything.
pub fn matches_labels(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    split_requirements(selector).iter().all(|req| {
        let req = req.trim();
        let get = |k: &str| labels[k.trim()].as_str().map(str::to_owned);
        let set = |vals: &str| -> Vec<String> {
            vals.trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect()
        };
        if let Some((k, vals)) = req.split_once(" notin ") {
            return get(k).is_none_or(|v| !set(vals).contains(&v));
        }
        if let Some((k, vals)) = req.split_once(" in ") {
            return get(k).is_some_and(|v| set(vals).contains(&v));
        }
        if let Some((k, v)) = req.split_once("!=") {
            return get(k).as_deref() != Some(v.trim());
        }
        if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            return get(k).as_deref() == Some(v.trim());
        }
        if let Some(k) = req.strip_prefix('!') {
            return get(k).is_none();
        }
        get(req).is_some()
    })
}

/// Splits a selector at the commas that are not inside `( )`.
fn split_requirements(selector: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (vec![], String::new(), 0);
    for c in selector.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter().filter(|s| !s.trim().is_empty()).collect()
}

/// A field selector (`metadata.name=x`, `spec.nodeName=y`, `k!=v`), as the pod/node/secret
/// field-label conversion functions of pkg/registry accept.
pub fn matches_fields(obj: &Value, selector: &str) -> bool {
    split_requirements(selector).iter().all(|req| {
        let (k, v, eq) = match req.split_once("!=") {
            Some((k, v)) => (k, v, false),
            None => match req.split_once("==").or_else(|| req.split_once('=')) {
                Some((k, v)) => (k, v, true),
                None => return false,
            },
        };
        let mut cur = obj;
        for part in k.trim().split('.') {
            cur = &cur[part];
        }
        (cur.as_str() == Some(v.trim())) == eq
    })
}

/// k8s.io/apimachinery pkg/util/validation/validation.go `IsDNS1123Subdomain`.
pub fn dns1123_subdomain_error(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.is_empty() || !s.split('.').all(label_ok) {
        return Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    None
}

/// `IsValidLabelValue`: at most 63 characters, `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`.
pub fn label_value_error(v: &str) -> Option<String> {
    if v.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = v.is_empty()
        || (alnum(v.chars().next())
            && alnum(v.chars().last())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    (!ok).then(|| "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
}

/// `IsQualifiedName` for label keys: an optional DNS-1123 subdomain prefix and `/`, then a name
/// of 1..=63 characters of the label-value alphabet.
fn label_key_error(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(e) = prefix.and_then(dns1123_subdomain_error) {
        return Some(format!("prefix part {e}"));
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    label_value_error(name).map(|e| format!("name part {e}"))
}

/// The validation kube-apiserver applies to the fields psk-guard sets: (field, value, detail).
fn validation_causes(resource: &str, obj: &Value, creating: bool) -> Vec<(String, String, String)> {
    let mut causes = vec![];
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if creating {
        if let Some(e) = dns1123_subdomain_error(name) {
            causes.push(("metadata.name".into(), name.to_owned(), e));
        }
    }
    let mut check_labels = |field: &str, labels: &Value| {
        for (k, v) in labels.as_object().into_iter().flatten() {
            if let Some(e) = label_key_error(k) {
                causes.push((field.to_owned(), k.clone(), e));
            }
            let v = v.as_str().unwrap_or("");
            if let Some(e) = label_value_error(v) {
                causes.push((field.to_owned(), v.to_owned(), e));
            }
        }
    };
    check_labels("metadata.labels", &obj["metadata"]["labels"]);
    let mut template = obj["spec"]["template"]["metadata"]["labels"].clone();
    if resource == "jobs" {
        // pkg/registry/batch/job/strategy.go generateSelector: the Job's name becomes a label
        // value of its pods, so a Job name over 63 characters is rejected here.
        template["batch.kubernetes.io/job-name"] = json!(name);
        template["job-name"] = json!(name);
    }
    check_labels("spec.template.labels", &template);
    causes
}

fn invalid(
    resource: &str,
    group_version: &str,
    name: &str,
    causes: &[(String, String, String)],
) -> (u16, Value) {
    let group = group_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = kind_of(resource);
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    let texts: Vec<String> = causes
        .iter()
        .map(|(f, v, e)| format!("{f}: Invalid value: {v:?}: {e}"))
        .collect();
    (
        422,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{qualified} {name:?} is invalid: {}", texts.join(", ")),
               "reason": "Invalid", "code": 422,
               "details": {"name": name, "group": group, "kind": kind,
                           "causes": causes.iter().map(|(f, v, e)| json!({"reason": "FieldValueInvalid", "message": format!("Invalid value: {v:?}: {e}"), "field": f})).collect::<Vec<_>>()}}),
    )
}

/// Keeps the stored `status` on an update of the main resource (the client cannot set it).
fn keep_status(obj: &mut Value, current: &Value) {
    match current.get("status") {
        Some(s) => obj["status"] = s.clone(),
        None => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
    }
}

pub struct Route {
    pub group_version: String,
    pub ns: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub sub: Option<String>,
}

pub fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match *parts.first()? {
        "api" => (parts.get(1)?.to_string(), &parts[2..]),
        "apis" => (format!("{}/{}", parts.get(1)?, parts.get(2)?), &parts[3..]),
        _ => return None,
    };
    let (ns, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(Route {
        group_version: gv,
        ns,
        resource: rest.first()?.to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

/// API groups every kube-apiserver serves; any other group exists only once its CRD is installed.
const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
];

impl State {
    /// Installs the CRD of `group`/`plural` (an object of a custom resource implies its CRD).
    pub fn install_crd(&mut self, group: &str, plural: &str) {
        self.custom_resources
            .insert((group.to_owned(), plural.to_owned()));
    }

    fn note_custom_resource(&mut self, res: &str, obj: &Value) {
        let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if !BUILT_IN_GROUPS.contains(&group) {
            self.install_crd(group, res);
        }
    }
}

/// A request for a custom resource whose CRD is not installed gets what kube-apiserver answers:
/// no handler claims the path, so the end of the delegation chain
/// (k8s.io/apiserver/pkg/util/notfoundhandler, once the mux is complete) calls Go's
/// `http.NotFound`: status 404, `Content-Type: text/plain; charset=utf-8`, body
/// `404 page not found\n`. Not a JSON Status: clients see no `NotFound` reason.
fn absent_api(st: &State, r: &Route) -> Option<(u16, Value, Option<String>)> {
    let group = r.group_version.rsplit_once('/').map_or("", |(g, _)| g);
    if BUILT_IN_GROUPS.contains(&group)
        || st
            .custom_resources
            .contains(&(group.to_owned(), r.resource.clone()))
    {
        return None;
    }
    Some((404, Value::Null, Some("404 page not found\n".to_owned())))
}

pub fn kind_of(resource: &str) -> &'static str {
    match resource {
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "pods" => "Pod",
        "events" => "Event",
        "daemonsets" => "DaemonSet",
        "jobs" => "Job",
        "leases" => "Lease",
        "nodes" => "Node",
        _ => crate::kube_discovery::RESOURCES
            .iter()
            .find(|r| r.plural == resource)
            .map_or("Object", |r| r.kind),
    }
}

pub fn query_param(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

/// application/x-www-form-urlencoded decoding (`+` is a space, `%XX` a byte).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(x) => {
                        out.push(x);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn handle(
    state: &Shared,
    method: &str,
    path: &str,
    query: &str,
    ctype: &str,
    accept: &str,
    body: &[u8],
) -> (u16, Value, Option<String>) {
    if let Some((c, v)) = crate::kube_discovery::answer(path) {
        return (c, v, None);
    }
    // kube-apiserver also decodes Kubernetes protobuf (`application/vnd.kubernetes.protobuf`)
    // for built-in kinds; this server does not, and answers as kube-apiserver does for a media
    // type it cannot decode (k8s.io/apiserver pkg/endpoints/handlers/rest.go
    // `negotiation.NegotiateInputSerializer`: 415 UnsupportedMediaType).
    if matches!(method, "POST" | "PUT" | "PATCH") && ctype.contains("protobuf") {
        let (c, v) = status(
            415,
            "UnsupportedMediaType",
            &format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ctype})"),
        );
        return (c, v, None);
    }
    if let Some(e) = strict_field_errors(method, path, query, body) {
        let (c, v) = status(400, "BadRequest", &e);
        return (c, v, None);
    }
    let (code, v, text) = handle_inner(state, method, path, query, ctype, body);
    // Human-readable `kubectl get` asks for a Table (see kube_discovery).
    if method == "GET" && code == 200 && crate::kube_discovery::wants_table(accept) {
        let rv = v["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if let Some(items) = v["items"].as_array() {
            return (code, crate::kube_discovery::table(items, rv), text);
        }
        if v["metadata"]["name"].is_string() {
            let t = crate::kube_discovery::table(std::slice::from_ref(&v), rv);
            return (code, t, text);
        }
    }
    // Metadata-only responses (kube's get_metadata / patch_metadata).
    if accept.contains("as=PartialObjectMetadata")
        && (200..300).contains(&code)
        && v["metadata"].is_object()
    {
        let meta = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": v["metadata"]});
        return (code, meta, text);
    }
    (code, v, text)
}

/// `fieldValidation=Strict` on a create or update of a main resource: the fields the kind does
/// not have (kube_discovery::strict_errors).
fn strict_field_errors(method: &str, path: &str, query: &str, body: &[u8]) -> Option<String> {
    if !matches!(method, "POST" | "PUT")
        || query_param(query, "fieldValidation").as_deref() != Some("Strict")
    {
        return None;
    }
    let r = route(path)?;
    if r.sub.is_some() {
        return None;
    }
    let body: Value = serde_json::from_slice(body).ok()?;
    crate::kube_discovery::strict_errors(&r.group_version, &r.resource, &body)
}

/// What every request goes through before its handler: the API group must exist, the request is
/// recorded, a SelfSubjectAccessReview is answered, and the verb is authorized. Returns the verb
/// (`get`, `list`, `watch`, `create`, ...), or the answer when the request ends here.
fn admit(
    st: &mut State,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    r: &Route,
) -> Result<&'static str, (u16, Value, Option<String>)> {
    if let Some(answer) = absent_api(st, r) {
        return Err(answer);
    }
    let verb = match (method, r.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch::requested(query) => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "unknown",
    };
    let res_full = match &r.sub {
        Some(s) => format!("{}/{}", r.resource, s),
        None => r.resource.clone(),
    };
    let recorded = match dry_run_param(query) {
        Ok(true) => format!("{path}{DRY_RUN_MARK}"),
        _ => path.to_owned(),
    };
    st.requests
        .push((method.into(), recorded, verb.into(), r.resource.clone()));
    st.used.insert((verb.to_owned(), res_full.clone()));
    if r.resource == "selfsubjectaccessreviews" {
        let mut review: Value = serde_json::from_slice(body).unwrap_or(json!({}));
        let a = &review["spec"]["resourceAttributes"];
        let res = match a["subresource"].as_str() {
            Some(s) if !s.is_empty() => format!("{}/{}", a["resource"].as_str().unwrap_or(""), s),
            _ => a["resource"].as_str().unwrap_or("").to_owned(),
        };
        // The review is answered for the namespace and name it asks about, as the authorizer
        // answers the request itself (pkg/registry/authorization/selfsubjectaccessreview).
        let name = a["name"].as_str().filter(|n| !n.is_empty());
        let allowed = st.allowed(
            a["verb"].as_str().unwrap_or(""),
            &res,
            a["namespace"].as_str().unwrap_or(""),
            name,
        );
        review["status"] = json!({"allowed": allowed});
        return Err((201, review, None));
    }
    // The name the authorizer sees: none for create; for list and watch the one a field selector
    // `metadata.name=X` names (k8s.io/apiserver pkg/endpoints/request/requestinfo.go: "if there's
    // no name on the request and we thought it was a get before, then the actual verb is a list
    // or a watch", and `opts.FieldSelector.RequiresExactMatch("metadata.name")` becomes
    // `requestInfo.Name`): that is how a grant with resourceNames allows a one-object watch.
    let selected = query_param(query, "fieldSelector").and_then(|f| single_name(&f));
    let authz_name = match verb {
        "create" => None,
        "list" | "watch" => selected.as_deref(),
        _ => r.name.as_deref(),
    };
    if !st.allowed(verb, &res_full, r.ns.as_deref().unwrap_or(""), authz_name) {
        let (c, v) = status(
            403,
            "Forbidden",
            &format!(
                "{} \"{}\" is forbidden: cannot {verb}",
                r.resource,
                r.name.clone().or(selected).unwrap_or_default()
            ),
        );
        return Err((c, v, None));
    }
    Ok(verb)
}

/// The name a field selector requires exactly (`metadata.name=X` or `==`, alone or among other
/// requirements), as `fields.Selector.RequiresExactMatch("metadata.name")`.
pub fn single_name(selector: &str) -> Option<String> {
    split_requirements(selector).iter().find_map(|req| {
        if req.contains("!=") {
            return None;
        }
        let (k, v) = req.split_once("==").or_else(|| req.split_once('='))?;
        (k.trim() == "metadata.name").then(|| v.trim().to_owned())
    })
}

fn handle_inner(
    state: &Shared,
    method: &str,
    path: &str,
    query: &str,
    ctype: &str,
    body: &[u8],
) -> (u16, Value, Option<String>) {
    let Some(r) = route(path) else {
        let (c, v) = status(404, "NotFound", "no such path");
        return (c, v, None);
    };
    let mut st = state.lock().unwrap();
    if let Err(reply) = admit(&mut st, method, path, query, body, &r) {
        return reply;
    }
    let ns = r.ns.clone().unwrap_or_default();
    // Pod logs are text.
    if r.sub.as_deref() == Some("log") {
        let name = r.name.clone().unwrap_or_default();
        return pod_log(&st, &ns, &name, query_param(query, "container").as_deref());
    }
    if r.sub.as_deref() == Some("eviction") && method == "POST" {
        let (c, v) = evict(&mut st, &ns, r.name.as_deref().unwrap_or(""), body);
        return (c, v, None);
    }
    let key = (
        r.resource.clone(),
        ns.clone(),
        r.name.clone().unwrap_or_default(),
    );
    match method {
        "GET" if r.name.is_some() => match st.objects.get(&key) {
            Some(o) => (200, o.clone(), None),
            None => {
                let (c, v) = status(
                    404,
                    "NotFound",
                    &format!("{} \"{}\" not found", r.resource, key.2),
                );
                (c, v, None)
            }
        },
        "GET" => {
            let (c, v) = watch::list(&st, &r, query);
            (c, v, None)
        }
        "POST" => {
            let mut obj: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    let (c, v) = status(400, "BadRequest", "invalid body");
                    return (c, v, None);
                }
            };
            let dry_run = match dry_run_param(query) {
                Ok(d) => d,
                Err((c, v)) => return (c, v, None),
            };
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
            // The registry's order (k8s.io/apiserver pkg/registry/generic/registry/store.go
            // `Create`): the strategy's validation (422), then validating admission, then storage
            // (409 AlreadyExists). A dry run goes through all of them and stores nothing.
            let causes = validation_causes(&r.resource, &obj, true);
            if !causes.is_empty() {
                let (c, v) = invalid(&r.resource, &r.group_version, &name, &causes);
                return (c, v, None);
            }
            if r.resource == "jobs" {
                if let Some((c, v)) = admit_job(&st, &name) {
                    return (c, v, None);
                }
            }
            let key = (r.resource.clone(), ns.clone(), name.clone());
            if st.objects.contains_key(&key) {
                let (c, v) = status(
                    409,
                    "AlreadyExists",
                    &format!("{} \"{name}\" already exists", r.resource),
                );
                return (c, v, None);
            }
            obj["metadata"]["generation"] = json!(1);
            obj["metadata"]["creationTimestamp"] = json!("2026-11-26T00:00:00Z");
            // The server sets status on create (PrepareForCreate), not the client.
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
            if r.resource == "jobs" {
                // The Job strategy labels the pod template with the Job's identity.
                st.uid += 1;
                let uid = json!(format!("uid-{}", st.uid));
                obj["metadata"]["uid"] = uid.clone();
                let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
                labels["batch.kubernetes.io/job-name"] = json!(name);
                labels["job-name"] = json!(name);
                labels["batch.kubernetes.io/controller-uid"] = uid.clone();
                labels["controller-uid"] = uid.clone();
                obj["spec"]["selector"] =
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                if !dry_run {
                    st.new_jobs.push(key.clone());
                }
            }
            if dry_run {
                // The object as it would be stored: no resourceVersion, nothing kept, no change
                // seen by a watch (the dry-run storage, k8s.io/apiserver pkg/registry/generic/
                // registry/dryrun.go, returns the object without writing to etcd).
                obj["metadata"]["namespace"] = json!(ns);
                if obj["metadata"]["uid"].is_null() {
                    st.uid += 1;
                    obj["metadata"]["uid"] = json!(format!("uid-{}", st.uid));
                }
                return (201, obj, None);
            }
            st.put(&r.resource, &ns, obj);
            (201, st.objects[&key].clone(), None)
        }
        "PUT" if lease_fault(&mut st, &r.resource) => {
            let (c, v) = status(500, "InternalError", "etcdserver: request timed out");
            (c, v, None)
        }
        "PUT" => {
            let Some(current) = st.objects.get(&key).cloned() else {
                let (c, v) = status(
                    404,
                    "NotFound",
                    &format!("{} \"{}\" not found", r.resource, key.2),
                );
                return (c, v, None);
            };
            let mut obj: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            let causes = validation_causes(&r.resource, &obj, false);
            if !causes.is_empty() {
                let (c, v) = invalid(&r.resource, &r.group_version, &key.2, &causes);
                return (c, v, None);
            }
            if r.resource == "secrets" {
                if st.race_secret_updates > 0 {
                    // Another writer got there first: its change bumps the resourceVersion.
                    st.race_secret_updates -= 1;
                    let mut other = current.clone();
                    other["metadata"]["annotations"]["someone-else"] = json!(st.rv.to_string());
                    st.put("secrets", &ns, other);
                } else if let Some(k) = st.foreign_key_change.take() {
                    let mut other = current.clone();
                    other["data"]["psk"] = json!(base64_encode(&k));
                    st.put("secrets", &ns, other);
                }
            }
            let current = st.objects[&key].clone();
            let sent_rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if !sent_rv.is_empty()
                && sent_rv
                    != current["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
            {
                let (c, v) = status(409, "Conflict", &format!("Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again", r.resource, key.2));
                return (c, v, None);
            }
            let spec_changed = obj["spec"] != current["spec"];
            let mut generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
            if spec_changed && r.resource != "secrets" {
                generation += 1;
            }
            obj["metadata"]["generation"] = json!(generation);
            obj["metadata"]["uid"] = current["metadata"]["uid"].clone();
            keep_status(&mut obj, &current);
            st.put(&r.resource, &ns, obj);
            (200, st.objects[&key].clone(), None)
        }
        "PATCH" => {
            let Some(mut obj) = st.objects.get(&key).cloned() else {
                let (c, v) = status(
                    404,
                    "NotFound",
                    &format!("{} \"{}\" not found", r.resource, key.2),
                );
                return (c, v, None);
            };
            if !(ctype.contains("merge-patch")
                || ctype.contains("strategic-merge-patch")
                || ctype.contains("apply-patch"))
            {
                let (c, v) = status(
                    415,
                    "UnsupportedMediaType",
                    &format!("patch type {ctype} is not supported by the test server"),
                );
                return (c, v, None);
            }
            let patch: Value = serde_json::from_slice(body).unwrap_or(json!({}));
            // A resourceVersion in the patch is a precondition, as in the real API server.
            if let Some(want) = patch["metadata"]["resourceVersion"].as_str() {
                if Some(want) != obj["metadata"]["resourceVersion"].as_str() {
                    let (c, v) = status(409, "Conflict", &format!("Operation cannot be fulfilled on {} \"{}\": the object has been modified", r.resource, key.2));
                    return (c, v, None);
                }
            }
            if r.resource == "secrets" && st.race_secret_updates > 0 {
                st.race_secret_updates -= 1;
                let mut other = obj.clone();
                other["metadata"]["annotations"]["someone-else"] = json!(st.rv.to_string());
                st.put("secrets", &ns, other);
                let (c, v) = status(409, "Conflict", "the object has been modified");
                return (c, v, None);
            }
            let before = obj["spec"].clone();
            let stored = obj.clone();
            merge(&mut obj, &patch);
            keep_status(&mut obj, &stored);
            let causes = validation_causes(&r.resource, &obj, false);
            if !causes.is_empty() {
                let (c, v) = invalid(&r.resource, &r.group_version, &key.2, &causes);
                return (c, v, None);
            }
            if obj["spec"] != before {
                let g = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                obj["metadata"]["generation"] = json!(g);
            }
            st.put(&r.resource, &ns, obj);
            (200, st.objects[&key].clone(), None)
        }
        // Dependents (a Job's pods) are left to the garbage collector in `sim`, which removes
        // them later, as kube-controller-manager's does.
        "DELETE" => match st.remove(&key) {
            Some(o) => (200, o, None),
            None => {
                let (c, v) = status(
                    404,
                    "NotFound",
                    &format!("{} \"{}\" not found", r.resource, key.2),
                );
                (c, v, None)
            }
        },
        _ => {
            let (c, v) = status(405, "MethodNotAllowed", "method not allowed");
            (c, v, None)
        }
    }
}

fn pod_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn selects(selector: &Value, pod: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| &pod["metadata"]["labels"][k] == v))
}

/// `POST pods/NAME/eviction`, as kube-apiserver's eviction subresource does it
/// (pkg/registry/core/pod/storage/eviction.go, read for this): the body must be a policy/v1
/// Eviction naming the pod (400 otherwise); a missing pod is 404; for each PodDisruptionBudget
/// selecting the pod, the eviction is refused with 429 TooManyRequests unless the budget allows a
/// disruption (computed as the disruption controller does: healthy pods minus the healthy pods
/// required, expected pods taken from the DaemonSet's desiredNumberScheduled); an unhealthy pod
/// may go while the budget is met. An evicted pod is deleted gracefully: on an unreachable node
/// it only gets a deletionTimestamp and stays Terminating.
fn evict(st: &mut State, ns: &str, name: &str, body: &[u8]) -> (u16, Value) {
    let ev: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    if ev["apiVersion"] != "policy/v1" || ev["kind"] != "Eviction" || ev["metadata"]["name"] != name
    {
        return status(
            400,
            "BadRequest",
            &format!("the body must be a policy/v1 Eviction of pod {name:?}: {ev}"),
        );
    }
    let key: Key = ("pods".into(), ns.into(), name.into());
    let Some(pod) = st.objects.get(&key).cloned() else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    let desired = st
        .get("daemonsets", ns, "antrea-agent")
        .and_then(|d| d["status"]["desiredNumberScheduled"].as_u64())
        .unwrap_or(0) as i64;
    for pdb in st.list("poddisruptionbudgets", ns) {
        if !selects(&pdb["spec"]["selector"], &pod) {
            continue;
        }
        let matching: Vec<&Value> = st
            .list("pods", ns)
            .into_iter()
            .filter(|p| selects(&pdb["spec"]["selector"], p))
            .collect();
        let healthy = matching.iter().filter(|p| pod_ready(p)).count() as i64;
        let expected = desired.max(matching.len() as i64);
        let required = match (
            pdb["spec"]["maxUnavailable"].as_i64(),
            pdb["spec"]["minAvailable"].as_i64(),
        ) {
            (Some(max), _) => expected - max,
            (None, Some(min)) => min,
            _ => expected,
        };
        let allowed = if pod_ready(&pod) {
            healthy - required > 0
        } else {
            healthy >= required
        };
        if !allowed {
            st.evictions_refused += 1;
            return status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            );
        }
    }
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
    if st.unreachable_nodes.contains(&node) {
        let mut p = pod.clone();
        p["metadata"]["deletionTimestamp"] = json!("2026-11-26T00:00:00Z");
        st.put("pods", ns, p);
    } else {
        st.remove(&key);
    }
    let gone = (desired as usize).saturating_sub(
        st.list("pods", ns)
            .iter()
            .filter(|p| p["metadata"]["labels"]["component"] == "antrea-agent" && pod_ready(p))
            .count(),
    );
    st.max_evicted_at_once = st.max_evicted_at_once.max(gone);
    (
        201,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// `GET pods/NAME/log`: the container's log so far (kubelet, pkg/kubelet/kubelet_pods.go
/// `validateContainerLogStatus`): a container that has not started yet is a 400 BadRequest
/// "container … is waiting to start"; a running one has the log written so far (the sim writes
/// a Job container's log when it exits, so that is empty until then).
/// A pod's log (pkg/registry/core/pod/strategy.go `LogLocation`, `ValidateContainer`): without a
/// `container` parameter only a pod with exactly one container answers; with one, it must be a
/// container of the pod. Both are 400 Bad Request, checked before anything else.
fn pod_log(
    st: &State,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> (u16, Value, Option<String>) {
    let Some(pod) = st.get("pods", ns, name) else {
        let (c, v) = status(404, "NotFound", &format!("pods \"{name}\" not found"));
        return (c, v, None);
    };
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match container {
        Some(c) if names.contains(&c) => c,
        Some(c) => {
            let (code, v) = status(
                400,
                "BadRequest",
                &format!("container {c} is not valid for pod {name}"),
            );
            return (code, v, None);
        }
        None if names.len() == 1 => names[0],
        None => {
            let (code, v) = status(
                400,
                "BadRequest",
                &format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                ),
            );
            return (code, v, None);
        }
    };
    if let Some(l) = st.logs.get(&(ns.to_owned(), name.to_owned())) {
        return (200, Value::Null, Some(l.clone()));
    }
    if pod["status"]["phase"] == "Pending" {
        let (c, v) = status(
            400,
            "BadRequest",
            &format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"),
        );
        return (c, v, None);
    }
    (200, Value::Null, Some(String::new()))
}

/// `follow=true` on a pod's log: the stream ends when the container exits (or after 120 s here);
/// the answer is then the whole log.
async fn follow_log(state: &Shared, path: &str, query: &str) {
    if !path.ends_with("/log") || query_param(query, "follow").as_deref() != Some("true") {
        return;
    }
    let Some(r) = route(path) else { return };
    let (ns, name) = (r.ns.unwrap_or_default(), r.name.unwrap_or_default());
    for _ in 0..1200 {
        {
            let st = state.lock().unwrap();
            match st.get("pods", &ns, &name) {
                Some(p) if p["status"]["phase"] == "Running" => {}
                _ => return,
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The injected 5xx faults on Lease updates (`fail_lease_updates`).
fn lease_fault(st: &mut State, resource: &str) -> bool {
    if resource == "leases" && st.fail_lease_updates > 0 {
        st.fail_lease_updates -= 1;
        return true;
    }
    false
}

pub fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Whether this request is a Lease update announcing a push instant whose answer is to be lost
/// (`lose_instant_responses`).
fn lose_instant_response(state: &Shared, method: &str, path: &str, body: &[u8]) -> bool {
    let st = state.lock().unwrap();
    if st.lose_instant_responses == 0
        || method != "PUT"
        || route(path).is_none_or(|r| r.resource != "leases")
    {
        return false;
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v["metadata"]["annotations"]["psk-guard.io/push-at"]
                .as_str()
                .map(str::to_owned)
        })
        .is_some_and(|a| !a.ends_with(" abort"))
}

/// The answer never reaches the client: hyper closes the connection when the service fails.
#[derive(Debug)]
pub struct AnswerLost;

impl std::fmt::Display for AnswerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the answer is lost (fault injected)")
    }
}

impl std::error::Error for AnswerLost {}

async fn serve(state: Shared, req: Request<Incoming>) -> Result<Response<Body>, AnswerLost> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (code, value, text) = if method == "GET" && watch::requested(&query) {
        match watch::start(&state, &path, &query) {
            Ok(stream) => {
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(stream.boxed())
                    .unwrap())
            }
            Err(answer) => answer,
        }
    } else {
        follow_log(&state, &path, &query).await;
        let lose = lose_instant_response(&state, &method, &path, &body);
        let answer = handle(&state, &method, &path, &query, &ctype, &accept, &body);
        if lose && (200..300).contains(&answer.0) {
            // Stored; the answer is lost.
            state.lock().unwrap().lose_instant_responses -= 1;
            return Err(AnswerLost);
        }
        answer
    };
    // Admission warnings go only with an admitted request (admission.go: "avoid adding warnings
    // to a request we're already going to reject").
    let warnings = if (200..300).contains(&code) {
        warnings_of(&state, &method, &path, &body)
    } else {
        vec![]
    };
    let (ct, bytes) = match text {
        Some(t) => ("text/plain", Bytes::from(t)),
        None => (
            "application/json",
            Bytes::from(serde_json::to_vec(&value).unwrap()),
        ),
    };
    let mut response = Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", ct);
    for w in warnings {
        response = response.header("warning", w);
    }
    Ok(response.body(Full::new(bytes).boxed()).unwrap())
}

/// Starts the server on 127.0.0.1 (an ephemeral port) on the current runtime.
pub async fn start(state: Shared) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper::service::service_fn(move |req| serve(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    addr
}

/// A kubeconfig pointing at the server.
pub fn kubeconfig(dir: &std::path::Path, addr: SocketAddr) -> std::path::PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: http://{addr}\nusers:\n- name: sim\n  user:\n    token: test-token\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: kube-system\ncurrent-context: sim\n"
        ),
    )
    .unwrap();
    p
}

/// What a request path is recorded as when it was a dry run (`dryRun=All`): it stored nothing,
/// so [`State::writes`] leaves it out.
pub const DRY_RUN_MARK: &str = "?dryRun=All";

/// The `dryRun` query parameter of a write: Ok(true) for `All`, Ok(false) when absent, and the
/// answer kube-apiserver gives any other value (k8s.io/apiserver pkg/endpoints/handlers/create.go
/// `ValidateCreateOptions` → `ValidateDryRun`: only "All" is supported, a 422 Invalid on
/// `CreateOptions.meta.k8s.io`). Other query parameters the server does not know are ignored, as
/// the real server's query parameter decoding into CreateOptions ignores unknown keys.
fn dry_run_param(query: &str) -> Result<bool, (u16, Value)> {
    let values: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "dryRun")
        .map(|(_, v)| percent_decode(v))
        .collect();
    match values.as_slice() {
        [] => Ok(false),
        [v] if v == "All" => Ok(true),
        other => Err((
            422,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: {other:?}: supported values: \"All\""),
                   "reason": "Invalid", "code": 422,
                   "details": {"group": "meta.k8s.io", "kind": "CreateOptions",
                               "causes": [{"reason": "FieldValueNotSupported", "message": format!("Unsupported value: {other:?}: supported values: \"All\""), "field": "dryRun"}]}}),
        )),
    }
}

/// Pod Security admission's policy for namespace `ns`: (enforce, warn, audit) levels, each from
/// the namespace's `pod-security.kubernetes.io/<mode>` label, else from the configured defaults
/// (pod-security-admission api/helpers.go `PolicyToEvaluate`). A label that is not a level makes
/// enforce `restricted` and warn/audit `privileged` ("fail open for warn/audit").
pub fn pod_security_policy(st: &State, ns: &str) -> [String; 3] {
    let labels = st
        .get("namespaces", "", ns)
        .map(|n| n["metadata"]["labels"].clone())
        .unwrap_or(Value::Null);
    let d = &st.pod_security_defaults;
    let level = |mode: &str, default: &str, invalid: &str| {
        let default = if default.is_empty() {
            "privileged"
        } else {
            default
        };
        match labels[format!("pod-security.kubernetes.io/{mode}")].as_str() {
            None => default.to_owned(),
            Some(l @ ("privileged" | "baseline" | "restricted")) => l.to_owned(),
            Some(_) => invalid.to_owned(),
        }
    };
    [
        level("enforce", &d.enforce, "restricted"),
        level("warn", &d.warn, "privileged"),
        level("audit", &d.audit, "privileged"),
    ]
}

/// What a pod spec breaks below `privileged`, in pod-security-admission's words: its hostPath
/// volumes (policy/check_hostPathVolumes.go, a baseline check: "hostPath volumes" with the detail
/// `volume "a"` / `volumes "a", "b"`, joined by the aggregate as `reason (detail)`). The other
/// checks are not modelled: psk-guard's Jobs always mount a host path.
fn pod_security_detail(level: &str, pod_spec: &Value) -> Option<String> {
    if level == "privileged" {
        return None;
    }
    let vols: Vec<String> = pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["hostPath"].is_object())
        .map(|v| format!("{:?}", v["name"].as_str().unwrap_or("")))
        .collect();
    let noun = if vols.len() == 1 { "volume" } else { "volumes" };
    (!vols.is_empty()).then(|| format!("hostPath volumes ({noun} {})", vols.join(", ")))
}

/// Pod Security admission of a pod create (`ValidatePod`, enforce): the refusal, if any.
pub fn pod_security_refusal(st: &State, ns: &str, pod_spec: &Value) -> Option<String> {
    let [enforce, _, _] = pod_security_policy(st, ns);
    let detail = pod_security_detail(&enforce, pod_spec)?;
    Some(format!(
        "violates PodSecurity \"{enforce}:latest\": {detail}"
    ))
}

/// Pod Security admission of a pod controller's create (a Job): `ValidatePodController`
/// (pod-security-admission admission/admission.go) evaluates the pod template with
/// `enforce=false`: it never refuses a Job; it short-circuits when the warn AND audit levels are
/// privileged; otherwise, when the WARN level forbids the template, the answer carries the
/// warning `would violate PodSecurity "<warn>:<version>": <detail>` (the audit level only adds an
/// audit annotation). So an enforce level alone (label or default) gives a Job no warning.
pub fn pod_security_warnings(st: &State, ns: &str, pod_spec: &Value) -> Vec<String> {
    let [_, warn, audit] = pod_security_policy(st, ns);
    if warn == "privileged" && audit == "privileged" {
        return vec![];
    }
    pod_security_detail(&warn, pod_spec)
        .map(|d| format!("would violate PodSecurity \"{warn}:latest\": {d}"))
        .into_iter()
        .collect()
}

/// The validating admission of a Job create: the configured policy's denial ([`JobDeny`]).
fn admit_job(st: &State, name: &str) -> Option<(u16, Value)> {
    let deny = st.deny_jobs.as_ref()?;
    let cause = format!(
        "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
        deny.policy, deny.binding, deny.message
    );
    let (reason, code) = match deny.reason.as_str() {
        "Forbidden" => ("Forbidden", 403),
        _ => ("Invalid", 422),
    };
    Some((
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("jobs.batch {name:?} is forbidden: {cause}"),
               "reason": reason, "code": code,
               "details": {"name": name, "group": "batch", "kind": "jobs", "causes": [{"message": cause}]}}),
    ))
}

/// The `Warning` headers of a successful write (k8s.io/apiserver pkg/endpoints/filters/warning.go
/// adds each admission warning as its own header, formatted by k8s.io/apimachinery
/// pkg/util/net/http.go `NewWarningHeader`: `299 - "<text>"`, `"` and `\` escaped with `\`).
fn warnings_of(state: &Shared, method: &str, path: &str, body: &[u8]) -> Vec<String> {
    let Some(r) = route(path) else { return vec![] };
    if method != "POST" || r.resource != "jobs" || r.name.is_some() {
        return vec![];
    }
    let obj: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let st = state.lock().unwrap();
    pod_security_warnings(
        &st,
        r.ns.as_deref().unwrap_or(""),
        &obj["spec"]["template"]["spec"],
    )
    .iter()
    .map(|w| format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\"")))
    .collect()
}
