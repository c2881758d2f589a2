//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), as the API server applies
//! them to webhook `namespaceSelector`s and ClusterRole `aggregationRule`s.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `sel`. An empty selector matches everything; an unknown operator
/// matches nothing (the API server rejects such selectors).
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [(
            "kubernetes.io/metadata.name".to_owned(),
            "kube-system".to_owned(),
        )]
        .into();
        assert!(matches(&sel(serde_json::json!({})), &labels));
        assert!(matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "admission.gatekeeper.sh/ignore", "operator": "DoesNotExist"}]})
            ),
            &labels
        ));
        assert!(!matches(
            &sel(
                serde_json::json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]})
            ),
            &labels
        ));
        assert!(!matches(
            &sel(serde_json::json!({"matchLabels": {"a": "b"}})),
            &labels
        ));
    }
}
