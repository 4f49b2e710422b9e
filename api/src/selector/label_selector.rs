//! Kubernetes `metav1.LabelSelector` compiled to an [`Expr`], with the exact
//! upstream semantics (`k8s.io/apimachinery/pkg/labels`):
//!
//! - `matchLabels: {k: v}` and `In`: the key must be present with one of the values;
//! - `NotIn`: true when the key is absent or its value is not listed;
//! - `Exists` / `DoesNotExist`: presence only, `values` must be empty;
//! - `In` / `NotIn` need at least one value;
//! - all terms are ANDed; an empty selector (`{}`) matches everything.
//!
//! A *null* selector (the field absent) matches nothing in most APIs; that is
//! the caller's decision, so it is not representable here.

use super::Expr;
use crate::names::is_label_value;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector: {field}: {message}")]
pub struct LabelSelectorError {
    /// Path inside the selector, e.g. `matchExpressions[1].values`.
    pub field: String,
    pub message: String,
}

pub(super) fn compile(sel: &LabelSelector) -> Result<Expr, LabelSelectorError> {
    let mut terms = Vec::new();
    if let Some(labels) = &sel.match_labels {
        for (k, v) in labels {
            check_key(k, &format!("matchLabels[{k:?}]"))?;
            check_value(v, &format!("matchLabels[{k:?}]"))?;
            terms.push(Expr::Eq(k.clone(), v.clone()));
        }
    }
    for (i, req) in sel.match_expressions.iter().flatten().enumerate() {
        let at = |f: &str| format!("matchExpressions[{i}].{f}");
        check_key(&req.key, &at("key"))?;
        let values: Vec<String> = req.values.clone().unwrap_or_default();
        for v in &values {
            check_value(v, &at("values"))?;
        }
        let set: BTreeSet<String> = values.iter().cloned().collect();
        let term = match req.operator.as_str() {
            "In" | "NotIn" => {
                if set.is_empty() {
                    return Err(LabelSelectorError {
                        field: at("values"),
                        message: format!("operator {} needs at least one value", req.operator),
                    });
                }
                if req.operator == "In" {
                    Expr::In(req.key.clone(), set)
                } else {
                    Expr::NotIn(req.key.clone(), set)
                }
            }
            "Exists" | "DoesNotExist" => {
                if !set.is_empty() {
                    return Err(LabelSelectorError {
                        field: at("values"),
                        message: format!("operator {} takes no values", req.operator),
                    });
                }
                if req.operator == "Exists" {
                    Expr::Has(req.key.clone())
                } else {
                    Expr::not(Expr::Has(req.key.clone()))
                }
            }
            other => {
                return Err(LabelSelectorError {
                    field: at("operator"),
                    message: format!(
                        "{other:?} is not an operator: allowed In, NotIn, Exists, DoesNotExist"
                    ),
                });
            }
        };
        terms.push(term);
    }
    Ok(Expr::and(terms))
}

/// A Kubernetes qualified name: optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn check_key(key: &str, field: &str) -> Result<(), LabelSelectorError> {
    let err = |message: String| LabelSelectorError {
        field: field.to_string(),
        message,
    };
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !crate::names::is_dns_subdomain(p)
    {
        return Err(err(format!(
            "label key {key:?}: prefix must be a DNS subdomain (lowercase alphanumerics, '-', '.', at most 253)"
        )));
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(err(format!(
            "label key {key:?}: name part must be 1-63 characters, alphanumeric at both ends, '-', '_', '.' inside"
        )));
    }
    Ok(())
}

fn check_value(value: &str, field: &str) -> Result<(), LabelSelectorError> {
    if is_label_value(value) {
        Ok(())
    } else {
        Err(LabelSelectorError {
            field: field.to_string(),
            message: format!(
                "label value {value:?}: must be empty or 1-63 characters, alphanumeric at both ends, '-', '_', '.' inside"
            ),
        })
    }
}
