//! Prefix filters: the import and export policy of a peer.
//!
//! A filter is an ordered list of rules, first match wins, with a default
//! action when no rule matches. `ge`/`le` widen a rule from "exactly this
//! prefix" to "this prefix or a more specific one within a length range",
//! like FRR's prefix lists. Pure: no I/O.
//!
//! RFC 8212: an eBGP peer without an import (export) policy accepts
//! (advertises) nothing; an iBGP peer without one accepts everything. That
//! default is applied by [`effective_action`], not stored in the filter, so
//! a config that omits the policy keeps meaning "the safe default".

use serde::{Deserialize, Serialize};

use crate::codec::Prefix;

/// What a filter does with a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    /// Let the route through.
    Accept,
    /// Drop the route.
    Reject,
}

/// One rule of a [`PrefixFilter`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixRule {
    /// The covering prefix, e.g. `10.0.0.0/8`.
    #[serde(with = "crate::config::serde_prefix")]
    pub prefix: Prefix,
    /// Match routes at least this long (default: the rule's own length, or
    /// `le`'s lower bound semantics as in FRR when only `le` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ge: Option<u8>,
    /// Match routes at most this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<u8>,
    /// What to do with a matching route.
    pub action: FilterAction,
}

impl PrefixRule {
    /// True when `route` falls under this rule.
    pub fn matches(&self, route: &Prefix) -> bool {
        if !self.prefix.contains(route) {
            return false;
        }
        let len = route.prefix_len();
        match (self.ge, self.le) {
            (None, None) => len == self.prefix.prefix_len(),
            (ge, le) => {
                let lo = ge.unwrap_or(self.prefix.prefix_len());
                let hi = le.unwrap_or(max_len(&self.prefix));
                (lo..=hi).contains(&len)
            }
        }
    }
}

fn max_len(p: &Prefix) -> u8 {
    if p.is_ipv4() { 32 } else { 128 }
}

/// An ordered prefix filter: first matching rule wins, else `default`.
///
/// In YAML either a bare action (`accept` / `reject`: no rules) or a map
/// with `rules` and `default`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrefixFilter {
    /// Rules, tried in order.
    pub rules: Vec<PrefixRule>,
    /// Action when no rule matches.
    pub default: FilterAction,
}

impl PrefixFilter {
    /// A filter that accepts everything.
    pub fn accept_all() -> PrefixFilter {
        PrefixFilter {
            rules: Vec::new(),
            default: FilterAction::Accept,
        }
    }

    /// A filter that rejects everything.
    pub fn reject_all() -> PrefixFilter {
        PrefixFilter {
            rules: Vec::new(),
            default: FilterAction::Reject,
        }
    }

    /// A filter accepting exactly the routes under `prefixes` (any longer
    /// length), rejecting the rest.
    pub fn accept_within(prefixes: impl IntoIterator<Item = Prefix>) -> PrefixFilter {
        PrefixFilter {
            rules: prefixes
                .into_iter()
                .map(|prefix| PrefixRule {
                    prefix,
                    ge: None,
                    le: Some(max_len(&prefix)),
                    action: FilterAction::Accept,
                })
                .collect(),
            default: FilterAction::Reject,
        }
    }

    /// The action for `route`.
    pub fn action(&self, route: &Prefix) -> FilterAction {
        self.rules
            .iter()
            .find(|r| r.matches(route))
            .map_or(self.default, |r| r.action)
    }

    /// Checks the rules' lengths; the error names the rule by index.
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            let max = max_len(&rule.prefix);
            let own = rule.prefix.prefix_len();
            for (name, value) in [("ge", rule.ge), ("le", rule.le)] {
                if let Some(v) = value
                    && (v < own || v > max)
                {
                    return Err(format!(
                        "rules[{i}].{name}: {v} must be between the prefix length {own} and {max}"
                    ));
                }
            }
            if let (Some(ge), Some(le)) = (rule.ge, rule.le)
                && ge > le
            {
                return Err(format!("rules[{i}]: ge {ge} is greater than le {le}"));
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PrefixFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PrefixFilter, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            #[serde(default)]
            rules: Vec<PrefixRule>,
            default: FilterAction,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Bare(FilterAction),
            Full(Full),
        }
        match Form::deserialize(d)? {
            Form::Bare(default) => Ok(PrefixFilter {
                rules: Vec::new(),
                default,
            }),
            Form::Full(f) => Ok(PrefixFilter {
                rules: f.rules,
                default: f.default,
            }),
        }
    }
}

/// The action of an optional policy on a route, applying the RFC 8212
/// default: no policy means accept on iBGP and reject on eBGP.
pub fn effective_action(policy: Option<&PrefixFilter>, ebgp: bool, route: &Prefix) -> FilterAction {
    match policy {
        Some(f) => f.action(route),
        None if ebgp => FilterAction::Reject,
        None => FilterAction::Accept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    fn rule(prefix: &str, ge: Option<u8>, le: Option<u8>, action: FilterAction) -> PrefixRule {
        PrefixRule {
            prefix: p(prefix),
            ge,
            le,
            action,
        }
    }

    #[test]
    fn exact_rule_matches_only_its_own_length() {
        let r = rule("10.0.0.0/8", None, None, FilterAction::Accept);
        assert!(r.matches(&p("10.0.0.0/8")));
        assert!(!r.matches(&p("10.1.0.0/16")));
        assert!(!r.matches(&p("11.0.0.0/8")));
    }

    #[test]
    fn ge_le_select_a_length_range_under_the_prefix() {
        let r = rule("10.0.0.0/8", Some(24), Some(26), FilterAction::Accept);
        assert!(!r.matches(&p("10.1.0.0/16")));
        assert!(r.matches(&p("10.1.2.0/24")));
        assert!(r.matches(&p("10.1.2.64/26")));
        assert!(!r.matches(&p("10.1.2.1/32")));
        assert!(!r.matches(&p("192.168.0.0/24")));
        let only_le = rule("fd00::/8", None, Some(64), FilterAction::Accept);
        assert!(only_le.matches(&p("fd00::/8")));
        assert!(only_le.matches(&p("fd00:1::/64")));
        assert!(!only_le.matches(&p("fd00:1::1/128")));
        assert!(!only_le.matches(&p("10.0.0.0/8")));
    }

    #[test]
    fn first_match_wins_then_default() {
        let f = PrefixFilter {
            rules: vec![
                rule("10.1.0.0/16", None, Some(32), FilterAction::Reject),
                rule("10.0.0.0/8", None, Some(32), FilterAction::Accept),
            ],
            default: FilterAction::Reject,
        };
        assert_eq!(f.action(&p("10.1.5.0/24")), FilterAction::Reject);
        assert_eq!(f.action(&p("10.2.5.0/24")), FilterAction::Accept);
        assert_eq!(f.action(&p("172.16.0.0/12")), FilterAction::Reject);
    }

    #[test]
    fn rfc8212_default_rejects_on_ebgp_only() {
        let r = p("10.0.0.0/24");
        assert_eq!(effective_action(None, true, &r), FilterAction::Reject);
        assert_eq!(effective_action(None, false, &r), FilterAction::Accept);
        let all = PrefixFilter::accept_all();
        assert_eq!(effective_action(Some(&all), true, &r), FilterAction::Accept);
    }

    #[test]
    fn validate_names_the_bad_rule() {
        let f = PrefixFilter {
            rules: vec![
                rule("10.0.0.0/8", None, Some(24), FilterAction::Accept),
                rule("10.0.0.0/16", Some(8), None, FilterAction::Accept),
            ],
            default: FilterAction::Reject,
        };
        let err = f.validate().expect_err("ge below prefix length");
        assert!(err.contains("rules[1].ge"), "{err}");
        let f = PrefixFilter {
            rules: vec![rule("10.0.0.0/8", Some(28), Some(24), FilterAction::Accept)],
            default: FilterAction::Reject,
        };
        assert!(f.validate().expect_err("ge > le").contains("rules[0]"));
    }

    #[test]
    fn yaml_bare_and_full_forms() {
        let bare: PrefixFilter = serde_saphyr::from_str("accept").expect("bare");
        assert_eq!(bare, PrefixFilter::accept_all());
        let full: PrefixFilter = serde_saphyr::from_str(
            "rules:\n  - prefix: 10.0.0.0/8\n    le: 32\n    action: accept\ndefault: reject\n",
        )
        .expect("full");
        assert_eq!(full.rules.len(), 1);
        assert_eq!(full.default, FilterAction::Reject);
        assert_eq!(full.action(&p("10.9.0.0/16")), FilterAction::Accept);
        assert!(serde_saphyr::from_str::<PrefixFilter>("maybe").is_err());
    }
}
