//! The HTTP front: turns requests into store operations and answers as the real
//! API server does (status codes, `Status` errors, Tables, chunked watches),
//! plus the lab's fault switch at `/_lab/faults`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast, mpsc, watch as tokio_watch};

use super::discovery;
use super::patch::PatchType;
use super::resources::ResourceDef;
use super::routing::{ResourcePath, Route, query_params, route};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult};
use super::store::{
    Change, DeleteOptions, FieldValidation, ListOptions, Store, Subresource, WriteOptions,
    WriteOutcome,
};
use super::table::{self, IncludeObject};
use super::watch::{self, Format, WatchFilter, WatchParams};

pub type Body = BoxBody<Bytes, Infallible>;

/// Request bodies above this are refused, as upstream (3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// State shared by every connection of one server.
pub struct Shared {
    pub store: Mutex<Store>,
    pub events: broadcast::Sender<Arc<Change>>,
    pub refuse: AtomicBool,
    pub latency_ms: AtomicU64,
    /// Bumped to end every open watch (when the server starts refusing).
    pub watch_epoch: tokio_watch::Sender<u64>,
    /// Told after every change, for persistence.
    pub dirty: Notify,
    /// Held while the state file is written.
    pub save_lock: Mutex<()>,
    pub bookmark_interval: Duration,
}

impl Shared {
    pub fn new(store: Store, latency: Duration, bookmark_interval: Duration) -> Self {
        let (events, _) = broadcast::channel(1 << 16);
        let (watch_epoch, _) = tokio_watch::channel(0);
        Self {
            store: Mutex::new(store),
            events,
            refuse: AtomicBool::new(false),
            latency_ms: AtomicU64::new(latency.as_millis() as u64),
            watch_epoch,
            dirty: Notify::new(),
            save_lock: Mutex::new(()),
            bookmark_interval,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-applied change:
        // commits are single map operations.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_refusing(&self, refuse: bool) {
        let was = self.refuse.swap(refuse, Ordering::SeqCst);
        if refuse && !was {
            self.watch_epoch.send_modify(|e| *e += 1);
        }
    }

    /// Publishes committed changes (under the store lock, so in order).
    fn publish(&self, changes: &[Arc<Change>]) {
        for c in changes {
            let _ = self.events.send(c.clone());
        }
        if !changes.is_empty() {
            self.dirty.notify_one();
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// Returned to hyper to drop a connection while the server refuses.
#[derive(Debug, thiserror::Error)]
#[error("the API server is refusing requests (lab fault switch)")]
pub struct Refused;

/// Makes the next close of `fd` a TCP reset (SO_LINGER 0).
fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: fd is the socket of the connection this request arrived on, open
    // for as long as the connection (which owns this service) lives; the option
    // value is a properly sized linger struct.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Serves one request arriving on the connection whose socket is `fd`.
pub async fn handle(
    shared: Arc<Shared>,
    stop: tokio_watch::Receiver<bool>,
    fd: RawFd,
    req: Request<Incoming>,
) -> Result<Response<Body>, Refused> {
    let path = req.uri().path().to_string();
    let r = route(&path);
    if matches!(r, Route::Faults | Route::Compact) {
        return Ok(lab_endpoint(&shared, r, req).await);
    }
    let latency = shared.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if shared.refuse.load(Ordering::SeqCst) {
        // A down API server: the connection is reset, no answer. (A 503 would
        // make kube-rs clients retry with backoff for minutes.)
        reset_on_close(fd);
        return Err(Refused);
    }
    Ok(match dispatch(&shared, stop, r, req).await {
        Ok(resp) => resp,
        Err(e) => error_response(&e),
    })
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::request_too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body failed: {e}"
        ))),
    }
}

/// A create/update body: JSON, or protobuf for the kinds [`protobuf`] knows.
fn parse_object(content_type: &str, bytes: &[u8]) -> ApiResult<Value> {
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return super::protobuf::decode(bytes).map_err(|e| {
            ApiError::unsupported_media_type(format!(
                "the body of the request could not be decoded as protobuf: {e}"
            ))
        });
    }
    if !content_type.is_empty() && !content_type.starts_with("application/json") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/vnd.kubernetes.protobuf (got {content_type})"
        )));
    }
    parse_json(bytes)
}

fn parse_json(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
struct Faults {
    refuse: Option<bool>,
    latency_ms: Option<u64>,
}

async fn lab_endpoint(shared: &Shared, r: Route, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    if r == Route::Compact {
        if method != Method::POST {
            return error_response(&ApiError::method_not_allowed());
        }
        let rv = {
            let mut s = shared.lock();
            s.compact();
            s.resource_version()
        };
        return json_response(StatusCode::OK, &json!({"compactedTo": rv}));
    }
    if method == Method::PUT || method == Method::POST {
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(e) => return error_response(&e),
        };
        let f: Faults = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => {
                return error_response(&ApiError::bad_request(format!(
                    "faults: expected {{\"refuse\": bool, \"latency_ms\": N}}: {e}"
                )));
            }
        };
        if let Some(ms) = f.latency_ms {
            shared.latency_ms.store(ms, Ordering::SeqCst);
        }
        if let Some(refuse) = f.refuse {
            shared.set_refusing(refuse);
        }
    } else if method != Method::GET {
        return error_response(&ApiError::method_not_allowed());
    }
    let now = Faults {
        refuse: Some(shared.refuse.load(Ordering::SeqCst)),
        latency_ms: Some(shared.latency_ms.load(Ordering::SeqCst)),
    };
    json_response(
        StatusCode::OK,
        &serde_json::to_value(now).unwrap_or_default(),
    )
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Only JSON (and the Table / discovery variants of it) is spoken.
fn check_accept(accept: &str) -> ApiResult<()> {
    if accept.is_empty() {
        return Ok(());
    }
    let ok = accept.split(',').any(|part| {
        let mt = part.split(';').next().unwrap_or("").trim();
        matches!(
            mt,
            "application/json"
                | "*/*"
                | "application/*"
                | "application/json-patch+json"
                | "application/merge-patch+json"
        )
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_acceptable(
            "only the following media types are accepted: application/json",
        ))
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    stop: tokio_watch::Receiver<bool>,
    r: Route,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let accept = header_str(&req, header::ACCEPT);
    let get_only = |req: &Request<Incoming>| {
        if req.method() == Method::GET {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match r {
        Route::Version => {
            get_only(&req)?;
            Ok(json_response(StatusCode::OK, &discovery::version()))
        }
        Route::Health => {
            let mut resp = Response::new(full("ok"));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(resp)
        }
        Route::CoreVersions | Route::GroupList => {
            get_only(&req)?;
            let reg = shared.lock().registry().clone();
            let core = r == Route::CoreVersions;
            if discovery::wants_aggregated(&accept) {
                let mut resp = json_response(StatusCode::OK, &discovery::aggregated(&reg, core));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
                );
                return Ok(resp);
            }
            let doc = if core {
                discovery::api_versions()
            } else {
                discovery::api_group_list(&reg)
            };
            Ok(json_response(StatusCode::OK, &doc))
        }
        Route::Group(g) => {
            get_only(&req)?;
            let reg = shared.lock().registry().clone();
            discovery::api_group(&reg, &g)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::path_not_found)
        }
        Route::ResourceList { group, version } => {
            get_only(&req)?;
            let reg = shared.lock().registry().clone();
            discovery::resource_list(&reg, &group, &version)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::path_not_found)
        }
        Route::OpenApiV2 => {
            if accept.contains("protobuf") {
                let mut resp = Response::new(full(discovery::openapi_v2_protobuf()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(discovery::OPENAPI_V2_PROTOBUF),
                );
                return Ok(resp);
            }
            Ok(json_response(StatusCode::OK, &discovery::openapi_v2_json()))
        }
        Route::OpenApiV3Root => {
            let reg = shared.lock().registry().clone();
            Ok(json_response(
                StatusCode::OK,
                &discovery::openapi_v3_root(&reg),
            ))
        }
        Route::OpenApiV3 { group, version } => {
            let reg = shared.lock().registry().clone();
            discovery::openapi_v3_gv(&reg, &group, &version)
                .map(|d| json_response(StatusCode::OK, &d))
                .ok_or_else(ApiError::path_not_found)
        }
        Route::Resource(p) => {
            check_accept(&accept)?;

            resource_request(shared, stop, p, accept, req).await
        }
        Route::NotFound | Route::Faults | Route::Compact => Err(ApiError::path_not_found()),
    }
}

fn bool_param(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

fn write_options(q: &HashMap<String, String>) -> ApiResult<WriteOptions> {
    let field_validation = match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some("Ignore") => FieldValidation::Ignore,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}, must be one of Ignore, Warn, Strict"
            )));
        }
    };
    Ok(WriteOptions {
        dry_run: dry_run(q.get("dryRun"))?,
        field_validation,
    })
}

fn dry_run(v: Option<&String>) -> ApiResult<bool> {
    match v.map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
        ))),
    }
}

fn list_options(def: &ResourceDef, q: &HashMap<String, String>) -> ApiResult<ListOptions> {
    let label = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let field = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        &def.group,
        &def.resource,
    )?;
    let limit = match q.get("limit") {
        Some(l) if !l.is_empty() => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        ),
        _ => None,
    };
    Ok(ListOptions {
        label,
        field,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q
            .get("resourceVersionMatch")
            .filter(|c| !c.is_empty())
            .cloned(),
    })
}

fn outcome_response(
    code: StatusCode,
    def: &ResourceDef,
    accept: &str,
    out: &WriteOutcome,
) -> Response<Body> {
    let body = if table::wants_table(accept) {
        table::table(
            def,
            std::slice::from_ref(&out.object),
            json!({}),
            IncludeObject::Metadata,
        )
    } else {
        out.object.clone()
    };
    with_warnings(json_response(code, &body), &out.warnings)
}

async fn resource_request(
    shared: &Arc<Shared>,
    stop: tokio_watch::Receiver<bool>,
    p: ResourcePath,
    accept: String,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let q = query_params(req.uri().query());
    let def = {
        let s = shared.lock();
        s.registry().get(&p.group, &p.version, &p.resource).cloned()
    }
    .ok_or_else(ApiError::path_not_found)?;
    if p.namespace.is_some() && !def.namespaced {
        return Err(ApiError::path_not_found());
    }
    let sub = match p.subresource.as_deref() {
        None => Subresource::Main,
        Some("status") if def.status_subresource => Subresource::Status,
        Some(_) => return Err(ApiError::path_not_found()),
    };
    let ns = p.namespace.as_deref();
    let method = req.method().clone();
    let content_type = header_str(&req, header::CONTENT_TYPE);
    match (method, p.name.clone()) {
        (Method::GET, Some(name)) => {
            let obj = shared.lock().get(&def, ns, &name)?;
            if table::wants_table(&accept) {
                let t = table::table(
                    &def,
                    &[obj],
                    json!({}),
                    IncludeObject::parse(q.get("includeObject").map(String::as_str)),
                );
                return Ok(json_response(StatusCode::OK, &t));
            }
            if table::wants_metadata(&accept) {
                return Ok(json_response(StatusCode::OK, &table::partial(&obj)));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::GET, None) if bool_param(&q, "watch") => {
            start_watch(shared, stop, def, ns, &q, &accept)
        }
        (Method::GET, None) => {
            let opts = list_options(&def, &q)?;
            let list = shared.lock().list(&def, ns, &opts)?;
            if table::wants_table(&accept) {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let t = table::table(
                    &def,
                    &items,
                    list["metadata"].clone(),
                    IncludeObject::parse(q.get("includeObject").map(String::as_str)),
                );
                return Ok(json_response(StatusCode::OK, &t));
            }
            if table::wants_metadata(&accept) {
                return Ok(json_response(StatusCode::OK, &table::partial_list(&list)));
            }
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::POST, None) if ns.is_some() || !def.namespaced => {
            if p.subresource.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            let opts = write_options(&q)?;
            let body = parse_object(&content_type, &read_body(req).await?)?;
            let mut s = shared.lock();
            let out = s.create(&def, ns, body, &opts)?;
            shared.publish(&out.changes);
            Ok(outcome_response(StatusCode::CREATED, &def, &accept, &out))
        }
        (Method::PUT, Some(name)) => {
            let opts = write_options(&q)?;
            let body = parse_object(&content_type, &read_body(req).await?)?;
            let mut s = shared.lock();
            let out = s.update(&def, ns, &name, body, sub, &opts)?;
            shared.publish(&out.changes);
            Ok(outcome_response(StatusCode::OK, &def, &accept, &out))
        }
        (Method::PATCH, Some(name)) => {
            let Some(pt) = PatchType::from_content_type(&content_type) else {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?}; server-side apply is not emulated)"
                )));
            };
            let opts = write_options(&q)?;
            let body = parse_json(&read_body(req).await?)?;
            let mut s = shared.lock();
            let out = s.patch(&def, ns, &name, pt, &body, sub, &opts)?;
            shared.publish(&out.changes);
            Ok(outcome_response(StatusCode::OK, &def, &accept, &out))
        }
        (Method::DELETE, Some(name)) => {
            if p.subresource.is_some() {
                return Err(ApiError::method_not_allowed());
            }
            let mut opts = DeleteOptions {
                dry_run: dry_run(q.get("dryRun"))?,
                ..Default::default()
            };
            let body = read_body(req).await?;
            if !body.is_empty() {
                let b = parse_json(&body)?;
                opts.precondition_uid = b
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                opts.precondition_rv = b
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if b.get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v == "All"))
                {
                    opts.dry_run = true;
                }
            }
            let mut s = shared.lock();
            let out = s.delete(&def, ns, &name, &opts)?;
            shared.publish(&out.changes);
            Ok(outcome_response(StatusCode::OK, &def, &accept, &out))
        }
        (Method::DELETE, None) => {
            let opts = list_options(&def, &q)?;
            let dry = dry_run(q.get("dryRun"))?;
            let mut s = shared.lock();
            let (list, changes) = s.delete_collection(&def, ns, &opts, dry)?;
            shared.publish(&changes);
            Ok(json_response(StatusCode::OK, &list))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn start_watch(
    shared: &Arc<Shared>,
    mut stop: tokio_watch::Receiver<bool>,
    def: ResourceDef,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    accept: &str,
) -> ApiResult<Response<Body>> {
    let opts = list_options(&def, q)?;
    let send_initial = bool_param(q, "sendInitialEvents");
    let bookmarks = bool_param(q, "allowWatchBookmarks");
    // Upstream ends watches between minRequestTimeout (30 min) and twice that.
    let timeout = match q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()) {
        Some(t) if t > 0 => Duration::from_secs(t),
        _ => Duration::from_secs(1800 + fastrand::u64(..1800)),
    };
    let format = if table::wants_table(accept) {
        Format::Table {
            include_object: IncludeObject::parse(q.get("includeObject").map(String::as_str)),
        }
    } else if table::wants_metadata(accept) {
        Format::Metadata
    } else {
        Format::Json
    };
    let filter = WatchFilter {
        key: def.key(),
        namespace: ns.filter(|_| def.namespaced).map(str::to_string),
        label: opts.label,
        field: opts.field,
    };
    let params = WatchParams {
        def: def.clone(),
        filter,
        format,
        bookmarks,
        initial_events_end: send_initial,
        timeout,
        bookmark_interval: shared.bookmark_interval,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let started = {
        let s = shared.lock();
        s.watch_start(&def, ns, opts.resource_version.as_deref(), send_initial)
            .map(|start| (start, shared.events.subscribe()))
    };
    match started {
        Ok((start, changes)) => {
            let epoch = shared.watch_epoch.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    _ = watch::run(params, start, changes, tx, epoch) => {}
                    _ = stop.changed() => {}
                }
            });
        }
        // A version older than the retained window: 200 and one ERROR event, as upstream.
        Err(e) if e.code == 410 => {
            let _ = tx.try_send(watch::error_frame(&e));
        }
        Err(e) => return Err(e),
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}
