//! A simulated Antrea cluster for the rotation tests: N nodes, each a real ovsdb-server, each
//! with a simulated antrea-agent that behaves as Antrea does (reads the key from the Secret when it
//! starts, keeps one tunnel port per peer with `options:psk`, deletes and recreates ports whose key
//! differs); a DaemonSet controller whose status moves only as those agents restart (RollingUpdate
//! one node at a time, or OnDelete); and a Job runner that runs the real psk-guard binary for a
//! Job pinned to node X against node X's ovsdb-server (the Job's hostPath, mapped to X's dir).
//! Every change of a node's key is recorded with its time.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use psk_guard::ovsdb::client::Options;
use psk_guard::ovsdb::{Atom, Client, Condition, Mutation, OpResult, Operation, Row, Value};
use serde_json::{json, Value as Json};
use sha1::Digest;

use crate::harness::Node;
use crate::kube_api::{self, base64_decode, base64_encode, Shared, State};

pub const NS: &str = "kube-system";

/// The status of a running, Ready agent pod.
static READY: std::sync::LazyLock<Json> = std::sync::LazyLock::new(
    || json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
);

#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub ip: String,
    pub sock: PathBuf,
    pub run_dir: PathBuf,
}

/// (node, unix ms, key bytes' sha1 prefix) for every key change on a node.
pub type Changes = Arc<Mutex<Vec<(String, u128, String)>>>;

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub state: Shared,
    pub nodes: Vec<Node>,
    pub infos: Vec<NodeInfo>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub changes: Changes,
    /// Nodes whose agent restarts but keeps its old key (a stuck agent).
    pub stale: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Nodes whose Jobs fail without output (image pull error, eviction, ...).
    pub failing_jobs: Arc<Mutex<std::collections::HashSet<String>>>,
    stop: Arc<AtomicBool>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

pub fn key_tag(k: &[u8]) -> String {
    hex::encode(&sha1::Sha1::digest(k)[..4])
}

/// Antrea's tunnel port name for a peer: last 8 chars of the node name + "-" + 6 hex of
/// sha1("node/<name>").
pub fn port_name(peer: &str) -> String {
    let tail: String = peer
        .chars()
        .rev()
        .take(8)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let tail = tail.trim_start_matches('-');
    let h = hex::encode(sha1::Sha1::digest(format!("node/{peer}").as_bytes()));
    format!("{tail}-{}", &h[..6])
}

fn s(v: &str) -> Value {
    Value::Atom(Atom::string(v))
}

/// What Antrea's agent does at start-up for its tunnels: one port per peer carrying the key from
/// its environment; a port whose key differs is deleted and recreated. Returns whether anything
/// changed.
pub async fn agent_start(
    me: &NodeInfo,
    peers: &[NodeInfo],
    key: &str,
    changes: &Changes,
) -> Result<bool, String> {
    let c = Client::connect(
        &me.sock,
        Options {
            timeout: Duration::from_secs(10),
            ..Options::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let sel = [
        Operation::select("Interface", vec![], &["_uuid", "name", "options"]),
        Operation::select("Port", vec![], &["_uuid", "name"]),
    ];
    let r = c
        .transact_ok("Open_vSwitch", &sel)
        .await
        .map_err(|e| e.to_string())?;
    let (OpResult::Select { rows: ifaces }, OpResult::Select { rows: ports }) = (&r[0], &r[1])
    else {
        panic!()
    };
    let name_of = |row: &Row| {
        row["name"]
            .as_atom()
            .and_then(|a| a.as_str())
            .unwrap_or("")
            .to_owned()
    };
    let mut ops = vec![];
    for (i, peer) in peers.iter().enumerate() {
        if peer.name == me.name {
            continue;
        }
        let pname = port_name(&peer.name);
        let existing = ifaces.iter().find(|r| name_of(r) == pname);
        let current = existing
            .and_then(|r| r["options"].map_get("psk"))
            .and_then(|a| a.as_str());
        if current == Some(key) {
            continue;
        }
        if existing.is_some() {
            let port = ports.iter().find(|r| name_of(r) == pname).unwrap();
            let uuid = port["_uuid"]
                .as_atom()
                .and_then(|a| a.as_uuid())
                .unwrap()
                .to_owned();
            ops.push(Operation::Mutate {
                table: "Bridge".into(),
                conditions: vec![Condition::new("name", "==", s("br-int"))],
                mutations: vec![Mutation::new(
                    "ports",
                    "delete",
                    Value::Set(vec![Atom::Uuid(uuid)]),
                )],
            });
        }
        let mut iface = Row::new();
        iface.insert("name".into(), s(&pname));
        iface.insert("type".into(), s("geneve"));
        iface.insert(
            "options".into(),
            Value::string_map(&[("psk", key), ("remote_ip", &peer.ip)]),
        );
        let mut port = Row::new();
        port.insert("name".into(), s(&pname));
        port.insert(
            "interfaces".into(),
            Value::Atom(Atom::NamedUuid(format!("i{i}"))),
        );
        port.insert(
            "external_ids".into(),
            Value::string_map(&[("antrea-type", "ipsec-tunnel"), ("node-name", &peer.name)]),
        );
        ops.push(Operation::Insert {
            table: "Interface".into(),
            row: iface,
            uuid_name: Some(format!("i{i}")),
        });
        ops.push(Operation::Insert {
            table: "Port".into(),
            row: port,
            uuid_name: Some(format!("p{i}")),
        });
        ops.push(Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::new("name", "==", s("br-int"))],
            mutations: vec![Mutation::new(
                "ports",
                "insert",
                Value::Set(vec![Atom::NamedUuid(format!("p{i}"))]),
            )],
        });
    }
    if ops.is_empty() {
        return Ok(false);
    }
    c.transact_ok("Open_vSwitch", &ops)
        .await
        .map_err(|e| e.to_string())?;
    changes
        .lock()
        .unwrap()
        .push((me.name.clone(), now_ms(), key_tag(key.as_bytes())));
    Ok(true)
}

fn secret_key(st: &State) -> Option<String> {
    let s = st.get("secrets", NS, "antrea-ipsec")?;
    String::from_utf8(base64_decode(s["data"]["psk"].as_str()?)).ok()
}

fn template_annotations(ds: &Json) -> Json {
    ds["spec"]["template"]["metadata"]["annotations"].clone()
}

pub struct Options2 {
    pub nodes: usize,
    pub key: String,
    pub on_delete: bool,
    /// Simulated container restart time of one agent.
    pub restart_delay: Duration,
}

impl Cluster {
    pub fn new(o: Options2) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..o.nodes).map(|_| Node::start()).collect();
        let infos: Vec<NodeInfo> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeInfo {
                name: format!("worker-{i:02}"),
                ip: format!("10.0.{}.{}", i / 200, i % 200 + 1),
                sock: n.sock.clone(),
                run_dir: n.run_dir.clone(),
            })
            .collect();
        let state: Shared = Arc::new(Mutex::new(State::default()));
        {
            let mut st = state.lock().unwrap();
            st.put("secrets", NS, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "antrea-ipsec"}, "type": "Opaque", "data": {"psk": base64_encode(o.key.as_bytes())}}));
            st.put("configmaps", NS, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "antrea-config"}, "data": {"antrea-agent.conf": "featureGates:\n  AntreaIPAM: false\nipsec:\n  authenticationMode: psk\n"}}));
            let labels = json!({"app": "antrea", "component": "antrea-agent"});
            st.put("daemonsets", NS, json!({
                "apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "antrea-agent", "generation": 1},
                "spec": {"selector": {"matchLabels": labels},
                         "updateStrategy": {"type": if o.on_delete { "OnDelete" } else { "RollingUpdate" }},
                         "template": {"metadata": {"labels": labels, "annotations": {}}, "spec": {"containers": [{"name": "antrea-agent", "image": "antrea/antrea-agent:v2"}]}}},
                "status": {"desiredNumberScheduled": o.nodes, "currentNumberScheduled": o.nodes, "numberReady": o.nodes, "updatedNumberScheduled": o.nodes, "numberAvailable": o.nodes, "numberMisscheduled": 0, "observedGeneration": 1},
            }));
            for info in &infos {
                st.put("pods", NS, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("antrea-agent-{}", info.name), "labels": labels, "annotations": {}}, "spec": {"nodeName": info.name, "containers": [{"name": "antrea-agent", "image": "x"}]}, "status": READY.clone()}));
            }
        }
        let changes: Changes = Arc::new(Mutex::new(vec![]));
        // Agents start with the Secret's key.
        rt.block_on(async {
            for info in &infos {
                agent_start(info, &infos, &o.key, &changes).await.unwrap();
            }
        });
        changes.lock().unwrap().clear();
        let addr = rt.block_on(kube_api::start(state.clone()));
        let kubeconfig = kube_api::kubeconfig(dir.path(), addr);
        let stop = Arc::new(AtomicBool::new(false));
        let stale = Arc::new(Mutex::new(std::collections::HashSet::new()));
        rt.spawn(daemonset_controller(
            state.clone(),
            infos.clone(),
            changes.clone(),
            o.restart_delay,
            stale.clone(),
            stop.clone(),
        ));
        let failing_jobs = Arc::new(Mutex::new(std::collections::HashSet::new()));
        rt.spawn(job_runner(
            state.clone(),
            infos.clone(),
            changes.clone(),
            failing_jobs.clone(),
            stop.clone(),
        ));
        Cluster {
            rt,
            state,
            nodes,
            infos,
            dir,
            kubeconfig,
            changes,
            stale,
            failing_jobs,
            stop,
        }
    }

    /// Runs the real psk-guard against this cluster.
    pub fn psk_guard(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"));
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("PSK_GUARD_FINGERPRINT_SALT")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    pub fn secret(&self) -> Json {
        self.state
            .lock()
            .unwrap()
            .get("secrets", NS, "antrea-ipsec")
            .cloned()
            .unwrap()
    }

    pub fn secret_key(&self) -> String {
        secret_key(&self.state.lock().unwrap()).unwrap()
    }

    pub fn annotation(&self, k: &str) -> Option<String> {
        self.secret()["metadata"]["annotations"][format!("psk-guard.io/{k}")]
            .as_str()
            .map(str::to_owned)
    }

    /// The key on every tunnel of every node (node, distinct keys).
    pub fn node_keys(&self) -> Vec<(String, Vec<String>)> {
        self.rt.block_on(async {
            let mut out = vec![];
            for info in &self.infos {
                let c = Client::connect(
                    &info.sock,
                    Options {
                        timeout: Duration::from_secs(5),
                        ..Options::default()
                    },
                )
                .await
                .unwrap();
                let r = c
                    .transact_ok(
                        "Open_vSwitch",
                        &[Operation::select("Interface", vec![], &["options"])],
                    )
                    .await
                    .unwrap();
                let OpResult::Select { rows } = &r[0] else {
                    panic!()
                };
                let mut keys: Vec<String> = rows
                    .iter()
                    .filter_map(|r| {
                        r["options"]
                            .map_get("psk")
                            .and_then(|a| a.as_str())
                            .map(str::to_owned)
                    })
                    .collect();
                keys.sort();
                keys.dedup();
                out.push((info.name.clone(), keys));
            }
            out
        })
    }

    /// The mixed-key window: from the first node's key change to the last, in ms.
    pub fn window_ms(&self) -> Option<u128> {
        let ch = self.changes.lock().unwrap();
        let first = ch.iter().map(|c| c.1).min()?;
        let last = ch.iter().map(|c| c.1).max()?;
        Some(last - first)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn daemonset_controller(
    state: Shared,
    infos: Vec<NodeInfo>,
    changes: Changes,
    delay: Duration,
    stale: Arc<Mutex<std::collections::HashSet<String>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Decide what to restart, with the lock held only briefly.
        let work = {
            let mut st = state.lock().unwrap();
            let Some(ds) = st.get("daemonsets", NS, "antrea-agent").cloned() else {
                continue;
            };
            let tmpl = template_annotations(&ds);
            let on_delete = ds["spec"]["updateStrategy"]["type"] == "OnDelete";
            let mut next = None;
            for info in &infos {
                let pod = st
                    .get("pods", NS, &format!("antrea-agent-{}", info.name))
                    .cloned();
                match pod {
                    None => {
                        next = Some(info.clone());
                        break;
                    }
                    Some(p) if !on_delete && p["metadata"]["annotations"] != tmpl => {
                        next = Some(info.clone());
                        break;
                    }
                    _ => {}
                }
            }
            // Status reflects the pods as they are.
            let updated = infos
                .iter()
                .filter(|i| {
                    st.get("pods", NS, &format!("antrea-agent-{}", i.name))
                        .is_some_and(|p| p["metadata"]["annotations"] == tmpl)
                })
                .count();
            let mut available = infos
                .iter()
                .filter(|i| {
                    st.get("pods", NS, &format!("antrea-agent-{}", i.name))
                        .is_some()
                })
                .count();
            if next.is_some() && available == infos.len() {
                available -= 1; // the pod about to restart
            }
            let mut ds2 = ds.clone();
            ds2["status"]["updatedNumberScheduled"] = json!(updated);
            ds2["status"]["numberAvailable"] = json!(available);
            ds2["status"]["numberReady"] = json!(available);
            ds2["status"]["observedGeneration"] = ds["metadata"]["generation"].clone();
            if ds2["status"] != ds["status"] {
                st.put("daemonsets", NS, ds2);
            }
            next.map(|n| (n, tmpl, secret_key(&st)))
        };
        let Some((info, tmpl, key)) = work else {
            continue;
        };
        // The agent container restarts: it reads the Secret (env) at start.
        state.lock().unwrap().objects.remove(&(
            "pods".into(),
            NS.into(),
            format!("antrea-agent-{}", info.name),
        ));
        tokio::time::sleep(delay).await;
        let is_stale = stale.lock().unwrap().contains(&info.name);
        if let (Some(key), false) = (key, is_stale) {
            // An agent that cannot reach its OVSDB crashes: its pod does not come back (the
            // rolling update stalls on it) until the next attempt succeeds.
            if agent_start(&info, &infos, &key, &changes).await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let labels = json!({"app": "antrea", "component": "antrea-agent"});
        state.lock().unwrap().put("pods", NS, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("antrea-agent-{}", info.name), "labels": labels, "annotations": tmpl}, "spec": {"nodeName": info.name, "containers": [{"name": "antrea-agent", "image": "x"}]}, "status": READY.clone()}));
    }
}

async fn job_runner(
    state: Shared,
    infos: Vec<NodeInfo>,
    changes: Changes,
    failing: Arc<Mutex<std::collections::HashSet<String>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let jobs: Vec<_> = std::mem::take(&mut state.lock().unwrap().new_jobs);
        for key in jobs {
            let (state, infos, changes, failing) = (
                state.clone(),
                infos.clone(),
                changes.clone(),
                failing.clone(),
            );
            tokio::spawn(async move { run_job(state, infos, changes, failing, key).await });
        }
    }
}

async fn run_job(
    state: Shared,
    infos: Vec<NodeInfo>,
    changes: Changes,
    failing: Arc<Mutex<std::collections::HashSet<String>>>,
    key: kube_api::Key,
) {
    let (job, secret) = {
        let st = state.lock().unwrap();
        (
            st.objects.get(&key).cloned().unwrap(),
            st.get("secrets", NS, "antrea-ipsec").cloned(),
        )
    };
    let spec = &job["spec"]["template"]["spec"];
    let node = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let Some(info) = infos.iter().find(|i| i.name == node) else {
        return;
    };
    if failing.lock().unwrap().contains(&format!("hang:{node}")) {
        return; // the Job never finishes (a pod stuck Pending, an unreachable node)
    }
    if failing.lock().unwrap().contains(&node) {
        let mut st = state.lock().unwrap();
        if let Some(mut j) = st.objects.get(&key).cloned() {
            j["status"] = json!({"failed": 1});
            st.put("jobs", NS, j);
        }
        return;
    }
    let container = &spec["containers"][0];
    let host = info.run_dir.display().to_string();
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("/var/run/antrea", &host))
        .collect();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_psk-guard"));
    cmd.args(&args)
        .env_remove("PSK_GUARD_FINGERPRINT_SALT")
        .env_remove("RUST_LOG")
        .env_remove("PSK_GUARD_TEST_PAUSE_AFTER");
    for e in container["env"].as_array().cloned().unwrap_or_default() {
        let r = &e["valueFrom"]["secretKeyRef"];
        if let Some(s) = &secret {
            if let Some(v) = s["data"][r["key"].as_str().unwrap_or("")].as_str() {
                cmd.env(
                    e["name"].as_str().unwrap(),
                    String::from_utf8(base64_decode(v)).unwrap(),
                );
            }
        }
    }
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if args.first().map(String::as_str) == Some("push-key") && out.status.success() {
        if let Ok(v) = serde_json::from_str::<Json>(&stdout) {
            if v["tunnels_changed"].as_u64().unwrap_or(0) > 0 {
                let k = secret
                    .as_ref()
                    .map(|s| base64_decode(s["data"]["psk"].as_str().unwrap_or("")))
                    .unwrap_or_default();
                changes.lock().unwrap().push((
                    node.clone(),
                    v["written_at_unix_ms"].as_u64().unwrap_or(0) as u128,
                    key_tag(&k),
                ));
            }
        }
    }
    let mut st = state.lock().unwrap();
    let pod = format!("{}-run", key.2);
    st.put("pods", NS, json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": {"job-name": key.2}}, "spec": {"nodeName": node, "containers": [{"name": "psk-guard", "image": "x"}]}}));
    st.logs.insert((NS.into(), pod), stdout);
    if let Some(mut j) = st.objects.get(&key).cloned() {
        j["status"] = if out.status.success() {
            json!({"succeeded": 1})
        } else {
            json!({"failed": 1})
        };
        st.put("jobs", NS, j);
    }
}
