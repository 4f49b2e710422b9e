//! Custom resources against their CRD's structural schema, as the real server
//! treats them on write: unknown fields pruned (or rejected under
//! `fieldValidation=Strict`), `default`s filled in, and the common value
//! validations (type, required, enum, bounds, lengths, nullable). Not covered:
//! `pattern`, `format`, CEL rules (`x-kubernetes-validations`), `oneOf`/`anyOf`.

use serde_json::{Value, json};

use super::status::FieldError;

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
}

/// Removes fields the schema does not declare; returns their paths.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, obj, "", true, &mut pruned);
    pruned
}

fn prune_at(schema: &Value, value: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let embedded = schema.get("x-kubernetes-embedded-resource") == Some(&json!(true));
            let keep_unknown =
                preserves_unknown(schema) || matches!(additional, Some(Value::Bool(true)));
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let p = child(path, &key);
                // apiVersion/kind/metadata of the object itself (or of an embedded
                // resource) are never pruned by the schema.
                if (root || embedded) && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&key)).or(match additional {
                    Some(s @ Value::Object(_)) => Some(s),
                    _ => None,
                });
                match (sub, map.get_mut(&key)) {
                    (Some(sub), Some(v)) => prune_at(sub, v, &p, false, pruned),
                    (None, _) if keep_unknown => {}
                    (None, _) => {
                        map.remove(&key);
                        pruned.push(p);
                    }
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune_at(item_schema, v, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of absent properties, recursively.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, sub) in props {
                    if !map.contains_key(key)
                        && let Some(d) = sub.get("default")
                    {
                        map.insert(key.clone(), d.clone());
                    }
                    if let Some(v) = map.get_mut(key) {
                        apply_defaults(sub, v);
                    }
                }
            }
            if let Some(sub @ Value::Object(_)) = schema.get("additionalProperties") {
                for v in map.values_mut() {
                    apply_defaults(sub, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for v in items {
                    apply_defaults(sub, v);
                }
            }
        }
        _ => {}
    }
}

/// Value validation; `metadata` (validated elsewhere) is skipped at the root.
pub fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_at(schema, obj, "", true, &mut errs);
    errs
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn validate_at(schema: &Value, value: &Value, path: &str, root: bool, errs: &mut Vec<FieldError>) {
    let shown = if path.is_empty() {
        "body".to_string()
    } else {
        path.to_string()
    };
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) && schema.get("type").is_some() {
            let t = schema["type"].as_str().unwrap_or("");
            errs.push(FieldError::invalid(
                shown.clone(),
                &json!("null"),
                format!("{shown} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    let actual = type_name(value);
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = t == actual || (t == "number" && actual == "integer");
        let int_or_string_ok = int_or_string && matches!(actual, "integer" | "string");
        if !ok && !int_or_string_ok {
            errs.push(FieldError::invalid(
                shown.clone(),
                &json!(actual),
                format!("{shown} in body must be of type {t}: \"{actual}\""),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|a| a.as_str().map(str::to_string).unwrap_or(a.to_string()))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(shown.clone(), value, &refs));
    }
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    if let Some(x) = value.as_f64() {
        if let Some(min) = num("minimum") {
            let excl = schema.get("exclusiveMinimum") == Some(&json!(true));
            if x < min || (excl && x == min) {
                errs.push(FieldError::invalid(
                    shown.clone(),
                    value,
                    format!("should be greater than or equal to {min}"),
                ));
            }
        }
        if let Some(max) = num("maximum") {
            let excl = schema.get("exclusiveMaximum") == Some(&json!(true));
            if x > max || (excl && x == max) {
                errs.push(FieldError::invalid(
                    shown.clone(),
                    value,
                    format!("should be less than or equal to {max}"),
                ));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as f64;
        if num("minLength").is_some_and(|m| len < m) {
            errs.push(FieldError::invalid(
                shown.clone(),
                value,
                format!("should be at least {} chars long", schema["minLength"]),
            ));
        }
        if num("maxLength").is_some_and(|m| len > m) {
            errs.push(FieldError::invalid(
                shown.clone(),
                value,
                format!("may not be more than {} bytes", schema["maxLength"]),
            ));
        }
    }
    match value {
        Value::Object(map) => {
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    errs.push(FieldError::required(child(path, req), ""));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in map {
                if root && k == "metadata" {
                    continue;
                }
                let sub =
                    props
                        .and_then(|p| p.get(k))
                        .or(match schema.get("additionalProperties") {
                            Some(s @ Value::Object(_)) => Some(s),
                            _ => None,
                        });
                if let Some(sub) = sub {
                    validate_at(sub, v, &child(path, k), false, errs);
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as f64;
            if num("minItems").is_some_and(|m| n < m) {
                errs.push(FieldError::invalid(
                    shown.clone(),
                    &json!(items.len()),
                    format!("should have at least {} items", schema["minItems"]),
                ));
            }
            if num("maxItems").is_some_and(|m| n > m) {
                errs.push(FieldError::invalid(
                    shown.clone(),
                    &json!(items.len()),
                    format!("must have at most {} items", schema["maxItems"]),
                ));
            }
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate_at(sub, v, &format!("{path}[{i}]"), false, errs);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }},
            "status": {"type": "object", "properties": {"ok": {"type": "boolean"}}}
        }})
    }

    #[test]
    fn prunes_unknown_fields_but_keeps_preserved_and_metadata() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a"}, "junk": 1,
            "spec": {"size": 1, "extra": true, "free": {"any": 1}, "labels": {"k": "v"}}});
        let pruned = prune(&schema(), &mut o);
        assert_eq!(pruned, vec!["junk", "spec.extra"]);
        assert_eq!(o["spec"]["free"]["any"], 1);
        assert_eq!(o["metadata"]["name"], "a");
    }

    #[test]
    fn defaults_and_validation() {
        let mut o = json!({"metadata": {}, "spec": {"size": 0, "tags": ["x", 3]}});
        apply_defaults(&schema(), &mut o);
        assert_eq!(o["spec"]["mode"], "a");
        let errs: Vec<String> = validate(&schema(), &o)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errs,
            vec![
                "spec.size: Invalid value: 0: should be greater than or equal to 1",
                "spec.tags[1]: Invalid value: \"integer\": spec.tags[1] in body must be of type string: \"integer\"",
            ]
        );
        let missing = validate(&schema(), &json!({"spec": {"mode": "c"}}));
        let fields: Vec<&str> = missing.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["spec.size", "spec.mode"]);
    }
}
