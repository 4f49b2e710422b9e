//! `labelSelector` and `fieldSelector` query parameters: parsing and matching,
//! with the grammar and semantics of apimachinery's `labels.Parse` and
//! `fields.ParseSelector` (notably `!=` and `notin` match objects without the key).

use std::collections::BTreeMap;

use serde_json::Value;

use super::status::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelOp {
    Exists,
    NotExists,
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Greater(i64),
    Less(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LabelRequirement {
    key: String,
    op: LabelOp,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Comma,
    Open,
    Close,
    Eq,
    DoubleEq,
    NotEq,
    Bang,
    Gt,
    Lt,
}

fn lex(input: &str) -> ApiResult<Vec<Token>> {
    let mut out = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1
            }
            '(' => {
                out.push(Token::Open);
                i += 1
            }
            ')' => {
                out.push(Token::Close);
                i += 1
            }
            '>' => {
                out.push(Token::Gt);
                i += 1
            }
            '<' => {
                out.push(Token::Lt);
                i += 1
            }
            '=' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::DoubleEq);
                i += 2
            }
            '=' => {
                out.push(Token::Eq);
                i += 1
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::NotEq);
                i += 2
            }
            '!' => {
                out.push(Token::Bang);
                i += 1
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n,()=!<>".contains(chars[i]) {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

fn parse_error(input: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} (in label selector {input:?})"
    ))
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax: `a=b,c!=d,e in (f,g),!h,i`.
    pub fn parse(input: &str) -> ApiResult<Self> {
        let tokens = lex(input)?;
        let mut requirements = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let (req, next) = Self::parse_requirement(input, &tokens, i)?;
            requirements.push(req);
            i = next;
            match tokens.get(i) {
                None => break,
                Some(Token::Comma) if i + 1 < tokens.len() => i += 1,
                _ => return Err(parse_error(input, "expected ',' between requirements")),
            }
        }
        Ok(Self { requirements })
    }

    fn parse_requirement(
        input: &str,
        t: &[Token],
        mut i: usize,
    ) -> ApiResult<(LabelRequirement, usize)> {
        if t.get(i) == Some(&Token::Bang) {
            return match t.get(i + 1) {
                Some(Token::Word(k)) => {
                    validate_key(input, k)?;
                    Ok((
                        LabelRequirement {
                            key: k.clone(),
                            op: LabelOp::NotExists,
                        },
                        i + 2,
                    ))
                }
                _ => Err(parse_error(input, "expected a key after '!'")),
            };
        }
        let key = match t.get(i) {
            Some(Token::Word(k)) => k.clone(),
            _ => return Err(parse_error(input, "expected a key")),
        };
        validate_key(input, &key)?;
        i += 1;
        let word = |j: usize| match t.get(j) {
            Some(Token::Word(w)) => Some(w.clone()),
            _ => None,
        };
        let op = match t.get(i) {
            None | Some(Token::Comma) => {
                return Ok((
                    LabelRequirement {
                        key,
                        op: LabelOp::Exists,
                    },
                    i,
                ));
            }
            Some(Token::Eq) | Some(Token::DoubleEq) | Some(Token::NotEq) => {
                let negate = t[i] == Token::NotEq;
                // An empty value (`a=`) is allowed and matches the empty label value.
                let (value, next) = match word(i + 1) {
                    Some(v) => (v, i + 2),
                    None => (String::new(), i + 1),
                };
                i = next;
                if negate {
                    LabelOp::NotEquals(value)
                } else {
                    LabelOp::Equals(value)
                }
            }
            Some(Token::Gt) | Some(Token::Lt) => {
                let greater = t[i] == Token::Gt;
                let n: i64 = word(i + 1)
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| parse_error(input, "expected an integer after '>' or '<'"))?;
                i += 2;
                if greater {
                    LabelOp::Greater(n)
                } else {
                    LabelOp::Less(n)
                }
            }
            Some(Token::Word(w)) if w == "in" || w == "notin" => {
                let negate = w == "notin";
                i += 1;
                if t.get(i) != Some(&Token::Open) {
                    return Err(parse_error(input, "expected '(' after in/notin"));
                }
                i += 1;
                let mut values = Vec::new();
                loop {
                    match t.get(i) {
                        Some(Token::Word(v)) => {
                            values.push(v.clone());
                            i += 1;
                        }
                        Some(Token::Comma) => {
                            // `(a,,b)` and `(,a)` carry an empty value, as upstream allows.
                            if !matches!(t.get(i.wrapping_sub(1)), Some(Token::Word(_))) {
                                values.push(String::new());
                            }
                            i += 1;
                        }
                        Some(Token::Close) => {
                            i += 1;
                            break;
                        }
                        _ => return Err(parse_error(input, "expected ')' to close the value set")),
                    }
                }
                if values.is_empty() {
                    return Err(parse_error(
                        input,
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
                if negate {
                    LabelOp::NotIn(values)
                } else {
                    LabelOp::In(values)
                }
            }
            _ => return Err(parse_error(input, "expected an operator after the key")),
        };
        Ok((LabelRequirement { key, op }, i))
    }

    /// Builds a selector from a `metav1.LabelSelector` object (matchLabels +
    /// matchExpressions), as used inside objects.
    pub fn from_object(sel: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
                requirements.push(LabelRequirement {
                    key: k.clone(),
                    op: LabelOp::Equals(v.to_string()),
                });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or("matchExpressions key is required")?;
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str) {
                    Some("In") => LabelOp::In(values),
                    Some("NotIn") => LabelOp::NotIn(values),
                    Some("Exists") => LabelOp::Exists,
                    Some("DoesNotExist") => LabelOp::NotExists,
                    other => return Err(format!("unknown operator {other:?}")),
                };
                requirements.push(LabelRequirement {
                    key: key.to_string(),
                    op,
                });
            }
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches against an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.matches(|k| labels.and_then(|l| l.get(k)).and_then(Value::as_str))
    }

    pub fn matches_map(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches(|k| labels.get(k).map(String::as_str))
    }

    fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| {
            let v = get(&r.key);
            match &r.op {
                LabelOp::Exists => v.is_some(),
                LabelOp::NotExists => v.is_none(),
                LabelOp::Equals(x) => v == Some(x.as_str()),
                LabelOp::NotEquals(x) => v != Some(x.as_str()),
                LabelOp::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                LabelOp::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| x == v)),
                LabelOp::Greater(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                LabelOp::Less(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    /// The selector in query syntax (`kubectl`-style), for table cells.
    pub fn to_query(&self) -> String {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match &r.op {
                LabelOp::Exists => r.key.clone(),
                LabelOp::NotExists => format!("!{}", r.key),
                LabelOp::Equals(v) => format!("{}={v}", r.key),
                LabelOp::NotEquals(v) => format!("{}!={v}", r.key),
                LabelOp::In(vs) => format!("{} in ({})", r.key, vs.join(",")),
                LabelOp::NotIn(vs) => format!("{} notin ({})", r.key, vs.join(",")),
                LabelOp::Greater(n) => format!("{}>{n}", r.key),
                LabelOp::Less(n) => format!("{}<{n}", r.key),
            })
            .collect();
        parts.join(",")
    }
}

fn validate_key(input: &str, key: &str) -> ApiResult<()> {
    match validate_label_key(key) {
        Ok(()) => Ok(()),
        Err(why) => Err(parse_error(
            input,
            &format!("invalid label key {key:?}: {why}"),
        )),
    }
}

/// Validates a label key (`[prefix/]name`), returning upstream's reason on error.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !is_dns_subdomain(p))
    {
        return Err("prefix part must be a lowercase RFC 1123 subdomain".into());
    }
    if name.is_empty() || name.len() > 63 || !is_qualified_name_part(name) {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

/// Validates a label value: empty, or up to 63 characters of `[A-Za-z0-9_.-]`
/// starting and ending with an alphanumeric character.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !is_qualified_name_part(value) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

/// RFC 1123 subdomain: lowercase alphanumerics, '-' and '.', alphanumeric at both ends.
pub fn is_dns_subdomain(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
}

/// RFC 1123 label: like a subdomain without dots, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    value: String,
    negate: bool,
}

/// A parsed field selector: `a=b,c!=d` over the fields a resource supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the selector and checks every field is one `resource` supports.
    pub fn parse(input: &str, group: &str, resource: &str) -> ApiResult<Self> {
        let mut requirements = Vec::new();
        for term in split_unescaped(input, ',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (field, value, negate) = if let Some(i) = find_unescaped(term, "!=") {
                (&term[..i], &term[i + 2..], true)
            } else if let Some(i) = find_unescaped(term, "==") {
                (&term[..i], &term[i + 2..], false)
            } else if let Some(i) = find_unescaped(term, "=") {
                (&term[..i], &term[i + 1..], false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            let field = field.trim().to_string();
            if !supported_fields(group, resource).contains(&field.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push(FieldRequirement {
                field,
                value: unescape(value.trim()),
                negate,
            });
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| (field_value(obj, &r.field) == r.value) != r.negate)
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if let Some(p) = out.last_mut() {
                p.push('\\');
                p.push(c);
            }
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(String::new());
        } else if let Some(p) = out.last_mut() {
            p.push(c);
        }
    }
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let mut i = 0;
    let b = s.as_bytes();
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

/// The fields each resource can be selected by (upstream's field label conversion funcs).
fn supported_fields(group: &str, resource: &str) -> &'static [&'static str] {
    match (group, resource) {
        ("", "pods") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "nodes") => &["metadata.name", "metadata.namespace", "spec.unschedulable"],
        ("", "namespaces") => &["metadata.name", "metadata.namespace", "status.phase"],
        ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
        ("", "events") => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// The string value a field selector compares: absent strings are "", booleans
/// "true"/"false" (absent = "false"), as upstream's field sets render them.
fn field_value(obj: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if field == "spec.hostNetwork" || field == "spec.unschedulable" => "false".into(),
        _ if field == "source" => obj
            .pointer("/source/component")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn all_label_operators() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web, db)",
            "tier notin (back)",
            "missing notin (x)",
            "app",
            "!missing",
            "n>4",
            "n<6",
            "app=web,tier=front",
            "app = web , tier in (front)",
        ];
        for s in yes {
            assert!(
                LabelSelector::parse(s).unwrap().matches_object(&o),
                "{s} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "tier notin (front)",
            "missing",
            "!app",
            "n>5",
            "app=web,tier=back",
            "missing in (x)",
        ];
        for s in no {
            assert!(
                !LabelSelector::parse(s).unwrap().matches_object(&o),
                "{s} should not match"
            );
        }
    }

    #[test]
    fn empty_value_and_errors() {
        let o = obj(json!({"a": ""}));
        assert!(LabelSelector::parse("a=").unwrap().matches_object(&o));
        assert!(LabelSelector::parse("a in (").is_err());
        assert!(LabelSelector::parse("a in ()").is_err());
        assert!(LabelSelector::parse("=b").is_err());
        assert!(LabelSelector::parse("a=b,").is_err());
        assert!(LabelSelector::parse("Bad Key=1").is_err());
    }

    #[test]
    fn label_selector_object_form() {
        let s = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]})).unwrap();
        assert!(s.matches_object(&obj(json!({"app": "web"}))));
        assert!(!s.matches_object(&obj(json!({"app": "web", "tier": "db"}))));
        assert_eq!(s.to_query(), "app=web,tier notin (db)");
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let m = |s: &str| FieldSelector::parse(s, "", "pods").unwrap().matches(&o);
        assert!(m("metadata.name=x"));
        assert!(m("spec.nodeName=n1,status.phase!=Pending"));
        assert!(!m("spec.nodeName=n2"));
        assert!(m("spec.hostNetwork=false"));
        assert!(m("metadata.namespace==ns"));
        let e = FieldSelector::parse("spec.nodeName=n1", "", "configmaps").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message
                .contains("field label not supported: spec.nodeName")
        );
    }

    #[test]
    fn label_values_validate() {
        assert!(validate_label_value("a-b.c_d").is_ok());
        assert!(validate_label_value("-a").is_err());
        assert!(validate_label_key("kubernetes.io/metadata.name").is_ok());
        assert!(validate_label_key("Bad/x").is_err());
    }
}
