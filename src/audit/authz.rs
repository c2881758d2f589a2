//! How kube-apiserver's RBAC authorizer matches one request against one PolicyRule
//! (plugin/pkg/auth/authorizer/rbac: VerbMatches, APIGroupMatches, ResourceMatches,
//! ResourceNameMatches), so that audit's conclusions are the API server's.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// A resource request as the authorizer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    /// Empty for the resource itself.
    pub subresource: &'a str,
    /// Empty when the request names no object (create, list without a name field selector).
    pub name: &'a str,
}

/// Whether `rule` allows `req`.
pub fn allows(rule: &PolicyRule, req: &Request) -> bool {
    let verb = rule.verbs.iter().any(|v| v == "*" || v == req.verb);
    let group = rule
        .api_groups
        .iter()
        .flatten()
        .any(|g| g == "*" || g == req.group);
    let combined = if req.subresource.is_empty() {
        req.resource.to_owned()
    } else {
        format!("{}/{}", req.resource, req.subresource)
    };
    let resource = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || *r == combined
            || (!req.subresource.is_empty() && r.strip_prefix("*/") == Some(req.subresource))
    });
    // A rule with resourceNames matches only requests that name one of them.
    let names = rule.resource_names.as_deref().unwrap_or_default();
    let name = names.is_empty() || (!req.name.is_empty() && names.iter().any(|n| n == req.name));
    verb && group && resource && name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: serde_json::Value) -> PolicyRule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn matching_follows_the_rbac_authorizer() {
        let get_secret = Request {
            verb: "get",
            group: "",
            resource: "secrets",
            subresource: "",
            name: "antrea-ipsec",
        };
        let exec = Request {
            verb: "create",
            group: "",
            resource: "pods",
            subresource: "exec",
            name: "",
        };
        let all = rule(serde_json::json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
        assert!(allows(&all, &get_secret) && allows(&all, &exec));
        let named = rule(
            serde_json::json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["antrea-ipsec"], "verbs": ["get"]}),
        );
        assert!(allows(&named, &get_secret));
        assert!(!allows(
            &named,
            &Request {
                name: "",
                ..get_secret
            }
        ));
        assert!(!allows(
            &named,
            &Request {
                name: "other",
                ..get_secret
            }
        ));
        let pods = rule(
            serde_json::json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}),
        );
        assert!(!allows(&pods, &exec), "pods does not cover pods/exec");
        let any_exec = rule(
            serde_json::json!({"apiGroups": [""], "resources": ["*/exec"], "verbs": ["create"]}),
        );
        assert!(allows(&any_exec, &exec));
        let apps =
            rule(serde_json::json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}));
        assert!(!allows(&apps, &get_secret), "other group");
    }
}
