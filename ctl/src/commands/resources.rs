//! `get`, `apply`, `create`, `replace`, `delete` and `label` for every
//! margay.dev kind. Writes validate every object of every input first and
//! write nothing when any is invalid.

use crate::check::{self, Checked};
use crate::cli::{DeleteArgs, GetArgs, GlobalArgs, LabelArgs, OutputFormat, WriteArgs};
use crate::client::{self, ApiClient, api_error};
use crate::exit::{self, usage};
use crate::kinds::{self, KindInfo};
use crate::manifest;
use crate::output;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// What a write command does with each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Create, or replace what exists.
    Apply,
    /// Create; existing objects fail (or are skipped).
    Create { skip_exists: bool },
    /// Replace; missing objects fail.
    Replace,
}

fn api(c: &ApiClient, k: &KindInfo) -> Api<DynamicObject> {
    Api::all_with(c.client.clone(), &k.api_resource())
}

fn to_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// `(kind, name)` targets from `KIND NAME...` arguments or `-f` files.
fn targets(
    args: &[String],
    files: &[std::path::PathBuf],
    names_required: bool,
) -> anyhow::Result<Vec<(&'static KindInfo, Option<String>)>> {
    if !files.is_empty() {
        if !args.is_empty() {
            return Err(usage("give either KIND [NAME...] or -f FILE, not both"));
        }
        let docs = manifest::read_inputs(files)?;
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for d in &docs {
            match check::identify(d) {
                Ok((k, n)) => out.push((k, Some(n))),
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        return Ok(out);
    }
    let Some((kind, names)) = args.split_first() else {
        return Err(usage("missing KIND (e.g. ippools) or -f FILE"));
    };
    let k = kinds::lookup(kind).ok_or_else(|| kinds::unknown_kind(kind))?;
    if names.is_empty() {
        if names_required {
            return Err(usage(format!("missing NAME of the {} to act on", k.kind)));
        }
        return Ok(vec![(k, None)]);
    }
    Ok(names.iter().map(|n| (k, Some(n.clone()))).collect())
}

pub async fn get(g: &GlobalArgs, a: &GetArgs) -> anyhow::Result<u8> {
    let targets = targets(&a.args, &a.files, false)?;
    let c = &client::connect(g).await?;
    let mut found: Vec<(&'static KindInfo, Value)> = Vec::new();
    let mut failed = false;
    let single = targets.len() == 1 && targets[0].1.is_some();
    for (k, name) in &targets {
        let api = api(c, k);
        match name {
            Some(n) => match api.get_opt(n).await {
                Ok(Some(o)) => found.push((k, to_value(&o))),
                Ok(None) => {
                    eprintln!("error: {} {n:?} not found", k.qualified());
                    failed = true;
                }
                Err(e) => return Err(api_error(&c.url, &format!("getting {} {n:?}", k.kind), e)),
            },
            None => {
                let mut lp = ListParams::default();
                if let Some(sel) = &a.selector {
                    lp = lp.labels(sel);
                }
                let list = api
                    .list(&lp)
                    .await
                    .map_err(|e| api_error(&c.url, &format!("listing {}", k.plural), e))?;
                let mut items: Vec<Value> = list.items.iter().map(to_value).collect();
                items.sort_by(|x, y| name_of(x).cmp(name_of(y)));
                if items.is_empty() && matches!(a.output, OutputFormat::Table | OutputFormat::Wide)
                {
                    eprintln!("No {} found.", k.plural);
                }
                found.extend(items.into_iter().map(|v| (*k, v)));
            }
        }
    }
    print_objects(&found, a.output, single)?;
    Ok(if failed { exit::ERROR } else { exit::OK })
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn print_objects(
    found: &[(&'static KindInfo, Value)],
    format: OutputFormat,
    single: bool,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table | OutputFormat::Wide => {
            // One table per kind, in the order the kinds first appear.
            let mut order: Vec<&str> = Vec::new();
            let mut by_kind: BTreeMap<&str, (&KindInfo, Vec<Value>)> = BTreeMap::new();
            for (k, v) in found {
                if !by_kind.contains_key(k.kind) {
                    order.push(k.kind);
                }
                by_kind
                    .entry(k.kind)
                    .or_insert_with(|| (k, Vec::new()))
                    .1
                    .push(v.clone());
            }
            let now = jiff::Timestamp::now();
            let tables: Vec<String> = order
                .iter()
                .filter_map(|kind| by_kind.get(kind))
                .map(|(k, objs)| output::object_table(k, objs, format == OutputFormat::Wide, now))
                .collect();
            print!("{}", tables.join("\n"));
        }
        OutputFormat::Yaml | OutputFormat::Json => {
            let v = if single && found.len() == 1 {
                found[0].1.clone()
            } else {
                output::list(found.iter().map(|(_, v)| v.clone()).collect())
            };
            if format == OutputFormat::Yaml {
                print!("{}", output::yaml(&v)?);
            } else {
                print!("{}", output::json(&v)?);
            }
        }
    }
    Ok(())
}

/// Metadata the server sets: never sent on create.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn for_write(c: &Checked, keep_version: bool) -> Value {
    let mut v = c.value.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in SERVER_METADATA {
            m.remove(*f);
        }
        if !keep_version {
            m.remove("resourceVersion");
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

fn refuse_ipam_internal(objs: &[(&KindInfo, String)], allowed: bool) -> anyhow::Result<()> {
    if allowed {
        return Ok(());
    }
    let internal: Vec<String> = objs
        .iter()
        .filter(|(k, _)| k.ipam_internal)
        .map(|(k, n)| format!("{} {n:?}", k.kind))
        .collect();
    if internal.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{} written by Margay's IPAM only (changing them by hand can hand one address to two pods); \
         use `margayctl ipam release`/`ipam configure`, or pass --allow-ipam-writes to repair by hand. Nothing was written.",
        internal.join(", ")
    )
}

pub async fn write(g: &GlobalArgs, a: &WriteArgs, mode: Mode) -> anyhow::Result<u8> {
    let docs = manifest::read_inputs(&a.files)?;
    if docs.is_empty() {
        anyhow::bail!("no objects in the given files");
    }
    let checked = match check::check_documents(&docs) {
        Ok(c) => c,
        Err(problems) => return Ok(refuse(&problems)),
    };
    let ids: Vec<(&KindInfo, String)> = checked.iter().map(|c| (c.kind, c.name.clone())).collect();
    refuse_ipam_internal(&ids, a.allow_ipam_writes)?;
    let c = &client::connect(g).await?;
    if checked.iter().any(|x| x.kind.kind == "IPPool") {
        let pools: Api<margay_api::IPPool> = Api::all(c.client.clone());
        let stored = pools
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error(&c.url, "listing IPPools", e))?;
        if let Err(problems) = check::check_pools_together(&checked, &stored.items) {
            return Ok(refuse(&problems));
        }
    }
    let pp = PostParams {
        dry_run: a.dry_run,
        field_manager: Some("margayctl".into()),
    };
    let suffix = if a.dry_run { " (server dry run)" } else { "" };
    let mut failures = 0;
    for obj in &checked {
        match write_one(c, obj, mode, &pp).await {
            Ok(verb) => println!("{} {verb}{suffix}", obj.display()),
            Err(e) => {
                eprintln!("error: {}: {e:#}", obj.display());
                failures += 1;
            }
        }
    }
    if failures > 0 {
        eprintln!(
            "{failures} of {} objects failed (the others were written)",
            checked.len()
        );
        return Ok(exit::ERROR);
    }
    Ok(exit::OK)
}

fn refuse(problems: &[String]) -> u8 {
    for p in problems {
        eprintln!("error: {p}");
    }
    eprintln!(
        "nothing was written: {} problem{} found",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    exit::ERROR
}

async fn write_one(
    c: &ApiClient,
    obj: &Checked,
    mode: Mode,
    pp: &PostParams,
) -> anyhow::Result<&'static str> {
    let api = api(c, obj.kind);
    let what = |verb: &str| format!("{verb} {} {:?}", obj.kind.kind, obj.name);
    let file_version = obj
        .value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let existing = match mode {
        Mode::Create { .. } => None,
        _ => api
            .get_opt(&obj.name)
            .await
            .map_err(|e| api_error(&c.url, &what("reading"), e))?,
    };
    let Some(current) = existing else {
        if mode == Mode::Replace {
            anyhow::bail!("not found: `replace` needs an existing object (use apply or create)");
        }
        let create = serde_json::from_value::<DynamicObject>(for_write(obj, false))?;
        return match api.create(pp, &create).await {
            Ok(_) => Ok("created"),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                if mode == (Mode::Create { skip_exists: true }) {
                    Ok("skipped (exists)")
                } else {
                    anyhow::bail!("already exists (use apply or replace, or create --skip-exists)")
                }
            }
            Err(e) => Err(api_error(&c.url, &what("creating"), e)),
        };
    };
    if unchanged(obj, &to_value(&current)) {
        return Ok("unchanged");
    }
    let mut v = for_write(obj, true);
    let version = file_version.or(current.metadata.resource_version.clone());
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(version));
    }
    let replace = serde_json::from_value::<DynamicObject>(v)?;
    match api.replace(&obj.name, pp, &replace).await {
        Ok(_) => Ok("configured"),
        Err(kube::Error::Api(s)) if s.code == 409 => anyhow::bail!(
            "conflict: the object changed since the resourceVersion given ({}); read it again",
            s.message
        ),
        Err(e) => Err(api_error(&c.url, &what("replacing"), e)),
    }
}

/// Spec, labels and annotations as the file has them equal the stored ones.
fn unchanged(obj: &Checked, current: &Value) -> bool {
    let spec_same = (obj.kind.normal_spec)(&obj.value) == (obj.kind.normal_spec)(current);
    let meta = |v: &Value, f: &str| {
        v.pointer(&format!("/metadata/{f}"))
            .cloned()
            .filter(|x| x.as_object().is_some_and(|m| !m.is_empty()))
    };
    spec_same
        && meta(&obj.value, "labels") == meta(current, "labels")
        && meta(&obj.value, "annotations") == meta(current, "annotations")
}

pub async fn delete(g: &GlobalArgs, a: &DeleteArgs) -> anyhow::Result<u8> {
    let targets = targets(&a.args, &a.files, true)?;
    let ids: Vec<(&KindInfo, String)> = targets
        .iter()
        .filter_map(|(k, n)| n.clone().map(|n| (*k, n)))
        .collect();
    refuse_ipam_internal(&ids, a.allow_ipam_writes)?;
    let c = &client::connect(g).await?;
    let dp = DeleteParams {
        dry_run: a.dry_run,
        ..DeleteParams::default()
    };
    let suffix = if a.dry_run { " (server dry run)" } else { "" };
    let mut failures = 0;
    for (k, name) in &ids {
        match api(c, k).delete(name, &dp).await {
            Ok(_) => println!("{}/{name} deleted{suffix}", k.qualified()),
            Err(kube::Error::Api(s)) if s.is_not_found() && a.skip_not_found => {
                println!("{}/{name} not found (skipped)", k.qualified())
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                eprintln!("error: {}/{name} not found", k.qualified());
                failures += 1;
            }
            Err(e) => {
                eprintln!(
                    "error: {:#}",
                    api_error(&c.url, &format!("deleting {} {name:?}", k.kind), e)
                );
                failures += 1;
            }
        }
    }
    Ok(if failures > 0 { exit::ERROR } else { exit::OK })
}

/// A label change: set `key` to `Some(value)` or remove it (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelChange {
    pub key: String,
    pub value: Option<String>,
}

/// Parses `key=value` and `key-`, checking Kubernetes' label syntax.
pub fn parse_label(s: &str) -> Result<LabelChange, String> {
    let (key, value) = if let Some((k, v)) = s.split_once('=') {
        (k, Some(v.to_string()))
    } else if let Some(k) = s.strip_suffix('-') {
        (k, None)
    } else {
        return Err(format!(
            "{s:?}: a label change is key=value (set) or key- (remove)"
        ));
    };
    check_label_key(key).map_err(|e| format!("label key {key:?}: {e}"))?;
    if let Some(v) = &value
        && !margay_api::names::is_label_value(v)
    {
        return Err(format!(
            "label {key}: value {v:?}: allowed at most 63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"
        ));
    }
    Ok(LabelChange {
        key: key.to_string(),
        value,
    })
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !margay_api::names::is_dns_subdomain(p)
    {
        return Err("the prefix must be a DNS subdomain (e.g. example.com)".into());
    }
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(
            "the name must be 1-63 alphanumerics, '-', '_' or '.', alphanumeric at both ends"
                .into(),
        )
    }
}

pub async fn label(g: &GlobalArgs, a: &LabelArgs) -> anyhow::Result<u8> {
    let (target_args, label_args): (Vec<String>, Vec<String>) = if a.files.is_empty() {
        if a.args.len() < 2 {
            return Err(usage("missing KIND NAME (or -f FILE) before the labels"));
        }
        (a.args[..2].to_vec(), a.args[2..].to_vec())
    } else {
        (Vec::new(), a.args.clone())
    };
    if label_args.is_empty() {
        return Err(usage("no labels given: key=value to set, key- to remove"));
    }
    let changes: Vec<LabelChange> = label_args
        .iter()
        .map(|s| parse_label(s))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let targets = targets(&target_args, &a.files, true)?;
    let c = &client::connect(g).await?;
    let mut failures = 0;
    for (k, name) in targets {
        let Some(name) = name else { continue };
        let api = api(c, k);
        let current = match api.get_opt(&name).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                eprintln!("error: {}/{name} not found", k.qualified());
                failures += 1;
                continue;
            }
            Err(e) => {
                return Err(api_error(
                    &c.url,
                    &format!("reading {} {name:?}", k.kind),
                    e,
                ));
            }
        };
        let labels = current.metadata.labels.clone().unwrap_or_default();
        let mut patch = serde_json::Map::new();
        let mut refused = Vec::new();
        for ch in &changes {
            match (&ch.value, labels.get(&ch.key)) {
                (Some(v), Some(old)) if old != v && !a.overwrite => refused.push(format!(
                    "label {:?} already has the value {old:?}: pass --overwrite to change it",
                    ch.key
                )),
                (Some(v), Some(old)) if old == v => {}
                (Some(v), _) => {
                    patch.insert(ch.key.clone(), json!(v));
                }
                (None, Some(_)) => {
                    patch.insert(ch.key.clone(), Value::Null);
                }
                (None, None) => {}
            }
        }
        if !refused.is_empty() {
            eprintln!("error: {}/{name}: {}", k.qualified(), refused.join("; "));
            failures += 1;
            continue;
        }
        if patch.is_empty() {
            println!("{}/{name} not labeled (no change)", k.qualified());
            continue;
        }
        // The resourceVersion makes the patch conditional: no lost update if
        // someone else changed the object since we read it.
        let body = json!({"metadata": {
            "labels": Value::Object(patch),
            "resourceVersion": current.metadata.resource_version,
        }});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => println!("{}/{name} labeled", k.qualified()),
            Err(e) => {
                eprintln!(
                    "error: {:#}",
                    api_error(&c.url, &format!("labelling {} {name:?}", k.kind), e)
                );
                failures += 1;
            }
        }
    }
    Ok(if failures > 0 { exit::ERROR } else { exit::OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_arguments() {
        assert_eq!(
            parse_label("zone=east"),
            Ok(LabelChange {
                key: "zone".into(),
                value: Some("east".into())
            })
        );
        assert_eq!(
            parse_label("example.com/zone-"),
            Ok(LabelChange {
                key: "example.com/zone".into(),
                value: None
            })
        );
        assert!(parse_label("zone").unwrap_err().contains("key=value"));
        assert!(parse_label("zone=a b").unwrap_err().contains("value"));
        assert!(parse_label("-zone=a").unwrap_err().contains("key"));
        assert!(
            parse_label("Bad_Prefix!/x=1")
                .unwrap_err()
                .contains("prefix")
        );
    }
}
