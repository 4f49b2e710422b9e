use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> Selector {
    match Selector::parse(s) {
        Ok(sel) => sel,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn operators_follow_calico_semantics() {
    let l = labels(&[("app", "web"), ("tier", "frontend"), ("zone", "eu-west-1a")]);
    let cases = [
        ("all()", true),
        ("", true),
        ("   ", true),
        ("global()", false),
        ("has(app)", true),
        ("!has(app)", false),
        ("has(missing)", false),
        ("!has(missing)", true),
        ("app == 'web'", true),
        ("app == \"web\"", true),
        ("app == 'db'", false),
        ("missing == 'x'", false),
        ("app != 'db'", true),
        ("app != 'web'", false),
        // != matches an absent label, as in Calico.
        ("missing != 'x'", true),
        ("app in {'web', 'db'}", true),
        ("app in {'db'}", false),
        ("app in {}", false),
        ("missing in {'x'}", false),
        ("app not in {'db'}", true),
        ("app not in {'web'}", false),
        ("missing not in {'x'}", true),
        ("zone starts with 'eu-'", true),
        ("zone ends with '1a'", true),
        ("zone contains 'west'", true),
        ("zone contains 'east'", false),
        ("missing contains ''", false),
        ("app == 'web' && tier == 'frontend'", true),
        ("app == 'web' && tier == 'backend'", false),
        ("app == 'db' || tier == 'frontend'", true),
        ("!(app == 'web')", false),
        ("!app == 'web'", false),
        ("!!has(app)", true),
        ("app == 'db' || app == 'web' && tier == 'backend'", false),
        ("(app == 'db' || app == 'web') && tier == 'frontend'", true),
        ("has(app)&&has(tier)", true),
    ];
    for (text, want) in cases {
        assert_eq!(sel(text).matches(&l), want, "selector {text:?}");
    }
}

#[test]
fn keywords_are_only_keywords_before_a_parenthesis() {
    let l = labels(&[("has", "x"), ("all", "y"), ("in", "z"), ("not", "n")]);
    assert!(sel("has == 'x'").matches(&l));
    assert!(sel("all == 'y' && in == 'z'").matches(&l));
    // `not` is a label here: the key `not` with operator `in`.
    assert!(sel("not in {'n'}").matches(&l));
    assert!(!sel("not in {'a'}").matches(&l));
    assert!(sel("has(has)").matches(&l));
    assert!(sel("projectcalico.org/namespace == 'x' || has(in)").matches(&l));
}

#[test]
fn global_looks_at_the_labelled_thing() {
    struct Host;
    impl Labels for Host {
        fn label(&self, _: &str) -> Option<&str> {
            None
        }
        fn is_global(&self) -> bool {
            true
        }
    }
    assert!(sel("global()").matches(&Host));
    assert!(!sel("!global()").matches(&Host));
}

#[test]
fn parse_errors_point_at_the_problem() {
    let cases: [(&str, usize, &str); 12] = [
        ("has(a", 5, "')'"),
        ("a == ", 5, "quoted string"),
        ("a == 'b", 5, "unterminated"),
        ("a = 'b'", 2, "operator"),
        ("a in {'b' 'c'}", 10, "','"),
        ("a in 'b'", 5, "'{'"),
        ("has(a) && ", 10, "label key"),
        ("a && b", 2, "operator"),
        ("(a == 'b'", 9, "')'"),
        ("a == 'b' b == 'c'", 9, "end of the selector"),
        ("foo(a)", 0, "unknown function"),
        ("a not 'b'", 6, "'in'"),
    ];
    for (text, pos, needle) in cases {
        match Selector::parse(text) {
            Ok(s) => panic!("{text:?} parsed as {s}"),
            Err(e) => {
                assert_eq!(e.position, pos, "{text:?}: {e}");
                assert!(e.to_string().contains(needle), "{text:?}: {e}");
                assert_eq!(e.selector, text);
            }
        }
    }
}

#[test]
fn canonical_text() {
    assert_eq!(
        sel("a=='b'&&(c=='d'||e!='f')").to_string(),
        "a == 'b' && (c == 'd' || e != 'f')"
    );
    assert_eq!(sel("k in {'z','a','z'}").to_string(), "k in {'a', 'z'}");
    assert_eq!(sel("!(a == 'b')").to_string(), "!(a == 'b')");
    assert_eq!(sel("a == \"it's\"").to_string(), "a == \"it's\"");
    assert_eq!(
        sel("(a == 'b' && c == 'd') && e == 'f'").expr(),
        sel("a == 'b' && c == 'd' && e == 'f'").expr()
    );
}

fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: if values.is_empty() {
            None
        } else {
            Some(values.iter().map(|v| v.to_string()).collect())
        },
    }
}

#[test]
fn label_selector_upstream_semantics() {
    let l = labels(&[("app", "web"), ("env", "prod")]);
    let compile = |ls: LabelSelector| Selector::from_label_selector(&ls).expect("valid selector");
    assert!(compile(LabelSelector::default()).matches(&l));
    assert!(compile(LabelSelector::default()).matches(&labels(&[])));
    let ml = LabelSelector {
        match_labels: Some(labels(&[("app", "web")])),
        ..Default::default()
    };
    assert!(compile(ml).matches(&l));
    let cases = [
        (req("app", "In", &["web", "db"]), true),
        (req("app", "In", &["db"]), false),
        (req("missing", "In", &["x"]), false),
        (req("app", "NotIn", &["db"]), true),
        (req("app", "NotIn", &["web"]), false),
        // NotIn matches an absent key (upstream semantics).
        (req("missing", "NotIn", &["x"]), true),
        (req("app", "Exists", &[]), true),
        (req("missing", "Exists", &[]), false),
        (req("missing", "DoesNotExist", &[]), true),
        (req("app", "DoesNotExist", &[]), false),
    ];
    for (r, want) in cases {
        let desc = format!("{r:?}");
        let s = compile(LabelSelector {
            match_expressions: Some(vec![r]),
            ..Default::default()
        });
        assert_eq!(s.matches(&l), want, "{desc}");
    }
}

#[test]
fn label_selector_errors_name_the_field() {
    let bad = [
        (
            req("app", "In", &[]),
            "matchExpressions[0].values",
            "at least one value",
        ),
        (
            req("app", "Exists", &["x"]),
            "matchExpressions[0].values",
            "no values",
        ),
        (
            req("app", "Equals", &["x"]),
            "matchExpressions[0].operator",
            "In, NotIn, Exists, DoesNotExist",
        ),
        (
            req("-app", "Exists", &[]),
            "matchExpressions[0].key",
            "alphanumeric",
        ),
        (
            req("Example.com/app", "Exists", &[]),
            "matchExpressions[0].key",
            "DNS subdomain",
        ),
        (
            req("app", "In", &["no spaces"]),
            "matchExpressions[0].values",
            "label value",
        ),
    ];
    for (r, field, needle) in bad {
        let err = Selector::from_label_selector(&LabelSelector {
            match_expressions: Some(vec![r]),
            ..Default::default()
        })
        .expect_err("invalid selector accepted");
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(needle), "{err}");
    }
}

// ---- property tests ----

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "app", "x.io/k", "has", "in"]).prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "1", "2", "web", "it's", "x y"]).prop_map(String::from)
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key(), prop::collection::btree_set(value(), 0..3)).prop_map(|(k, s)| Expr::In(k, s)),
        (key(), prop::collection::btree_set(value(), 0..3)).prop_map(|(k, s)| Expr::NotIn(k, s)),
        (key(), value()).prop_map(|(k, v)| Expr::Contains(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(Expr::not),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::and),
            prop::collection::vec(inner, 2..4).prop_map(Expr::or),
        ]
    })
}

fn label_set() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), value(), 0..5)
}

proptest! {
    #[test]
    fn printing_then_parsing_gives_the_same_tree(e in expr()) {
        let text = e.to_string();
        let parsed = Selector::parse(&text).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert_eq!(parsed.expr(), &e, "text {}", text);
    }

    #[test]
    fn negation_and_de_morgan(a in expr(), b in expr(), l in label_set()) {
        prop_assert_eq!(Expr::not(a.clone()).matches(&l), !a.matches(&l));
        let lhs = Expr::not(Expr::and(vec![a.clone(), b.clone()])).matches(&l);
        let rhs = Expr::or(vec![Expr::not(a.clone()), Expr::not(b.clone())]).matches(&l);
        prop_assert_eq!(lhs, rhs);
        prop_assert_eq!(Expr::and(vec![a.clone(), b.clone()]).matches(&l), a.matches(&l) && b.matches(&l));
        prop_assert_eq!(Expr::or(vec![a.clone(), b.clone()]).matches(&l), a.matches(&l) || b.matches(&l));
    }

    #[test]
    fn parser_never_panics_and_errors_point_inside(text in "[ a-z()!&|='{},.\"]{0,40}") {
        if let Err(e) = Selector::parse(&text) {
            prop_assert!(e.position <= text.chars().count());
        }
    }

    /// The compiled LabelSelector agrees with a direct transcription of the
    /// upstream rules, for every selector and label set.
    #[test]
    fn label_selector_matches_reference(
        match_labels in prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
            prop::sample::select(vec!["1", "2"]).prop_map(String::from), 0..3),
        exprs in prop::collection::vec((
            prop::sample::select(vec!["a", "b", "c"]),
            prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
            prop::collection::vec(prop::sample::select(vec!["1", "2", "3"]), 1..3)), 0..4),
        l in prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
            prop::sample::select(vec!["1", "2", "3"]).prop_map(String::from), 0..3),
    ) {
        let reqs: Vec<LabelSelectorRequirement> = exprs.iter().map(|(k, op, vals)| {
            let vals: Vec<&str> = if op.starts_with("Exists") || op.starts_with("Does") { vec![] } else { vals.clone() };
            req(k, op, &vals)
        }).collect();
        let ls = LabelSelector { match_labels: Some(match_labels.clone()), match_expressions: Some(reqs.clone()) };
        let compiled = Selector::from_label_selector(&ls).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let reference = match_labels.iter().all(|(k, v)| l.get(k) == Some(v))
            && reqs.iter().all(|r| {
                let vals = r.values.clone().unwrap_or_default();
                match r.operator.as_str() {
                    "In" => l.get(&r.key).is_some_and(|v| vals.contains(v)),
                    "NotIn" => l.get(&r.key).is_none_or(|v| !vals.contains(v)),
                    "Exists" => l.contains_key(&r.key),
                    _ => !l.contains_key(&r.key),
                }
            });
        prop_assert_eq!(compiled.matches(&l), reference);
    }
}
