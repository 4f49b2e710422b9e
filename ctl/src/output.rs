//! Printing: kubectl-style tables (columns padded, three spaces apart),
//! calicoctl-style boxed tables (`ipam show`), YAML and JSON.

use crate::kinds::{Column, KindInfo};
use serde::Serialize;
use serde_json::Value;

/// A plain table as `kubectl get` prints it.
pub fn plain_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Column alignment in a boxed table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A boxed table as calicoctl prints `ipam show`.
pub fn boxed_table(header: &[&str], align: &[Align], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s + "\n"
    };
    let line = |cells: Vec<String>, centred: bool| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            let (l, r) = if centred {
                (pad / 2, pad - pad / 2)
            } else if align.get(i) == Some(&Align::Right) {
                (pad, 0)
            } else {
                (0, pad)
            };
            s.push_str(&format!(" {}{c}{} |", " ".repeat(l), " ".repeat(r)));
        }
        s + "\n"
    };
    let mut out = rule.clone();
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect(), true));
    out.push_str(&rule);
    for r in rows {
        out.push_str(&line(r.clone(), false));
    }
    out.push_str(&rule);
    out
}

/// YAML of any serialisable value.
pub fn yaml<T: Serialize>(v: &T) -> anyhow::Result<String> {
    serde_saphyr::to_string(v).map_err(|e| anyhow::anyhow!("rendering YAML: {e}"))
}

/// Pretty JSON with a final newline.
pub fn json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

/// A `kind: List` of objects, as kubectl prints several objects.
pub fn list(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "metadata": {"resourceVersion": ""},
    })
}

/// The table of objects of one kind, from its printer columns.
pub fn object_table(
    kind: &KindInfo,
    objects: &[Value],
    wide: bool,
    now: jiff::Timestamp,
) -> String {
    let cols: Vec<Column> = kind
        .columns()
        .into_iter()
        .filter(|c| wide || c.priority == 0)
        .collect();
    let mut header = vec!["NAME".to_string()];
    header.extend(cols.iter().map(|c| c.name.to_uppercase()));
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|o| {
            let mut r = vec![
                o.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ];
            r.extend(cols.iter().map(|c| cell(o, c, now)));
            r
        })
        .collect();
    plain_table(&header, &rows)
}

fn cell(o: &Value, c: &Column, now: jiff::Timestamp) -> String {
    match json_path(o, &c.json_path) {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) if c.type_ == "date" => match s.parse::<jiff::Timestamp>() {
            Ok(t) => human_age(now.duration_since(t)),
            Err(_) => s.clone(),
        },
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// A simple JSONPath as CRD printer columns use: `.spec.cidr`, `.a.b[0].c`.
pub fn json_path<'a>(o: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = o;
    for seg in path.trim_start_matches('.').split('.') {
        if seg.is_empty() {
            continue;
        }
        let (field, index) = match seg.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// kubectl's age format: `45s`, `3m20s`, `17m`, `5h3m`, `30h`, `3d4h`, `120d`, `2y30d`.
pub fn human_age(d: jiff::SignedDuration) -> String {
    let s = d.as_secs().max(0);
    let (m, h, day) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if day < 8 {
        if h % 24 == 0 {
            format!("{day}d")
        } else {
            format!("{day}d{}h", h % 24)
        }
    } else if day < 365 * 2 {
        format!("{day}d")
    } else {
        format!("{}y{}d", day / 365, day % 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_as_kubectl_prints_them() {
        let a = |s: i64| human_age(jiff::SignedDuration::from_secs(s));
        assert_eq!(a(5), "5s");
        assert_eq!(a(200), "3m20s");
        assert_eq!(a(1020), "17m");
        assert_eq!(a(5 * 3600 + 180), "5h3m");
        assert_eq!(a(30 * 3600), "30h");
        assert_eq!(a(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(a(120 * 86400), "120d");
    }

    #[test]
    fn tables_pad_columns() {
        let t = plain_table(
            &["NAME".into(), "CIDR".into()],
            &[vec!["a-long-name".into(), "10.0.0.0/16".into()]],
        );
        assert_eq!(t, "NAME          CIDR\na-long-name   10.0.0.0/16\n");
        let b = boxed_table(
            &["A", "NUM"],
            &[Align::Left, Align::Right],
            &[vec!["xy".into(), "5".into()]],
        );
        assert_eq!(
            b,
            "+----+-----+\n| A  | NUM |\n+----+-----+\n| xy |   5 |\n+----+-----+\n"
        );
    }

    #[test]
    fn json_paths() {
        let v = serde_json::json!({"spec": {"a": [{"b": 1}]}});
        assert_eq!(json_path(&v, ".spec.a[0].b"), Some(&serde_json::json!(1)));
        assert_eq!(json_path(&v, ".spec.x"), None);
    }
}
