//! The API emulator driven by kube-rs typed clients, as the agent, IPAM and
//! margayctl drive a real API server.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use margay_lab::apiserver::TestApiServer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// True for a transport failure (no HTTP answer), as a down server gives.
fn is_connection_error<T: std::fmt::Debug>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(e) if !matches!(e, kube::Error::Api(_)))
}

fn api_code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("valid pod")
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .expect("valid configmap")
}

/// Polls `f` until it returns Some, failing after 10 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn pods_crud_status_and_optimistic_concurrency() {
    let api = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(api.client());
    let created = pods
        .create(&PostParams::default(), &pod("p1", json!({"app": "web"})))
        .await
        .unwrap();
    assert!(created.uid().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert_eq!(
        api_code(
            pods.create(&PostParams::default(), &pod("p1", json!({})))
                .await
        ),
        409
    );

    let mut stale = pods.get("p1").await.unwrap();
    let mut fresh = stale.clone();
    fresh.spec.as_mut().unwrap().node_name = Some("node-1".into());
    let updated = pods
        .replace("p1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert!(
        updated.resource_version().unwrap().parse::<u64>().unwrap()
            > created.resource_version().unwrap().parse::<u64>().unwrap()
    );
    stale.labels_mut().insert("x".into(), "y".into());
    assert_eq!(
        api_code(pods.replace("p1", &PostParams::default(), &stale).await),
        409
    );

    // Status only through the status subresource; the main resource ignores it.
    let st = pods
        .patch_status(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.1.0.5"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(
        st.metadata.generation,
        Some(2),
        "status writes do not bump generation"
    );
    let main = pods
        .patch(
            "p1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(main.status.unwrap().phase.as_deref(), Some("Running"));

    let fields = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1,status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(fields.items.len(), 1);
    assert_eq!(
        pods.list(&ListParams::default().fields("spec.nodeName=node-2"))
            .await
            .unwrap()
            .items
            .len(),
        0
    );

    pods.delete("p1", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_code(pods.get("p1").await), 404);
    // A namespace that does not exist.
    let elsewhere: Api<Pod> = Api::namespaced(api.client(), "nowhere");
    assert_eq!(
        api_code(
            elsewhere
                .create(&PostParams::default(), &pod("p", json!({})))
                .await
        ),
        404
    );
}

#[tokio::test]
async fn two_writers_racing_on_one_object_exactly_one_wins() {
    let api = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    cms.create(&PostParams::default(), &cm("race", json!({})))
        .await
        .unwrap();
    for round in 0..20 {
        let base = cms.get("race").await.unwrap();
        let writers = (0..2).map(|w| {
            let (cms, mut obj) = (cms.clone(), base.clone());
            obj.data
                .get_or_insert_default()
                .insert("writer".into(), format!("{round}-{w}"));
            tokio::spawn(async move { cms.replace("race", &PostParams::default(), &obj).await })
        });
        let results: Vec<_> = futures::future::join_all(writers)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let wins = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "Conflict"))
            .count();
        assert_eq!((wins, conflicts), (1, 1), "round {round}: {results:?}");
    }
}

#[tokio::test]
async fn network_policy_defaulting_and_validation() {
    let api = TestApiServer::start().await.unwrap();
    let nps: Api<NetworkPolicy> = Api::default_namespaced(api.client());
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "egress-only-rules"},
        "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}
    }))
    .unwrap();
    let got = nps.create(&PostParams::default(), &np).await.unwrap();
    let spec = got.spec.unwrap();
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    assert_eq!(
        spec.egress.unwrap()[0].ports.as_ref().unwrap()[0]
            .protocol
            .as_deref(),
        Some("TCP")
    );

    let bad: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}
    }))
    .unwrap();
    match nps.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(
                s.message
                    .contains("spec.ingress[0].from[0].ipBlock.except[0]"),
                "{}",
                s.message
            );
            assert!(
                s.message.contains("must be a strict subset of `cidr`"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }
    assert_eq!(
        api_code(nps.get("bad").await),
        404,
        "a rejected object leaves nothing behind"
    );

    let namespaces: Api<Namespace> = Api::all(api.client());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(
        names,
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let ns = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        ns.labels()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("team-a")
    );
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "test.margay.dev",
    version = "v1",
    kind = "Gizmo",
    namespaced,
    status = "GizmoStatus",
    shortname = "gz"
)]
struct GizmoSpec {
    size: u32,
    #[serde(default)]
    colour: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
struct GizmoStatus {
    ready: bool,
}

#[tokio::test]
async fn derived_crd_is_served_and_unserved_with_its_crd() {
    let api = TestApiServer::start().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(api.client());
    crds.create(&PostParams::default(), &Gizmo::crd())
        .await
        .unwrap();
    let crd = crds.get("gizmos.test.margay.dev").await.unwrap();
    let conditions = crd.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );

    let gizmos: Api<Gizmo> = Api::default_namespaced(api.client());
    let g = gizmos
        .create(
            &PostParams::default(),
            &Gizmo::new(
                "g1",
                GizmoSpec {
                    size: 3,
                    colour: None,
                },
            ),
        )
        .await
        .unwrap();
    assert!(g.status.is_none());
    let g = gizmos
        .patch_status(
            "g1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert!(g.status.unwrap().ready);
    // Strategic merge patch is not for custom resources, as upstream.
    assert_eq!(
        api_code(
            gizmos
                .patch(
                    "g1",
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"spec": {"size": 4}}))
                )
                .await
        ),
        415
    );
    // Schema validation: wrong type is 422.
    assert_eq!(
        api_code(
            gizmos
                .patch(
                    "g1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"size": "big"}}))
                )
                .await
        ),
        422
    );
    // CRs have no unconditional update.
    let mut g = gizmos.get("g1").await.unwrap();
    g.metadata.resource_version = None;
    assert_eq!(
        api_code(gizmos.replace("g1", &PostParams::default(), &g).await),
        422
    );

    let discovery = api
        .client()
        .request_text(
            http::Request::get("/apis/test.margay.dev/v1")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(discovery.contains("\"gizmos\""), "{discovery}");

    crds.delete("gizmos.test.margay.dev", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the CRD to be gone", || {
        let crds = crds.clone();
        async move {
            crds.get_opt("gizmos.test.margay.dev")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert_eq!(api_code(gizmos.list(&ListParams::default()).await), 404);
    let gone = api
        .client()
        .request_text(
            http::Request::get("/apis/test.margay.dev/v1")
                .body(vec![])
                .unwrap(),
        )
        .await;
    assert!(matches!(gone, Err(kube::Error::Api(s)) if s.code == 404));
    // Re-created, the resource is served again and empty (its objects went with the CRD).
    crds.create(&PostParams::default(), &Gizmo::crd())
        .await
        .unwrap();
    assert!(
        gizmos
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn selectors_and_pagination() {
    let api = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    for (i, tier) in ["a", "b", "c", "a", "b", "c", "a"].iter().enumerate() {
        let labels = if i == 6 {
            json!({"other": "x"})
        } else {
            json!({"tier": tier, "n": i.to_string()})
        };
        cms.create(&PostParams::default(), &cm(&format!("cm-{i}"), labels))
            .await
            .unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    let q = |sel: &'static str| {
        let cms = cms.clone();
        async move { names(cms.list(&ListParams::default().labels(sel)).await.unwrap()) }
    };
    assert_eq!(q("tier=a").await, vec!["cm-0", "cm-3"]);
    assert_eq!(q("tier==b").await, vec!["cm-1", "cm-4"]);
    assert_eq!(
        q("tier!=a").await,
        vec!["cm-1", "cm-2", "cm-4", "cm-5", "cm-6"]
    );
    assert_eq!(
        q("tier in (a,c)").await,
        vec!["cm-0", "cm-2", "cm-3", "cm-5"]
    );
    assert_eq!(q("tier notin (a,c)").await, vec!["cm-1", "cm-4", "cm-6"]);
    assert_eq!(q("other").await, vec!["cm-6"]);
    assert_eq!(q("!tier").await, vec!["cm-6"]);
    assert_eq!(q("tier=a,n=3").await, vec!["cm-3"]);
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=cm-4"))
                .await
                .unwrap()
        ),
        vec!["cm-4"]
    );
    assert_eq!(
        api_code(cms.list(&ListParams::default().labels("tier in (")).await),
        400
    );
    assert_eq!(
        api_code(
            cms.list(&ListParams::default().fields("spec.nodeName=x"))
                .await
        ),
        400
    );

    // limit/continue walks everything exactly once.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
    // All namespaces.
    let all: Api<ConfigMap> = Api::all(api.client());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        7
    );
}

#[tokio::test]
async fn watch_applies_selectors_to_old_and_new_objects() {
    let api = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    cms.create(&PostParams::default(), &cm("w", json!({"app": "web"})))
        .await
        .unwrap();
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = cms
        .watch(&WatchParams::default().labels("app=web").timeout(60), &rv)
        .await
        .unwrap()
        .boxed();

    let relabel = |v: &'static str| {
        let cms = cms.clone();
        async move {
            cms.patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"app": v}}})),
            )
            .await
            .unwrap()
        }
    };
    relabel("db").await; // leaves the selection
    relabel("db2").await; // invisible: outside before and after
    relabel("web").await; // enters again
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &cm("other", json!({"app": "db"})))
        .await
        .unwrap();
    cms.delete("w", &DeleteParams::default()).await.unwrap();

    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .expect("watch event")
            .unwrap()
            .unwrap();
        kinds.push(match ev {
            WatchEvent::Added(o) => format!("ADDED {}", o.labels()["app"]),
            WatchEvent::Modified(o) => format!("MODIFIED {}", o.labels()["app"]),
            WatchEvent::Deleted(o) => format!("DELETED {}", o.labels()["app"]),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        });
    }
    assert_eq!(
        kinds,
        vec!["DELETED db", "ADDED web", "MODIFIED web", "DELETED web"]
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410_and_from_zero_gets_current_state() {
    let api = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    let first = cms
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    api.compact();
    let mut w = cms
        .watch(
            &WatchParams::default().timeout(10),
            &first.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match w.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    let mut w0 = cms
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = Vec::new();
    for _ in 0..2 {
        match w0.try_next().await.unwrap() {
            Some(WatchEvent::Added(o)) => names.push(o.name_any()),
            other => panic!("expected ADDED, got {other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, vec!["a", "b"]);
}

#[tokio::test]
async fn finalizers_hold_objects_until_removed() {
    let api = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    let mut c = cm("held", json!({}));
    c.metadata.finalizers = Some(vec!["test.margay.dev/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let held = cms.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let rv = held.resource_version().unwrap();
    let mut w = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Deleted(o)) => assert_eq!(o.name_any(), "held"),
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert_eq!(api_code(cms.get("held").await), 404);
    // Delete preconditions.
    let d = cms
        .create(&PostParams::default(), &cm("pre", json!({})))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    assert_eq!(api_code(cms.delete("pre", &dp).await), 409);
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: d.uid(),
            resource_version: d.resource_version(),
        }),
        ..Default::default()
    };
    cms.delete("pre", &dp).await.unwrap();
}

#[tokio::test]
async fn namespace_deletion_takes_its_objects() {
    let api = TestApiServer::start().await.unwrap();
    let nss: Api<Namespace> = Api::all(api.client());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "doomed");
    cms.create(&PostParams::default(), &cm("x", json!({})))
        .await
        .unwrap();
    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    assert!(nss.get_opt("doomed").await.unwrap().is_none());
    assert_eq!(api_code(cms.get("x").await), 404);
}

#[tokio::test]
async fn restart_keeps_objects_and_versions() {
    let mut api = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    let before = cms
        .create(&PostParams::default(), &cm("kept", json!({"a": "b"})))
        .await
        .unwrap();
    api.stop().await.unwrap();
    assert!(
        cms.list(&ListParams::default()).await.is_err(),
        "a stopped server refuses connections"
    );
    api.start_again().await.unwrap();
    let after = cms.get("kept").await.unwrap();
    assert_eq!(
        (after.uid(), after.resource_version()),
        (before.uid(), before.resource_version())
    );
    let next = cms
        .create(&PostParams::default(), &cm("new", json!({})))
        .await
        .unwrap();
    assert!(
        next.resource_version().unwrap().parse::<u64>().unwrap()
            > before.resource_version().unwrap().parse::<u64>().unwrap()
    );
}

#[tokio::test]
async fn fault_switch_refuses_and_reports() {
    let api = TestApiServer::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    api.set_refusing(true);
    let refused = cms.list(&ListParams::default()).await;
    assert!(is_connection_error(&refused), "{refused:?}");
    api.set_refusing(false);
    cms.list(&ListParams::default()).await.unwrap();

    // Over HTTP, as `margay-lab` and scripts use it.
    let put = http::Request::put("/_lab/faults")
        .body(br#"{"refuse": true, "latency_ms": 5}"#.to_vec())
        .unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&api.client().request_text(put).await.unwrap()).unwrap();
    assert_eq!(state, json!({"refuse": true, "latency_ms": 5}));
    let refused = cms.list(&ListParams::default()).await;
    assert!(is_connection_error(&refused), "{refused:?}");
    let put = http::Request::put("/_lab/faults")
        .body(br#"{"refuse": false}"#.to_vec())
        .unwrap();
    api.client().request_text(put).await.unwrap();
    let get = http::Request::get("/_lab/faults").body(vec![]).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&api.client().request_text(get).await.unwrap()).unwrap();
    assert_eq!(state, json!({"refuse": false, "latency_ms": 5}));
    cms.list(&ListParams::default()).await.unwrap();

    // Dry run validates without storing.
    cms.create(
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
        &cm("dry", json!({})),
    )
    .await
    .unwrap();
    assert_eq!(api_code(cms.get("dry").await), 404);
}

#[tokio::test]
async fn bookmarks_carry_the_latest_version() {
    let api = TestApiServer::builder()
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(api.client());
    let rv = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut w = cms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            }
            .timeout(30),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let created = cms
        .create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    // Changes elsewhere advance the version the next bookmark reports.
    let nss: Api<Namespace> = Api::all(api.client());
    let ns = nss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).unwrap(),
        )
        .await
        .unwrap();
    let want: u64 = ns.resource_version().unwrap().parse().unwrap();
    let mut saw_added = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.try_next())
            .await
            .expect("an event")
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => {
                assert_eq!(o.resource_version(), created.resource_version());
                saw_added = true;
            }
            WatchEvent::Bookmark(b) => {
                let at: u64 = b.metadata.resource_version.parse().unwrap();
                if at >= want {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_added, "the ADDED event precedes a bookmark past it");
}

#[tokio::test]
async fn kube_discovery_sees_builtins_and_crds() {
    let api = TestApiServer::start().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(api.client());
    crds.create(&PostParams::default(), &Gizmo::crd())
        .await
        .unwrap();
    let discovery = kube::Discovery::new(api.client()).run().await.unwrap();
    let gizmo = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Gizmo")
        .expect("Gizmo discovered");
    assert_eq!(
        (gizmo.0.group.as_str(), gizmo.0.plural.as_str()),
        ("test.margay.dev", "gizmos")
    );
    assert!(gizmo.1.supports_operation(kube::discovery::verbs::WATCH));
    assert!(discovery.has_group("networking.k8s.io"));
    // The dynamic API through what discovery found.
    let dynamic: Api<kube::api::DynamicObject> =
        Api::default_namespaced_with(api.client(), &gizmo.0);
    dynamic
        .create(&PostParams::default(), &serde_json::from_value(json!({"apiVersion": "test.margay.dev/v1", "kind": "Gizmo", "metadata": {"name": "d"}, "spec": {"size": 1}})).unwrap())
        .await
        .unwrap();
    assert_eq!(
        dynamic
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}
