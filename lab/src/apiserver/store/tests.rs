//! Store behaviour without HTTP.

use super::*;

fn store() -> Store {
    Store::new(100)
}

fn def(s: &Store, g: &str, r: &str) -> ResourceDef {
    s.registry()
        .all()
        .iter()
        .find(|d| d.group == g && d.resource == r)
        .cloned()
        .unwrap()
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}})
}

#[test]
fn fresh_store_has_the_four_namespaces_labelled() {
    let s = store();
    let d = def(&s, "", "namespaces");
    let list = s.list(&d, None, &ListOptions::default()).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert_eq!(
        list["items"][0]["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "default"
    );
    assert_eq!(list["items"][0]["status"]["phase"], "Active");
}

#[test]
fn create_conflicts_and_versions() {
    let mut s = store();
    let d = def(&s, "", "configmaps");
    let o = s
        .create(&d, Some("default"), cm("a"), &WriteOptions::default())
        .unwrap()
        .object;
    let rv1: u64 = o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        s.create(&d, Some("default"), cm("a"), &WriteOptions::default())
            .unwrap_err()
            .reason,
        "AlreadyExists"
    );
    assert_eq!(
        s.create(&d, Some("nope"), cm("b"), &WriteOptions::default())
            .unwrap_err()
            .code,
        404
    );
    let mut upd = o.clone();
    upd["data"]["a"] = json!("2");
    let o2 = s
        .update(
            &d,
            Some("default"),
            "a",
            upd.clone(),
            Subresource::Main,
            &WriteOptions::default(),
        )
        .unwrap()
        .object;
    let rv2: u64 = o2["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(o2["metadata"]["generation"], 2);
    // The same stale body again: 409.
    let e = s
        .update(
            &d,
            Some("default"),
            "a",
            upd,
            Subresource::Main,
            &WriteOptions::default(),
        )
        .unwrap_err();
    assert_eq!((e.code, e.reason), (409, "Conflict"));
    // A no-op update keeps the version.
    let o3 = s
        .update(
            &d,
            Some("default"),
            "a",
            o2.clone(),
            Subresource::Main,
            &WriteOptions::default(),
        )
        .unwrap();
    assert!(o3.changes.is_empty());
    assert_eq!(
        o3.object["metadata"]["resourceVersion"],
        o2["metadata"]["resourceVersion"]
    );
}

#[test]
fn generate_name_and_pagination_with_consistent_snapshot() {
    let mut s = store();
    let d = def(&s, "", "configmaps");
    for i in 0..5 {
        s.create(
            &d,
            Some("default"),
            cm(&format!("c{i}")),
            &WriteOptions::default(),
        )
        .unwrap();
    }
    let g = s
        .create(
            &d,
            Some("default"),
            json!({"metadata": {"generateName": "gen-"}}),
            &WriteOptions::default(),
        )
        .unwrap();
    let gname = g.object["metadata"]["name"].as_str().unwrap().to_string();
    assert!(gname.starts_with("gen-") && gname.len() == 9);
    let page1 = s
        .list(
            &d,
            Some("default"),
            &ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1["metadata"]["remainingItemCount"], 4);
    let tok = page1["metadata"]["continue"].as_str().unwrap().to_string();
    // A change after page 1 must not show in later pages of the same list.
    s.delete(&d, Some("default"), "c3", &DeleteOptions::default())
        .unwrap();
    let mut names = vec![];
    let mut cont = Some(tok);
    while let Some(c) = cont {
        let p = s
            .list(
                &d,
                Some("default"),
                &ListOptions {
                    limit: Some(2),
                    continue_token: Some(c),
                    ..Default::default()
                },
            )
            .unwrap();
        names.extend(
            p["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
        );
        cont = p["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(
        names,
        vec!["c2".to_string(), "c3".into(), "c4".into(), gname]
    );
    s.compact();
    let e = s
        .list(
            &d,
            Some("default"),
            &ListOptions {
                limit: Some(2),
                continue_token: page1["metadata"]["continue"].as_str().map(str::to_string),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code, 410);
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let mut s = store();
    let d = def(&s, "", "configmaps");
    let mut o = cm("f");
    o["metadata"]["finalizers"] = json!(["example.com/hold"]);
    s.create(&d, Some("default"), o, &WriteOptions::default())
        .unwrap();
    let del = s
        .delete(&d, Some("default"), "f", &DeleteOptions::default())
        .unwrap();
    assert!(del.object["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(del.changes[0].kind, ChangeKind::Modified);
    let mut cur = s.get(&d, Some("default"), "f").unwrap();
    cur["metadata"]["finalizers"] = json!(["example.com/hold", "x/new"]);
    assert_eq!(
        s.update(
            &d,
            Some("default"),
            "f",
            cur.clone(),
            Subresource::Main,
            &WriteOptions::default()
        )
        .unwrap_err()
        .code,
        422
    );
    cur["metadata"]["finalizers"] = json!([]);
    let out = s
        .update(
            &d,
            Some("default"),
            "f",
            cur,
            Subresource::Main,
            &WriteOptions::default(),
        )
        .unwrap();
    assert_eq!(out.changes.last().unwrap().kind, ChangeKind::Deleted);
    assert_eq!(s.get(&d, Some("default"), "f").unwrap_err().code, 404);
}

#[test]
fn namespace_deletion_removes_content_then_itself() {
    let mut s = store();
    let nsd = def(&s, "", "namespaces");
    let d = def(&s, "", "configmaps");
    s.create(
        &nsd,
        None,
        json!({"metadata": {"name": "t"}}),
        &WriteOptions::default(),
    )
    .unwrap();
    let mut held = cm("held");
    held["metadata"]["finalizers"] = json!(["x/y"]);
    s.create(&d, Some("t"), held, &WriteOptions::default())
        .unwrap();
    s.create(&d, Some("t"), cm("plain"), &WriteOptions::default())
        .unwrap();
    s.delete(&nsd, None, "t", &DeleteOptions::default())
        .unwrap();
    assert_eq!(
        s.get(&nsd, None, "t").unwrap()["status"]["phase"],
        "Terminating"
    );
    assert_eq!(s.get(&d, Some("t"), "plain").unwrap_err().code, 404);
    assert_eq!(
        s.create(&d, Some("t"), cm("late"), &WriteOptions::default())
            .unwrap_err()
            .code,
        403
    );
    let mut h = s.get(&d, Some("t"), "held").unwrap();
    h["metadata"]["finalizers"] = json!([]);
    s.update(
        &d,
        Some("t"),
        "held",
        h,
        Subresource::Main,
        &WriteOptions::default(),
    )
    .unwrap();
    assert_eq!(s.get(&nsd, None, "t").unwrap_err().code, 404);
}

#[test]
fn status_subresource_separates_spec_and_status() {
    let mut s = store();
    let d = def(&s, "", "pods");
    let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}});
    let o = s
        .create(&d, Some("default"), pod, &WriteOptions::default())
        .unwrap()
        .object;
    assert_eq!(o["status"]["phase"], "Pending");
    let mut st = o.clone();
    st["status"]["phase"] = json!("Running");
    st["spec"]["nodeName"] = json!("ignored");
    let o2 = s
        .update(
            &d,
            Some("default"),
            "p",
            st,
            Subresource::Status,
            &WriteOptions::default(),
        )
        .unwrap()
        .object;
    assert_eq!(o2["status"]["phase"], "Running");
    assert!(o2["spec"].get("nodeName").is_none());
    assert_eq!(o2["metadata"]["generation"], 1);
    let mut main = o2.clone();
    main["status"]["phase"] = json!("Failed");
    main["spec"]["nodeName"] = json!("n1");
    let o3 = s
        .update(
            &d,
            Some("default"),
            "p",
            main,
            Subresource::Main,
            &WriteOptions::default(),
        )
        .unwrap()
        .object;
    assert_eq!(o3["status"]["phase"], "Running");
    assert_eq!(o3["spec"]["nodeName"], "n1");
}

#[test]
fn services_get_distinct_cluster_ips_kept_across_updates() {
    let mut s = store();
    let d = def(&s, "", "services");
    let svc = |n: &str| json!({"metadata": {"name": n}, "spec": {"ports": [{"port": 80}]}});
    let a = s
        .create(&d, Some("default"), svc("a"), &WriteOptions::default())
        .unwrap()
        .object;
    let b = s
        .create(&d, Some("default"), svc("b"), &WriteOptions::default())
        .unwrap()
        .object;
    assert_eq!(a["spec"]["clusterIP"], "10.96.0.10");
    assert_eq!(b["spec"]["clusterIP"], "10.96.0.11");
    assert_eq!(b["spec"]["clusterIPs"], json!(["10.96.0.11"]));
    let mut taken = svc("c");
    taken["spec"]["clusterIP"] = json!("10.96.0.10");
    assert_eq!(
        s.create(&d, Some("default"), taken, &WriteOptions::default())
            .unwrap_err()
            .code,
        422
    );
    let mut upd = svc("a");
    upd["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"].clone();
    let a2 = s
        .update(
            &d,
            Some("default"),
            "a",
            upd,
            Subresource::Main,
            &WriteOptions::default(),
        )
        .unwrap()
        .object;
    assert_eq!(a2["spec"]["clusterIP"], "10.96.0.10");
}

#[test]
fn watch_window_and_state_round_trip() {
    let mut s = Store::new(2);
    let d = def(&s, "", "configmaps");
    let start = s.resource_version();
    for i in 0..3 {
        s.create(
            &d,
            Some("default"),
            cm(&format!("w{i}")),
            &WriteOptions::default(),
        )
        .unwrap();
    }
    assert_eq!(
        s.watch_start(&d, None, Some(&start.to_string()), false)
            .err()
            .unwrap()
            .code,
        410
    );
    let w = s
        .watch_start(&d, None, Some(&(start + 1).to_string()), false)
        .unwrap();
    assert_eq!(w.initial.len(), 2);
    let restored = Store::from_state(s.to_state(), 10);
    assert_eq!(restored.resource_version(), s.resource_version());
    assert_eq!(
        restored.get(&d, Some("default"), "w1").unwrap(),
        s.get(&d, Some("default"), "w1").unwrap()
    );
    assert_eq!(
        restored
            .watch_start(&d, None, Some(&(start + 2).to_string()), false)
            .err()
            .unwrap()
            .code,
        410
    );
}

/// The snapshot a save serializes (outside the store lock) is the state
/// file's format exactly, and keeps the version it was taken at while the
/// store moves on.
#[test]
fn state_snapshot_serializes_as_state_and_is_frozen() {
    let mut s = Store::new(10);
    let d = def(&s, "", "configmaps");
    for i in 0..3 {
        s.create(
            &d,
            Some("default"),
            cm(&format!("s{i}")),
            &WriteOptions::default(),
        )
        .unwrap();
    }
    let snap = s.state_snapshot();
    let expected = serde_json::to_value(s.to_state()).unwrap();
    assert_eq!(serde_json::to_value(&snap).unwrap(), expected);
    // Later writes do not reach a snapshot already taken.
    s.create(&d, Some("default"), cm("later"), &WriteOptions::default())
        .unwrap();
    s.delete(&d, Some("default"), "s0", &DeleteOptions::default())
        .unwrap();
    assert_eq!(serde_json::to_value(&snap).unwrap(), expected);
    // And it restores as the state it was.
    let restored: State = serde_json::from_value(expected).unwrap();
    let restored = Store::from_state(restored, 10);
    assert!(restored.get(&d, Some("default"), "s0").is_ok());
    assert!(restored.get(&d, Some("default"), "later").is_err());
}
