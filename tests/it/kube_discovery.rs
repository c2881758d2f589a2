//! What the API test server ([`crate::kube_api`]) tells a client about itself, so that the real
//! `kubectl` can run the guides' commands against it: discovery, the OpenAPI v3 index kubectl's
//! field-validation check reads, strict field validation of request bodies, and server-side
//! tables for human-readable `kubectl get`.
//!
//! Modelled on kube-apiserver and read from its source and client-go's/cli-runtime's:
//! - Discovery (k8s.io/apiserver pkg/endpoints/discovery: `/api` APIVersions, `/apis`
//!   APIGroupList, `/api/v1` and `/apis/G/V` APIResourceList with `namespaced`, `kind`, `verbs`,
//!   `shortNames` and the subresources as `pods/log`). Only the unaggregated form is served:
//!   client-go's discovery client asks for `apidiscovery.k8s.io/v2` first and, when the answer's
//!   content type is plain `application/json` (as from a server before 1.26), reads the legacy
//!   documents (client-go discovery/discovery_client.go `GroupsAndMaybeResources`).
//! - OpenAPI v3 (k8s.io/kube-openapi handler3): `/openapi/v3` lists a `serverRelativeURL` per
//!   group-version; each group-version document has, per resource, the PATCH operation tagged
//!   with `x-kubernetes-group-version-kind` and the `fieldValidation` query parameter. That is
//!   exactly what kubectl reads (cli-runtime pkg/resource/query_param_verifier_v3.go
//!   `supportsQueryParamV3`) to decide that the server validates fields itself, so `kubectl
//!   apply`'s default `--validate=strict` sends `fieldValidation=Strict` instead of validating
//!   against a schema on the client. No schemas are served: nothing here asks for them.
//! - `fieldValidation=Strict` (k8s.io/apiserver pkg/endpoints/handlers/create.go and the strict
//!   JSON decoder, sigs.k8s.io/json `UnmarshalStrict`): an unknown field is a 400 BadRequest
//!   `strict decoding error: unknown field "spec.foo"`. Unknown fields are found by decoding the
//!   body into the k8s-openapi type of its kind and encoding it again: a field that does not
//!   come back is one the type does not have.
//! - Tables (k8s.io/apiserver pkg/registry/rest/table.go `DefaultTableConvertor`): a client that
//!   accepts `as=Table` gets columns Name and Created At, as kube-apiserver gives every resource
//!   without its own printer (the built-in kinds have more columns there; nothing reads them).

use serde_json::{json, Value};

/// A resource the server serves: (group, version, plural, kind, namespaced, short names).
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    /// Subresources, as `pods/log`.
    pub subresources: &'static [&'static str],
    /// Decodes and re-encodes a body as the k8s-openapi type of the kind.
    pub roundtrip: fn(&Value) -> Result<Value, String>,
}

fn rt<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

macro_rules! res {
    ($g:literal, $v:literal, $p:literal, $k:literal, $ns:literal, [$($s:literal),*], [$($sub:literal),*], $t:ty) => {
        Resource { group: $g, version: $v, plural: $p, kind: $k, namespaced: $ns, short: &[$($s),*],
                   subresources: &[$($sub),*], roundtrip: rt::<$t> }
    };
}

use k8s_openapi::api::{
    admissionregistration::v1 as adm, apps::v1 as apps, authorization::v1 as authz,
    batch::v1 as batch, coordination::v1 as coord, core::v1 as core, events::v1 as ev,
    policy::v1 as policy, rbac::v1 as rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;

/// The built-in resources psk-guard, its manifests and its guides touch.
pub const RESOURCES: &[Resource] = &[
    res!(
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        ["ns"],
        [],
        core::Namespace
    ),
    res!("", "v1", "nodes", "Node", false, ["no"], [], core::Node),
    res!(
        "",
        "v1",
        "pods",
        "Pod",
        true,
        ["po"],
        ["log", "eviction", "status"],
        core::Pod
    ),
    res!("", "v1", "secrets", "Secret", true, [], [], core::Secret),
    res!(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        ["cm"],
        [],
        core::ConfigMap
    ),
    res!("", "v1", "events", "Event", true, ["ev"], [], core::Event),
    res!(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        ["sa"],
        [],
        core::ServiceAccount
    ),
    res!(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        ["ds"],
        ["status"],
        apps::DaemonSet
    ),
    res!(
        "batch",
        "v1",
        "jobs",
        "Job",
        true,
        [],
        ["status"],
        batch::Job
    ),
    res!(
        "batch",
        "v1",
        "cronjobs",
        "CronJob",
        true,
        ["cj"],
        ["status"],
        batch::CronJob
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        [],
        [],
        coord::Lease
    ),
    res!(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        ["ev"],
        [],
        ev::Event
    ),
    res!(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        ["pdb"],
        ["status"],
        policy::PodDisruptionBudget
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        [],
        [],
        rbac::Role
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        [],
        [],
        rbac::RoleBinding
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        [],
        [],
        rbac::ClusterRole
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        [],
        [],
        rbac::ClusterRoleBinding
    ),
    res!(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
        [],
        [],
        authz::SelfSubjectAccessReview
    ),
    res!(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        false,
        [],
        ["status"],
        adm::ValidatingAdmissionPolicy
    ),
    res!(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        false,
        [],
        [],
        adm::ValidatingAdmissionPolicyBinding
    ),
    res!(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        [],
        [],
        adm::ValidatingWebhookConfiguration
    ),
    res!(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        ["crd", "crds"],
        ["status"],
        apiext::CustomResourceDefinition
    ),
];

pub fn by_plural(group_version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| gv(r) == group_version && r.plural == plural)
}

fn gv(r: &Resource) -> String {
    if r.group.is_empty() {
        r.version.to_owned()
    } else {
        format!("{}/{}", r.group, r.version)
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_list(group_version: &str) -> Option<Value> {
    let mut resources = vec![];
    for r in RESOURCES.iter().filter(|r| gv(r) == group_version) {
        let verbs: &[&str] = if r.kind == "SelfSubjectAccessReview" {
            &["create"]
        } else {
            VERBS
        };
        resources.push(
            json!({"name": r.plural, "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs, "shortNames": r.short}),
        );
        for sub in r.subresources {
            let (kind, verbs) = match *sub {
                "log" => ("Pod", vec!["get"]),
                "eviction" => ("Eviction", vec!["create"]),
                _ => (r.kind, vec!["get", "patch", "update"]),
            };
            resources.push(
                json!({"name": format!("{}/{sub}", r.plural), "singularName": "",
                "namespaced": r.namespaced, "kind": kind, "verbs": verbs}),
            );
        }
    }
    (!resources.is_empty()).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
    })
}

fn groups() -> Vec<&'static str> {
    let mut g: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    g.dedup();
    g.sort();
    g.dedup();
    g
}

fn group(name: &str) -> Value {
    let version = RESOURCES.iter().find(|r| r.group == name).unwrap().version;
    let v = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [v], "preferredVersion": v})
}

/// The OpenAPI v3 document of one group-version: each resource's PATCH operation with its GVK
/// and the `fieldValidation` query parameter (what kube-apiserver's installer puts there).
fn openapi_gv(group_version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let prefix = if group_version == "v1" {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{group_version}")
    };
    for r in RESOURCES.iter().filter(|r| gv(r) == group_version) {
        let path = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        paths.insert(path, json!({"patch": {
            "operationId": format!("patch{}", r.kind),
            "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind}}}));
    }
    (!paths.is_empty()).then(|| {
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": {}}})
    })
}

fn openapi_root() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<String> = RESOURCES.iter().map(gv).collect();
    gvs.dedup();
    for g in gvs {
        let p = if g == "v1" {
            "api/v1".to_owned()
        } else {
            format!("apis/{g}")
        };
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}),
        );
    }
    json!({"paths": paths})
}

/// The discovery and OpenAPI documents for `path`, if it is one: (code, body).
pub fn answer(path: &str) -> Option<(u16, Value)> {
    let p = path.trim_end_matches('/');
    let found = |v: Option<Value>| match v {
        Some(v) => (200, v),
        None => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404}),
        ),
    };
    let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
    Some(match parts.as_slice() {
        ["api"] => (
            200,
            json!({"kind": "APIVersions", "versions": ["v1"],
                   "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ["api", "v1"] => found(resource_list("v1")),
        ["apis"] => (
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1",
                   "groups": groups().into_iter().map(group).collect::<Vec<_>>()}),
        ),
        ["apis", g] => found(groups().contains(g).then(|| {
            let mut v = group(g);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        })),
        ["apis", g, v] => found(resource_list(&format!("{g}/{v}"))),
        ["openapi", "v3"] => (200, openapi_root()),
        ["openapi", "v3", "api", "v1"] => found(openapi_gv("v1")),
        ["openapi", "v3", "apis", g, v] => found(openapi_gv(&format!("{g}/{v}"))),
        ["version"] => (
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}),
        ),
        ["openapi", ..] => found(None),
        _ => return None,
    })
}

/// Every field path (`spec.template.spec`, `items[0].name` as `items.name`) of a JSON value.
fn field_paths(v: &Value, prefix: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            // A null is an absent field to the decoder (and a known field is not re-encoded).
            for (k, x) in m.iter().filter(|(_, x)| !x.is_null()) {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(p.clone());
                field_paths(x, &p, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                field_paths(x, prefix, out);
            }
        }
        _ => {}
    }
}

/// `fieldValidation=Strict` on a create or update: the body's fields the kind does not have, as
/// kube-apiserver reports them (400, `strict decoding error: unknown field "…"`).
pub fn strict_errors(group_version: &str, plural: &str, body: &Value) -> Option<String> {
    let r = by_plural(group_version, plural)?;
    let back = match (r.roundtrip)(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("json: {e}")),
    };
    let (mut sent, mut kept) = (vec![], vec![]);
    field_paths(body, "", &mut sent);
    field_paths(&back, "", &mut kept);
    let unknown: Vec<String> = sent
        .into_iter()
        .filter(|p| !kept.contains(p))
        // Free-form maps come back whole; only a path whose parent came back is unknown.
        .filter(|p| {
            p.rsplit_once('.')
                .is_none_or(|(parent, _)| kept.iter().any(|k| k == parent))
        })
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    (!unknown.is_empty()).then(|| format!("strict decoding error: {}", unknown.join(", ")))
}

/// A Table (meta.k8s.io/v1) of `items` with the default columns.
pub fn table(items: &[Value], resource_version: &str) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({"cells": [o["metadata"]["name"], o["metadata"]["creationTimestamp"]],
                   "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": [
               {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
               {"name": "Created At", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0}],
           "rows": rows})
}

/// Whether the client asked for a Table (kubectl get's human-readable output).
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}
