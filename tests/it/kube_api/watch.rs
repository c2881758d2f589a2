//! Watches and paginated lists, as kube-apiserver serves them (read for this:
//! k8s.io/apiserver pkg/storage/cacher/cache_watcher.go `convertToWatchEvent`, watch_cache.go
//! `getAllEventsSinceLocked`, pkg/endpoints/request/requestinfo.go, pkg/endpoints/handlers/get.go
//! `ListResource`, and client-go tools/cache/reflector.go, which re-lists on 410):
//! - `GET <list URL>?watch=true` (any value but `0`/`false`/`f`/`no`/`n`, as apimachinery's
//!   `Convert_Slice_string_To_bool`) is verb `watch`, authorized like a list: with a
//!   `fieldSelector=metadata.name=X` the authorizer sees name X, so a grant with resourceNames
//!   allows a one-object watch and nothing wider (see `admit`);
//! - the answer is `200` and a chunked stream of `{"type":…,"object":…}` lines;
//! - `resourceVersion` absent or `0`: synthetic `ADDED` for every current object, then changes;
//!   `resourceVersion=N`: every change after N; N older than the kept history (`compacted_rv`):
//!   one `ERROR` event carrying a `410` `Expired` Status `too old resource version: N (M)`, then
//!   the stream ends (the client must re-list);
//! - `labelSelector`/`fieldSelector` filter each change by the object before and after it: an
//!   object that stops matching is sent as `DELETED` (its previous state, at the change's
//!   resourceVersion), one that starts matching as `ADDED`;
//! - `allowWatchBookmarks=true`: a `BOOKMARK` (only kind, apiVersion, resourceVersion) now and
//!   then; with `sendInitialEvents=true` the initial state ends with a bookmark annotated
//!   `k8s.io/initial-events-end: "true"` (the watch-list protocol);
//! - `timeoutSeconds`: the stream ends after it (default 1800 s, the server's minimum request
//!   timeout), or when the client goes away.
//!
//! Lists honour `limit` and `continue` (the continue token carries the list's resourceVersion and
//! the last key; a token older than the kept history is `410 Expired`). Unlike etcd, a continued
//! page is read from the current state, not from a snapshot at the first page's resourceVersion.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    admit, kind_of, matches_fields, matches_labels, query_param, route, status, Key, Route, Shared,
    State,
};

/// Changes kept for watches (the watch cache's window); older ones are compacted away.
const HISTORY: usize = 10_000;

/// One change of one object: `object` None is a deletion, `prev` None a creation.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub key: Key,
    pub prev: Option<Value>,
    pub object: Option<Value>,
}

impl State {
    /// Records a change (at the current resourceVersion) and wakes the watches.
    pub(crate) fn record(&mut self, key: Key, prev: Option<Value>, object: Option<Value>) {
        self.events.push(Change {
            rv: self.rv,
            key,
            prev,
            object,
        });
        if self.events.len() > HISTORY {
            let drop = self.events.len() - HISTORY + HISTORY / 4;
            self.compacted_rv = self.events[drop - 1].rv;
            self.events.drain(..drop);
        }
        self.changed.notify_waiters();
    }

    /// Forgets the history up to now, as an etcd compaction does: watches and continue tokens
    /// from an older resourceVersion get 410 Gone.
    pub fn compact(&mut self) {
        self.compacted_rv = self.rv;
        self.events.clear();
    }
}

/// A boolean query parameter as apimachinery converts it.
fn flag(query: &str, key: &str) -> bool {
    query_param(query, key).is_some_and(|v| {
        !["", "0", "f", "false", "n", "no"]
            .iter()
            .any(|f| v.eq_ignore_ascii_case(f))
    })
}

/// Whether the request asks for a watch.
pub fn requested(query: &str) -> bool {
    flag(query, "watch")
}

/// What one watch asked for.
struct Watch {
    resource: String,
    group_version: String,
    ns: Option<String>,
    labels: String,
    fields: String,
    rv: Option<u64>,
    bookmarks: bool,
    initial_events: bool,
    timeout: Duration,
}

fn bad_request(message: &str) -> (u16, Value, Option<String>) {
    let (c, v) = status(400, "BadRequest", message);
    (c, v, None)
}

impl Watch {
    fn parse(r: &Route, query: &str) -> Result<Watch, (u16, Value, Option<String>)> {
        let number = |key: &str| -> Result<Option<u64>, (u16, Value, Option<String>)> {
            match query_param(query, key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| bad_request(&format!("{key}: invalid value {v:?}"))),
            }
        };
        Ok(Watch {
            resource: r.resource.clone(),
            group_version: r.group_version.clone(),
            ns: r.ns.clone(),
            labels: query_param(query, "labelSelector").unwrap_or_default(),
            fields: query_param(query, "fieldSelector").unwrap_or_default(),
            rv: number("resourceVersion")?,
            bookmarks: flag(query, "allowWatchBookmarks"),
            initial_events: flag(query, "sendInitialEvents"),
            timeout: Duration::from_secs(number("timeoutSeconds")?.unwrap_or(1800)),
        })
    }

    fn selects(&self, key: &Key, obj: &Value) -> bool {
        key.0 == self.resource
            && self.ns.as_ref().is_none_or(|ns| *ns == key.1)
            && matches_labels(obj, &self.labels)
            && matches_fields(obj, &self.fields)
    }

    /// The event a change is for this watch, as `convertToWatchEvent` decides it.
    fn event(&self, c: &Change) -> Option<Bytes> {
        let passes = |o: &Option<Value>| o.as_ref().is_some_and(|o| self.selects(&c.key, o));
        match (passes(&c.object), passes(&c.prev)) {
            (true, false) => Some(line("ADDED", c.object.as_ref()?)),
            (true, true) => Some(line("MODIFIED", c.object.as_ref()?)),
            (false, true) => {
                let mut old = c.prev.clone()?;
                old["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                Some(line("DELETED", &old))
            }
            (false, false) => None,
        }
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": kind_of(&self.resource), "apiVersion": self.group_version, "metadata": meta}),
        )
    }

    /// The initial events and the resourceVersion to continue from, or the 410 ERROR event.
    fn begin(&self, st: &State) -> Result<(Vec<Bytes>, u64), Bytes> {
        match self.rv {
            Some(n) if n > 0 && !self.initial_events => {
                if n < st.compacted_rv {
                    return Err(gone(n, st.compacted_rv));
                }
                Ok((vec![], n))
            }
            _ => {
                let mut lines: Vec<Bytes> = st
                    .objects
                    .iter()
                    .filter(|(k, o)| self.selects(k, o))
                    .map(|(_, o)| line("ADDED", o))
                    .collect();
                if self.initial_events && self.bookmarks {
                    lines.push(self.bookmark(st.rv, true));
                }
                Ok((lines, st.rv))
            }
        }
    }

    /// The events after `last`, and the resourceVersion they bring the watch to.
    fn catch_up(&self, st: &State, last: u64) -> Result<(Vec<Bytes>, u64), Bytes> {
        if last < st.compacted_rv {
            return Err(gone(last, st.compacted_rv));
        }
        let from = st.events.partition_point(|c| c.rv <= last);
        let lines = st.events[from..]
            .iter()
            .filter_map(|c| self.event(c))
            .collect();
        Ok((lines, st.rv))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    b.push(b'\n');
    Bytes::from(b)
}

/// The ERROR event of a watch from a compacted resourceVersion (`errors.NewResourceExpired`).
fn gone(rv: u64, oldest: u64) -> Bytes {
    let (_, st) = status(
        410,
        "Expired",
        &format!("too old resource version: {rv} ({oldest})"),
    );
    line("ERROR", &st)
}

/// A response body fed by the watch task, one chunk per event.
pub struct Stream(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Admits a watch request (404 for an absent API, 403 unless `watch` is allowed, 400 for bad
/// parameters) and starts streaming it.
pub fn start(
    state: &Shared,
    path: &str,
    query: &str,
) -> Result<Stream, (u16, Value, Option<String>)> {
    let Some(r) = route(path).filter(|r| r.name.is_none()) else {
        return Err(bad_request("watch is served on collection URLs"));
    };
    let w = {
        let mut st = state.lock().unwrap();
        admit(&mut st, "GET", path, query, b"", &r)?;
        Watch::parse(&r, query)?
    };
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(state.clone(), w, tx));
    Ok(Stream(rx))
}

async fn run(state: Shared, w: Watch, tx: mpsc::Sender<Bytes>) {
    let (notify, interval) = {
        let st = state.lock().unwrap();
        let i = st.bookmark_interval;
        (
            st.changed.clone(),
            if i.is_zero() {
                Duration::from_secs(1)
            } else {
                i
            },
        )
    };
    let deadline = Instant::now() + w.timeout;
    let mut next_bookmark = Instant::now() + interval;
    let mut last = None;
    loop {
        // Registered before reading the state, so no change between the read and the wait is
        // missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let batch = {
            let st = state.lock().unwrap();
            match last {
                None => w.begin(&st),
                Some(rv) => w.catch_up(&st, rv),
            }
        };
        let (lines, rv) = match batch {
            Ok(b) => b,
            Err(error) => {
                let _ = tx.send(error).await;
                return;
            }
        };
        for l in lines {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        last = Some(rv);
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        if w.bookmarks && now >= next_bookmark {
            if tx.send(w.bookmark(rv, false)).await.is_err() {
                return;
            }
            next_bookmark = now + interval;
        }
        let wake = if w.bookmarks {
            next_bookmark.min(deadline)
        } else {
            deadline
        };
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = tx.closed() => return,
        }
    }
}

/// A list, paginated by `limit` and `continue`.
pub fn list(st: &State, r: &Route, query: &str) -> (u16, Value) {
    let labels = query_param(query, "labelSelector").unwrap_or_default();
    let fields = query_param(query, "fieldSelector").unwrap_or_default();
    let limit = query_param(query, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let ns = r.ns.clone().unwrap_or_default();
    let (rv, after) = match query_param(query, "continue").filter(|c| !c.is_empty()) {
        None => (st.rv, None),
        Some(token) => match decode_continue(&token) {
            None => return status(400, "BadRequest", "continue key is not valid"),
            Some((rv, _)) if rv < st.compacted_rv => {
                return status(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
            }
            Some((rv, key)) => (rv, Some(key)),
        },
    };
    // Without a namespace in the path: every namespace (and cluster-scoped objects).
    let matching: Vec<(&Key, &Value)> = st
        .objects
        .iter()
        .filter(|((res, n, _), _)| *res == r.resource && (r.ns.is_none() || *n == ns))
        .filter(|((_, n, name), _)| {
            after
                .as_ref()
                .is_none_or(|(an, aname)| (n, name) > (an, aname))
        })
        .filter(|(_, o)| matches_labels(o, &labels) && matches_fields(o, &fields))
        .collect();
    let take = limit.unwrap_or(matching.len()).min(matching.len());
    let items: Vec<Value> = matching[..take].iter().map(|(_, o)| (*o).clone()).collect();
    let remaining = matching.len() - take;
    let last = take
        .checked_sub(1)
        .map(|i| (matching[i].0 .1.clone(), matching[i].0 .2.clone()));
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let (true, Some((n, name))) = (remaining > 0, last) {
        meta["continue"] = json!(encode_continue(rv, &n, &name));
        meta["remainingItemCount"] = json!(remaining);
    }
    (
        200,
        json!({"kind": format!("{}List", kind_of(&r.resource)), "apiVersion": r.group_version, "metadata": meta, "items": items}),
    )
}

/// URL-safe base64 of JSON, as kube-apiserver's tokens (storage/etcd3 `encodeContinue`).
fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rv, "start": [ns, name]}).to_string())
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    let start = v["start"].as_array()?;
    Some((
        v["rv"].as_u64()?,
        (
            start.first()?.as_str()?.into(),
            start.get(1)?.as_str()?.into(),
        ),
    ))
}

#[cfg(test)]
mod tests {
    //! The test server's watch and pagination, spoken to over raw HTTP (to see the chunked
    //! stream and the ERROR event) and through kube's own watcher (to see that a client that
    //! re-lists on 410 works against it).

    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    use super::super::{start, Scope, Shared, State};

    const NS: &str = "kube-system";

    fn pod(name: &str, app: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": NS, "labels": {"app": app}}})
    }

    async fn server() -> (Shared, SocketAddr) {
        let state: Shared = Arc::new(Mutex::new(State::default()));
        {
            let mut st = state.lock().unwrap();
            st.put("pods", NS, pod("a", "x"));
            st.put("pods", NS, pod("b", "y"));
            st.put("pods", "other", pod("elsewhere", "x"));
        }
        let addr = start(state.clone()).await;
        (state, addr)
    }

    /// An open HTTP response: its status line and headers, and the body being read.
    struct Response {
        head: String,
        body: BufReader<TcpStream>,
    }

    async fn get(addr: SocketAddr, path: &str) -> Response {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut body = BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut l = String::new();
            body.read_line(&mut l).await.unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
            head.push_str(&l.to_ascii_lowercase());
        }
        Response { head, body }
    }

    impl Response {
        /// The next watch event, or None once the stream ended (guarded against hanging).
        async fn event(&mut self) -> Option<Value> {
            let read = async {
                loop {
                    let mut l = String::new();
                    if self.body.read_line(&mut l).await.unwrap() == 0 || l == "0\r\n" {
                        return None;
                    }
                    if l.starts_with('{') {
                        return Some(serde_json::from_str(&l).unwrap());
                    }
                }
            };
            tokio::time::timeout(std::time::Duration::from_secs(20), read)
                .await
                .expect("the watch sent nothing for 20 s")
        }

        async fn json(mut self) -> Value {
            let mut rest = String::new();
            loop {
                let mut l = String::new();
                if self.body.read_line(&mut l).await.unwrap() == 0 {
                    break;
                }
                rest.push_str(&l);
            }
            serde_json::from_str(&rest).unwrap()
        }
    }

    fn summary(e: &Value) -> (String, String) {
        (
            e["type"].as_str().unwrap().to_owned(),
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    }

    fn rv(state: &Shared) -> u64 {
        state.lock().unwrap().rv
    }

    #[tokio::test]
    async fn watch_from_a_resource_version_streams_the_changes_its_selector_sees() {
        let (state, addr) = server().await;
        let from = rv(&state);
        let mut w = get(
            addr,
            &format!(
                "/api/v1/namespaces/{NS}/pods?watch=1&resourceVersion={from}&labelSelector=app%3Dx"
            ),
        )
        .await;
        assert!(w.head.starts_with("http/1.1 200"), "{}", w.head);
        assert!(w.head.contains("transfer-encoding: chunked"), "{}", w.head);
        let deleted_rv;
        {
            let mut st = state.lock().unwrap();
            st.put("pods", NS, pod("c", "x"));
            let mut a = st.get("pods", NS, "a").unwrap().clone();
            a["metadata"]["annotations"] = json!({"touched": "yes"});
            st.put("pods", NS, a.clone());
            a["metadata"]["labels"]["app"] = json!("y");
            st.put("pods", NS, a);
            deleted_rv = st.rv;
            st.put("pods", NS, pod("b", "x"));
            st.put("pods", "other", pod("elsewhere", "x"));
            st.remove(&("pods".into(), NS.into(), "c".into()));
        }
        let mut got = vec![];
        let mut events = vec![];
        for _ in 0..5 {
            let e = w.event().await.unwrap();
            got.push(summary(&e));
            events.push(e);
        }
        let want = [
            ("ADDED", "c"),
            ("MODIFIED", "a"),
            ("DELETED", "a"),
            ("ADDED", "b"),
            ("DELETED", "c"),
        ];
        assert_eq!(
            got,
            want.map(|(t, n)| (t.to_owned(), n.to_owned())).to_vec()
        );
        // The object that stopped matching is sent as it was before, at the change's version.
        assert_eq!(events[2]["object"]["metadata"]["labels"]["app"], "x");
        assert_eq!(
            events[2]["object"]["metadata"]["resourceVersion"],
            deleted_rv.to_string()
        );
        let st = state.lock().unwrap();
        assert!(st
            .requests
            .iter()
            .any(|(m, _, verb, r)| m == "GET" && verb == "watch" && r == "pods"));
    }

    #[tokio::test]
    async fn watch_without_resource_version_starts_with_the_current_objects_and_times_out() {
        let (_state, addr) = server().await;
        let mut w = get(
            addr,
            &format!("/api/v1/namespaces/{NS}/pods?watch=true&timeoutSeconds=1"),
        )
        .await;
        assert_eq!(
            summary(&w.event().await.unwrap()),
            ("ADDED".into(), "a".into())
        );
        assert_eq!(
            summary(&w.event().await.unwrap()),
            ("ADDED".into(), "b".into())
        );
        assert_eq!(w.event().await, None, "the stream ends at timeoutSeconds");
    }

    #[tokio::test]
    async fn watch_from_a_compacted_resource_version_is_an_error_event_410_gone() {
        let (state, addr) = server().await;
        let from = rv(&state);
        {
            let mut st = state.lock().unwrap();
            st.put("pods", NS, pod("c", "x"));
            st.compact();
        }
        let mut w = get(
            addr,
            &format!("/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={from}"),
        )
        .await;
        assert!(w.head.starts_with("http/1.1 200"), "{}", w.head);
        let e = w.event().await.unwrap();
        assert_eq!(e["type"], "ERROR");
        assert_eq!(e["object"]["kind"], "Status");
        assert_eq!(e["object"]["code"], 410);
        assert_eq!(e["object"]["reason"], "Expired");
        assert_eq!(w.event().await, None, "the stream ends after the error");
    }

    #[tokio::test]
    async fn watch_sends_bookmarks_when_allowed_and_marks_the_end_of_initial_events() {
        let (state, addr) = server().await;
        state.lock().unwrap().bookmark_interval = std::time::Duration::from_millis(50);
        let now = rv(&state).to_string();
        let mut w = get(
            addr,
            &format!("/api/v1/namespaces/{NS}/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"),
        )
        .await;
        assert_eq!(summary(&w.event().await.unwrap()).0, "ADDED");
        assert_eq!(summary(&w.event().await.unwrap()).0, "ADDED");
        let end = w.event().await.unwrap();
        assert_eq!(end["type"], "BOOKMARK");
        assert_eq!(end["object"]["kind"], "Pod");
        assert_eq!(end["object"]["metadata"]["resourceVersion"], now);
        assert_eq!(
            end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        let tick = w.event().await.unwrap();
        assert_eq!(tick["type"], "BOOKMARK");
        assert!(tick["object"]["metadata"]["annotations"].is_null());
        // Without allowWatchBookmarks, none: the next thing is a change.
        let mut quiet = get(
            addr,
            &format!("/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={now}"),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        state.lock().unwrap().put("pods", NS, pod("c", "x"));
        assert_eq!(
            summary(&quiet.event().await.unwrap()),
            ("ADDED".into(), "c".into())
        );
    }

    #[tokio::test]
    async fn a_watch_grant_limited_by_resource_names_allows_only_the_one_object_watch() {
        let (state, addr) = server().await;
        {
            let mut st = state.lock().unwrap();
            for name in ["psk-guard-rotation", "other"] {
                st.put("leases", NS, json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}}));
            }
            st.scoped.push(Scope {
                verb: "watch".into(),
                resource: "leases".into(),
                namespaces: Some(vec![NS.into()]),
                names: Some(vec!["psk-guard-rotation".into()]),
            });
        }
        let base = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?watch=true");
        let mut one = get(
            addr,
            &format!("{base}&fieldSelector=metadata.name%3Dpsk-guard-rotation"),
        )
        .await;
        assert!(one.head.starts_with("http/1.1 200"), "{}", one.head);
        assert_eq!(
            summary(&one.event().await.unwrap()),
            ("ADDED".into(), "psk-guard-rotation".into())
        );
        for denied in [
            base.clone(),
            format!("{base}&fieldSelector=metadata.name%3Dother"),
            "/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=true&fieldSelector=metadata.name%3Dpsk-guard-rotation".to_string(),
        ] {
            let r = get(addr, &denied).await;
            assert!(r.head.starts_with("http/1.1 403"), "{denied}: {}", r.head);
            assert_eq!(r.json().await["reason"], "Forbidden");
        }
        // The same request without watch is a list, which this grant does not cover...
        let r = get(addr, &format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?fieldSelector=metadata.name%3Dpsk-guard-rotation")).await;
        assert!(
            r.head.starts_with("http/1.1 200"),
            "list is not limited here: {}",
            r.head
        );
        // ... unless it is limited the same way.
        state.lock().unwrap().scoped.push(Scope {
            verb: "list".into(),
            resource: "leases".into(),
            namespaces: None,
            names: Some(vec!["psk-guard-rotation".into()]),
        });
        let r = get(
            addr,
            &format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"),
        )
        .await;
        assert!(r.head.starts_with("http/1.1 403"), "{}", r.head);
        let r = get(addr, &format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases?fieldSelector=metadata.name%3Dpsk-guard-rotation")).await;
        assert!(r.head.starts_with("http/1.1 200"), "{}", r.head);
        let items = r.json().await["items"].clone();
        assert_eq!(items.as_array().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn lists_are_paginated_by_limit_and_continue_and_an_old_token_is_410() {
        let (state, addr) = server().await;
        {
            let mut st = state.lock().unwrap();
            for n in ["c", "d", "e"] {
                st.put("pods", NS, pod(n, "z"));
            }
        }
        let mut names = vec![];
        let mut token = String::new();
        let mut first_token = None;
        let mut pages = 0;
        loop {
            let page = get(
                addr,
                &format!("/api/v1/namespaces/{NS}/pods?limit=2&continue={token}"),
            )
            .await
            .json()
            .await;
            pages += 1;
            for i in page["items"].as_array().unwrap() {
                names.push(i["metadata"]["name"].as_str().unwrap().to_owned());
            }
            match page["metadata"]["continue"].as_str() {
                Some(t) => {
                    assert!(page["metadata"]["remainingItemCount"].as_u64().unwrap() > 0);
                    token = t.to_owned();
                    first_token.get_or_insert(token.clone());
                }
                None => break,
            }
        }
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        assert_eq!(pages, 3);
        {
            let mut st = state.lock().unwrap();
            st.put("pods", NS, pod("f", "z"));
            st.compact();
        }
        let r = get(
            addr,
            &format!(
                "/api/v1/namespaces/{NS}/pods?limit=2&continue={}",
                first_token.unwrap()
            ),
        )
        .await;
        assert!(r.head.starts_with("http/1.1 410"), "{}", r.head);
        assert_eq!(r.json().await["reason"], "Expired");
    }

    /// kube's watcher (what the tool uses) lists, watches, and after a 410 re-lists.
    #[tokio::test]
    async fn kube_runtime_watcher_relists_after_410() {
        use futures::StreamExt;
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::watcher::{self, Event};

        let (state, addr) = server().await;
        let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let pods: kube::Api<Pod> = kube::Api::namespaced(client, NS);
        let mut s = watcher::watcher(pods, watcher::Config::default().timeout(1)).boxed();
        let (mut inits, mut applied, mut relisted, mut errors) = (0, vec![], vec![], 0);
        loop {
            let e = tokio::time::timeout(std::time::Duration::from_secs(20), s.next())
                .await
                .expect("watcher stalled")
                .unwrap();
            match e {
                Err(_) => errors += 1,
                Ok(Event::Init) => inits += 1,
                // The first list is done: a change, seen by the watch.
                Ok(Event::InitDone) if inits == 1 => {
                    state.lock().unwrap().put("pods", NS, pod("c", "x"));
                }
                Ok(Event::InitDone) => break,
                // Then a change nobody watches until after a compaction: too old for the watch.
                Ok(Event::Apply(p)) => {
                    applied.push(p.metadata.name.unwrap());
                    let mut st = state.lock().unwrap();
                    st.put("pods", NS, pod("d", "x"));
                    st.compact();
                }
                Ok(Event::InitApply(p)) if inits == 2 => relisted.push(p.metadata.name.unwrap()),
                Ok(_) => {}
            }
        }
        assert_eq!(applied, ["c"]);
        assert_eq!(errors, 1, "one 410 Gone");
        assert_eq!(relisted, ["a", "b", "c", "d"], "the re-list found d");
        let st = state.lock().unwrap();
        assert!(
            st.requests
                .iter()
                .filter(|(_, _, v, _)| v == "list")
                .count()
                >= 2
        );
    }
}
