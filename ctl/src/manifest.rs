//! Reading `-f` inputs: files, directories (their `.yaml`, `.yml` and `.json`
//! files, sorted) and `-` (stdin); YAML with several documents or JSON; a
//! `List` (or `IPPoolList`, ...) is expanded into its items, so the output of
//! `margayctl get -o yaml` can be applied again.

use anyhow::Context;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};

/// One object read from an input, with where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// `pools.yaml, document 2` (for messages).
    pub source: String,
    pub value: Value,
}

/// Every document of every input, in order.
pub fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Document>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            out.extend(parse_documents("stdin", &text)?);
        } else if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                })
                .collect();
            files.sort();
            for f in files {
                out.extend(read_file(&f)?);
            }
        } else {
            out.extend(read_file(p)?);
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<Document>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_documents(&path.display().to_string(), &text)
}

/// Splits `text` into documents (empty ones skipped, lists expanded).
pub fn parse_documents(name: &str, text: &str) -> anyhow::Result<Vec<Document>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| anyhow::anyhow!("{name}: not valid YAML or JSON: {e}"))?;
    let mut out = Vec::new();
    for (i, v) in docs.into_iter().enumerate() {
        let source = format!("{name}, document {}", i + 1);
        match v {
            Value::Null => {}
            Value::Object(ref m)
                if m.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && m.get("items").is_some_and(Value::is_array) =>
            {
                let items = m["items"].as_array().cloned().unwrap_or_default();
                for (j, item) in items.into_iter().enumerate() {
                    out.push(Document {
                        source: format!("{source}, item {}", j + 1),
                        value: item,
                    });
                }
            }
            other => out.push(Document {
                source,
                value: other,
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_documents_and_lists() {
        let text = "---\napiVersion: margay.dev/v1\nkind: IPPool\nmetadata: {name: a}\nspec: {cidr: 10.0.0.0/16}\n---\n---\nkind: List\napiVersion: v1\nitems:\n- {kind: BGPPeer, metadata: {name: p}}\n- {kind: BGPPeer, metadata: {name: q}}\n";
        let docs = parse_documents("f.yaml", text).unwrap();
        let names: Vec<&str> = docs
            .iter()
            .map(|d| d.value["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "p", "q"]);
        assert_eq!(docs[0].source, "f.yaml, document 1");
        assert!(docs[2].source.ends_with("item 2"), "{}", docs[2].source);
        assert_eq!(docs[0].value["spec"]["cidr"], "10.0.0.0/16");
    }

    #[test]
    fn json_is_read_too_and_garbage_is_an_error() {
        let docs =
            parse_documents("f.json", r#"{"kind": "IPPool", "spec": {"blockSize": 26}}"#).unwrap();
        assert_eq!(docs[0].value["spec"]["blockSize"], 26);
        assert!(parse_documents("bad.yaml", "a: [unclosed").is_err());
    }
}
