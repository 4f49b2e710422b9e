//! A kube-runtime reflector against the emulator across updates, deletes, a
//! server restart and 410 Gone (both after a restart and after compaction): the
//! cache must end up equal to the server's state every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use margay_lab::apiserver::TestApiServer;
use serde_json::json;

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .expect("valid pod")
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cached(store: &reflector::Store<Pod>) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = store
        .state()
        .iter()
        .map(|p| (p.name_any(), p.labels().get("v").cloned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn reflector_follows_updates_deletes_restarts_and_410() {
    let mut api = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(api.client());
    for n in ["web-1", "web-2"] {
        pods.create(&PostParams::default(), &pod(n, "web"))
            .await
            .unwrap();
    }

    let (store, writer) = reflector::store::<Pod>();
    // Count initial lists: one at start, one more after each 410 (a plain
    // reconnect resumes the watch without listing).
    let lists = Arc::new(AtomicUsize::new(0));
    let l = lists.clone();
    let stream = reflector(
        writer,
        watcher(pods.clone(), watcher::Config::default().labels("app=web")).default_backoff(),
    )
    .for_each(move |ev| {
        if matches!(ev, Ok(watcher::Event::Init)) {
            l.fetch_add(1, Ordering::SeqCst);
        }
        async {}
    });
    let task = tokio::spawn(stream);

    until("initial sync", || cached(&store).len() == 2).await;
    let relabel = |name: &'static str, v: &'static str| {
        let pods = pods.clone();
        async move {
            pods.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"v": v}}})),
            )
            .await
            .unwrap()
        }
    };
    relabel("web-1", "1").await;
    pods.delete("web-2", &DeleteParams::default())
        .await
        .unwrap();
    until("update and delete", || {
        cached(&store) == vec![("web-1".to_string(), Some("1".to_string()))]
    })
    .await;

    // Changes outside the selection advance the cluster version without the
    // watcher seeing them; after the restart the retained history starts at the
    // current version, so resuming from the watcher's version is 410 Gone.
    for i in 0..3 {
        pods.create(&PostParams::default(), &pod(&format!("db-{i}"), "db"))
            .await
            .unwrap();
    }
    let lists_before = lists.load(Ordering::SeqCst);
    api.restart().await.unwrap();
    relabel("web-1", "2").await;
    pods.create(&PostParams::default(), &pod("web-3", "web"))
        .await
        .unwrap();
    until("state after restart", || {
        cached(&store)
            == vec![
                ("web-1".to_string(), Some("2".to_string())),
                ("web-3".to_string(), None),
            ]
    })
    .await;
    until("a re-list after 410", || {
        lists.load(Ordering::SeqCst) > lists_before
    })
    .await;

    // Compaction plus a cut watch: 410 again, and the cache still converges.
    for i in 3..6 {
        pods.create(&PostParams::default(), &pod(&format!("db-{i}"), "db"))
            .await
            .unwrap();
    }
    let lists_before = lists.load(Ordering::SeqCst);
    api.compact();
    api.set_refusing(true);
    api.set_refusing(false);
    pods.delete("web-1", &DeleteParams::default())
        .await
        .unwrap();
    until("state after compaction", || {
        cached(&store) == vec![("web-3".to_string(), None)]
    })
    .await;
    until("a re-list after compaction", || {
        lists.load(Ordering::SeqCst) > lists_before
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn streaming_list_watcher_syncs_and_follows() {
    let api = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(api.client());
    pods.create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap();
    let (store, writer) = reflector::store::<Pod>();
    // sendInitialEvents=true: initial state as ADDED events closed by a bookmark.
    let cfg = watcher::Config::default().streaming_lists();
    let task = tokio::spawn(
        reflector(writer, watcher(pods.clone(), cfg).default_backoff()).for_each(|_| async {}),
    );
    until("streaming initial sync", || cached(&store).len() == 1).await;
    pods.create(&PostParams::default(), &pod("b", "web"))
        .await
        .unwrap();
    until("a change after the initial events", || {
        cached(&store).len() == 2
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn metadata_watcher_and_metadata_reads() {
    let api = TestApiServer::start().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(api.client());
    pods.create(&PostParams::default(), &pod("m1", "web"))
        .await
        .unwrap();
    let meta = pods.get_metadata("m1").await.unwrap();
    assert_eq!(
        meta.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(meta.metadata.labels.unwrap()["app"], "web");
    let list = pods
        .list_metadata(&kube::api::ListParams::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);

    let (store, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            Api::<kube::core::PartialObjectMeta<Pod>>::default_namespaced(api.client()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let task = tokio::spawn(stream.for_each(|_| async {}));
    let names = |s: &reflector::Store<kube::core::PartialObjectMeta<Pod>>| {
        let mut v: Vec<String> = s.state().iter().map(|m| m.name_any()).collect();
        v.sort();
        v
    };
    until("metadata sync", || names(&store) == vec!["m1"]).await;
    pods.create(&PostParams::default(), &pod("m2", "db"))
        .await
        .unwrap();
    pods.delete("m1", &DeleteParams::default()).await.unwrap();
    until("metadata changes", || names(&store) == vec!["m2"]).await;
    task.abort();
}
