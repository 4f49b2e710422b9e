//! Label selectors: Calico-style selector strings and Kubernetes `LabelSelector`s,
//! both compiled once into one expression tree ([`Expr`]) and evaluated against
//! a set of labels.
//!
//! The string syntax (what `IPPool.spec.nodeSelector`, `BGPPeer.spec.peerSelector`
//! and policy selectors take):
//!
//! | expression | true when |
//! |---|---|
//! | `all()` | always |
//! | `global()` | the labelled thing is not namespaced (see [`Labels::is_global`]) |
//! | `has(k)` | label `k` is present |
//! | `!has(k)` | label `k` is absent |
//! | `k == 'v'` | `k` is present with value `v` |
//! | `k != 'v'` | `k` is absent or has another value |
//! | `k in {'a', 'b'}` | `k` is present with one of the values |
//! | `k not in {'a', 'b'}` | `k` is absent or has none of the values |
//! | `k contains 's'` / `k starts with 's'` / `k ends with 's'` | `k` is present and its value does |
//! | `!e`, `e && f`, `e \|\| f`, `(e)` | negation, conjunction, disjunction, grouping |
//!
//! `!` binds tightest, then `&&`, then `||`. Strings are quoted with `'` or `"`
//! (no escapes, like Calico). Label keys are `[A-Za-z0-9_./-]+`.
//!
//! A Kubernetes `LabelSelector` maps onto the same tree with exactly the
//! upstream semantics: `matchLabels` and `In` need the key present, `NotIn`
//! matches an absent key, `Exists`/`DoesNotExist` test presence, every term is
//! ANDed, and an empty selector matches everything.

mod label_selector;
mod parse;

pub use label_selector::LabelSelectorError;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A parsed selector expression. Build compound expressions with [`Expr::and`]
/// and [`Expr::or`], which keep the tree flat so that printing and re-parsing
/// gives back the same tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    All,
    Global,
    Has(String),
    Eq(String, String),
    Ne(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Contains(String, String),
    StartsWith(String, String),
    EndsWith(String, String),
    Not(Box<Expr>),
    /// At least two operands, none of them an `And`.
    And(Vec<Expr>),
    /// At least two operands, none of them an `Or`.
    Or(Vec<Expr>),
}

impl Expr {
    /// Conjunction, flattening nested conjunctions; `and([])` is `all()`.
    pub fn and(operands: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(operands.len());
        for e in operands {
            match e {
                Expr::And(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Expr::All,
            1 => flat.pop().unwrap_or(Expr::All),
            _ => Expr::And(flat),
        }
    }

    /// Disjunction, flattening nested disjunctions; `or([])` matches nothing.
    pub fn or(operands: Vec<Expr>) -> Expr {
        let mut flat = Vec::with_capacity(operands.len());
        for e in operands {
            match e {
                Expr::Or(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Expr::Not(Box::new(Expr::All)),
            1 => flat.pop().unwrap_or(Expr::All),
            _ => Expr::Or(flat),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn not(e: Expr) -> Expr {
        Expr::Not(Box::new(e))
    }

    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All => true,
            Expr::Global => labels.is_global(),
            Expr::Has(k) => labels.label(k).is_some(),
            Expr::Eq(k, v) => labels.label(k) == Some(v.as_str()),
            Expr::Ne(k, v) => labels.label(k) != Some(v.as_str()),
            Expr::In(k, set) => labels.label(k).is_some_and(|v| set.contains(v)),
            Expr::NotIn(k, set) => !labels.label(k).is_some_and(|v| set.contains(v)),
            Expr::Contains(k, s) => labels.label(k).is_some_and(|v| v.contains(s.as_str())),
            Expr::StartsWith(k, s) => labels.label(k).is_some_and(|v| v.starts_with(s.as_str())),
            Expr::EndsWith(k, s) => labels.label(k).is_some_and(|v| v.ends_with(s.as_str())),
            Expr::Not(e) => !e.matches(labels),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }

    /// Every label key the expression looks at (for building label indexes).
    pub fn label_keys(&self) -> BTreeSet<&str> {
        let mut keys = BTreeSet::new();
        self.collect_keys(&mut keys);
        keys
    }

    fn collect_keys<'a>(&'a self, keys: &mut BTreeSet<&'a str>) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has(k)
            | Expr::Eq(k, _)
            | Expr::Ne(k, _)
            | Expr::In(k, _)
            | Expr::NotIn(k, _)
            | Expr::Contains(k, _)
            | Expr::StartsWith(k, _)
            | Expr::EndsWith(k, _) => {
                keys.insert(k.as_str());
            }
            Expr::Not(e) => e.collect_keys(keys),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.collect_keys(keys)),
        }
    }

    fn precedence(&self) -> u8 {
        match self {
            Expr::Or(_) => 0,
            Expr::And(_) => 1,
            _ => 2,
        }
    }

    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, min_precedence: u8) -> fmt::Result {
        if self.precedence() < min_precedence {
            write!(f, "({self})")
        } else {
            write!(f, "{self}")
        }
    }
}

/// Canonical text: parses back to the same tree.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => write!(f, "{k} == {}", Quoted(v)),
            Expr::Ne(k, v) => write!(f, "{k} != {}", Quoted(v)),
            Expr::In(k, set) => write!(f, "{k} in {}", QuotedSet(set)),
            Expr::NotIn(k, set) => write!(f, "{k} not in {}", QuotedSet(set)),
            Expr::Contains(k, s) => write!(f, "{k} contains {}", Quoted(s)),
            Expr::StartsWith(k, s) => write!(f, "{k} starts with {}", Quoted(s)),
            Expr::EndsWith(k, s) => write!(f, "{k} ends with {}", Quoted(s)),
            Expr::Not(e) => {
                f.write_str("!")?;
                // Only terms bind tighter than `!`; a comparison like `a == 'b'`
                // needs parentheses too, or `!a == 'b'` would not parse.
                match **e {
                    Expr::All | Expr::Global | Expr::Has(_) | Expr::Not(_) => write!(f, "{e}"),
                    _ => write!(f, "({e})"),
                }
            }
            Expr::And(es) => {
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" && ")?;
                    }
                    e.fmt_operand(f, 2)?;
                }
                Ok(())
            }
            Expr::Or(es) => {
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" || ")?;
                    }
                    e.fmt_operand(f, 1)?;
                }
                Ok(())
            }
        }
    }
}

struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains('\'') {
            write!(f, "\"{}\"", self.0)
        } else {
            write!(f, "'{}'", self.0)
        }
    }
}

struct QuotedSet<'a>(&'a BTreeSet<String>);

impl fmt::Display for QuotedSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Quoted(v))?;
        }
        f.write_str("}")
    }
}

/// Something with labels a selector can look at.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
    /// True for things that are not namespaced (host endpoints, global sets);
    /// only `global()` looks at it.
    fn is_global(&self) -> bool {
        false
    }
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> Labels for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

/// Labels of a Kubernetes object (absent labels map = no labels).
impl Labels for Option<BTreeMap<String, String>> {
    fn label(&self, key: &str) -> Option<&str> {
        self.as_ref().and_then(|m| m.get(key)).map(String::as_str)
    }
}

/// A selector string that failed to parse, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: at character {position}: {message}")]
pub struct SelectorError {
    pub selector: String,
    /// 0-based character offset of the problem (may equal the length: "at end").
    pub position: usize,
    pub message: String,
}

/// A selector parsed once and kept with its canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    expr: Expr,
}

impl Selector {
    /// Parse a Calico-style selector string. An empty or all-blank string is
    /// `all()`, as in Calico.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Ok(Selector {
            expr: parse::parse(text)?,
        })
    }

    /// Compile a Kubernetes `LabelSelector` (upstream semantics).
    pub fn from_label_selector(
        sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    ) -> Result<Selector, LabelSelectorError> {
        Ok(Selector {
            expr: label_selector::compile(sel)?,
        })
    }

    pub fn all() -> Selector {
        Selector { expr: Expr::All }
    }

    pub fn from_expr(expr: Expr) -> Selector {
        Selector { expr }
    }

    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.matches(labels)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Selector, SelectorError> {
        Selector::parse(s)
    }
}

#[cfg(test)]
mod tests;
