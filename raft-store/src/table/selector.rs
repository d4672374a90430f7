//! Kubernetes label selector semantics (`matchLabels` AND every `matchExpressions` entry).

use std::collections::BTreeMap;

use super::objects::LabelSelector;

/// Checks a selector is well formed; returns the reason and the offending field if not.
pub fn validate(sel: &LabelSelector) -> Result<(), (String, String)> {
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let field = format!("matchExpressions[{i}]");
        match req.operator.as_str() {
            "In" | "NotIn" if req.values.is_empty() => {
                return Err((
                    format!("{field}.values"),
                    format!("operator {} needs at least one value", req.operator),
                ))
            }
            "Exists" | "DoesNotExist" if !req.values.is_empty() => {
                return Err((
                    format!("{field}.values"),
                    format!("operator {} takes no values", req.operator),
                ))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err((
                    format!("{field}.operator"),
                    format!("unknown operator {other:?} (valid: In, NotIn, Exists, DoesNotExist)"),
                ))
            }
        }
    }
    Ok(())
}

/// Whether `labels` satisfy the selector. An empty selector matches everything.
pub fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().all(|req| {
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| req.values.contains(v)),
                "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::objects::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelSelectorRequirement {
                key: key.into(),
                operator: op.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
        }
    }

    #[test]
    fn operators() {
        let l = labels(&[("team", "a"), ("env", "prod")]);
        assert!(matches(&LabelSelector::default(), &l));
        assert!(matches(&expr("team", "In", &["a", "b"]), &l));
        assert!(!matches(&expr("team", "NotIn", &["a"]), &l));
        assert!(matches(&expr("zone", "NotIn", &["x"]), &l));
        assert!(matches(&expr("env", "Exists", &[]), &l));
        assert!(!matches(&expr("env", "DoesNotExist", &[]), &l));
        let mut sel = expr("env", "Exists", &[]);
        sel.match_labels = labels(&[("team", "b")]);
        assert!(!matches(&sel, &l));
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(
            validate(&expr("a", "Maybe", &[])).unwrap_err().0,
            "matchExpressions[0].operator"
        );
        assert_eq!(
            validate(&expr("a", "In", &[])).unwrap_err().0,
            "matchExpressions[0].values"
        );
        assert!(validate(&expr("a", "Exists", &[])).is_ok());
    }
}
