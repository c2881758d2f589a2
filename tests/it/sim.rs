//! A simulated Antrea cluster for the rotation tests: N nodes, each a real ovsdb-server, each
//! with a simulated antrea-agent that behaves as Antrea does (reads the key from the Secret when it
//! starts, keeps one tunnel port per peer with `options:psk`, deletes and recreates ports whose key
//! differs); and the controllers and kubelet as strict as the real ones where psk-guard depends
//! on them. Every change of a node's key is recorded with its time.
//!
//! - Nodes are Node objects (`kubernetes.io/os`, a Ready condition that a test can turn False).
//! - The DaemonSet controller follows pkg/controller/daemon/update.go `rollingUpdate` (maxSurge
//!   0): NotReady nodes count in `desiredNumberScheduled`; an unavailable pod (on a NotReady
//!   node, or Pending) counts against `maxUnavailable` (default 1), so one such pod stalls the
//!   rollout; an out-of-date unavailable pod is replaced at once. Pods carry a controller
//!   ownerReference to their DaemonSet's uid and are named `antrea-agent-<random>`. Under
//!   OnDelete only missing pods are created. The node lifecycle controller marks pods on NotReady
//!   nodes not Ready (pkg/controller/nodelifecycle).
//! - Optionally a second DaemonSet `antrea-agent-windows` with the SAME `app=antrea,
//!   component=antrea-agent` labels on a Windows node (Antrea's antrea-windows.yml), and
//!   non-agent pods in kube-system.
//! - The Job controller + kubelet: Pod Security admission by the namespace's
//!   `pod-security.kubernetes.io/enforce` label rejects a hostPath pod at pod creation (the Job
//!   gets a `FailedCreate` Event and never starts; staging/src/k8s.io/pod-security-admission/
//!   policy/check_hostPathVolumes.go); pods honour `nodeSelector` and node affinity (a pod that
//!   cannot run stays Pending); pods start after a configurable delay; the container runs the
//!   real psk-guard binary for the node it is pinned to, in a private mount namespace where the
//!   hostPaths (`/var/run/antrea`, and `/var/log/antrea` when the Job mounts it; a path it does
//!   not mount is one the container cannot see) are bind mounts of the node's directories,
//!   read-only when the volumeMount says so (`unshare -m`, as the container runtime does); a
//!   `Directory` hostPath missing on the node keeps the pod Pending with a `FailedMount` Event,
//!   as the kubelet's volume type check does (`host_path_missing`); CI runs as root; its log
//!   is stdout and stderr interleaved as the kubelet serves a container's log from the runtime's
//!   CRI log file (pkg/kubelet/kuberuntime/logs), a stdout line over 16 KiB split in partial
//!   entries with stderr lines between them (`cri_log`).
//! - The kubelet's readiness probes (pkg/kubelet/prober/worker.go, prober.go; pod Ready from
//!   pkg/kubelet/status/generate.go): an exec readinessProbe runs every `periodSeconds` after
//!   `initialDelaySeconds` while the container runs; the pod is Ready only after a probe
//!   succeeded, and never Ready on a node whose probes fail (`World::unready`). emptyDir volumes
//!   are a fresh directory per pod. Pod starts can differ per node (`World::job_start_delays`),
//!   and a container can be stalled once Ready (`World::stall_after_ready`, SIGSTOP/SIGCONT).
//! - The garbage collector deletes dependents of a deleted owner later, not at once
//!   (pkg/controller/garbagecollector).
//! - ServiceAccount admission: a Job's pod naming a service account that does not exist in its
//!   namespace is refused before Pod Security looks at it (`service_account_missing`); the
//!   cluster starts with `default` and `psk-guard-node` in kube-system.
//! - The Job controller's `activeDeadlineSeconds` ends a Job that has not finished, with or
//!   without a pod: the pod is deleted, the Job `Failed` with reason `DeadlineExceeded`
//!   (`run_job_until_deadline`; `World::deadline_lead` puts it ahead of the client's own timer).
//! - Optionally a mutating webhook injects a sidecar container into the Jobs' pods
//!   (`State::inject_sidecar`); the pod log API then needs the container's name.

use std::collections::HashSet;
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

/// What the API server answers when a mutating webhook times out (an Internal error), as the Job
/// controller's `FailedCreate` quotes it after "Error creating: ".
pub const WEBHOOK_TIMEOUT: &str = "Internal error occurred: failed calling webhook \"sidecar-injector.istio.io\": failed to call webhook: Post \"https://istiod.istio-system.svc:443/inject?timeout=10s\": context deadline exceeded";

/// A ResourceQuota refusing a pod (plugin/pkg/admission/resourcequota), after "Error creating: ".
pub const QUOTA_EXCEEDED: &str = "pods \"psk-guard-audit-x-\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=10, limited: pods=10";

#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    pub ip: String,
    pub sock: PathBuf,
    pub run_dir: PathBuf,
    /// The node's `/var/log/antrea`.
    pub log_dir: PathBuf,
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
    /// Faults and timings a test may change while the cluster runs.
    pub world: Arc<Mutex<World>>,
    stop: Arc<AtomicBool>,
}

/// Knobs of the simulated world a test may turn at any time.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// Nodes whose kubelet stopped reporting (Ready=False); their pods never start.
    pub not_ready: HashSet<String>,
    /// Nodes where new pods stay Pending (image pull back-off, no resources).
    pub pending: HashSet<String>,
    /// How long a Job's pod takes from creation to its container running.
    pub job_start_delay: Duration,
    /// Per node, a start delay replacing `job_start_delay` there (pods starting unevenly).
    pub job_start_delays: std::collections::HashMap<String, Duration>,
    /// Nodes where the kubelet's readiness probes never succeed (exec into the container
    /// fails): the Job's pod runs but never becomes Ready.
    pub unready: HashSet<String>,
    /// Per node: once its Job's pod is Ready, its container is stopped (SIGSTOP) for this long
    /// and then continued (a node starved of CPU, a frozen cgroup).
    pub stall_after_ready: std::collections::HashMap<String, Duration>,
    /// How many readiness probes the kubelets have exec'd (for the benchmark's CPU account).
    pub probe_execs: u64,
    /// When (Unix ms) each pod with a readiness probe turned Ready (for the benchmark).
    pub ready_times: Vec<u128>,
    /// How much sooner than `activeDeadlineSeconds` after the runner picked a Job up its deadline
    /// fires: the Job controller counts from the Job's first sync, right after its creation, a
    /// client from after it created all of its Jobs and synced its watch (seconds apart on a
    /// large or busy cluster). Lets a test put the controller's deadline first.
    pub deadline_lead: Duration,
    /// Per `purpose:node`: a refusal of the Job's pods by a mutating webhook (the message the API
    /// server answers) for the next N creations; the Job controller tries again with backoff.
    pub refuse_pods: std::collections::HashMap<String, (String, u32)>,
}

/// Shape of the cluster, fixed at creation.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// Node names (default `worker-NN`).
    pub names: Option<Vec<String>>,
    /// Add Antrea's Windows agent DaemonSet (same labels) with one Windows node, `win-00`.
    pub windows: bool,
    /// The agent DaemonSet's selector (default `matchLabels` app/component).
    pub selector: Option<Json>,
    /// Other pods in kube-system that carry `component=antrea-agent`-like labels but belong to
    /// nothing of Antrea's (e.g. a debug pod), one per node name given.
    pub stray_pods: bool,
    /// `spec.updateStrategy.rollingUpdate.maxUnavailable` (default: unset, i.e. 1).
    pub max_unavailable: Option<Json>,
}

pub const WINDOWS_NODE: &str = "win-00";

/// The psk-guard the simulated cluster runs (rotate, the Jobs' containers, the readiness
/// probes): the one cargo built with the tests, or `PSK_GUARD_SIM_BIN` (the benchmark points it
/// at a copy, e.g. a release build, so that rebuilding the worktree does not change it mid-run).
pub fn binary() -> String {
    std::env::var("PSK_GUARD_SIM_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_psk-guard").to_owned())
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

fn random_suffix() -> String {
    const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| A[rand::random::<u32>() as usize % A.len()] as char)
        .collect()
}

fn agent_labels() -> Json {
    json!({"app": "antrea", "component": "antrea-agent"})
}

/// A pod of DaemonSet `ds` on `node`, as the DaemonSet controller creates it.
fn agent_pod(ds: &Json, node: &str, phase: &str, ready: bool) -> Json {
    let name = ds["metadata"]["name"].as_str().unwrap();
    // Real pods get `<ds>-<random>`; `<ds>-<node>` (when it is a valid name) keeps test messages
    // readable, and no code may rely on either.
    let mut pod_name = format!("{name}-{node}");
    if kube_api::dns1123_subdomain_error(&pod_name).is_some() {
        pod_name = format!("{name}-{}", random_suffix());
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name,
                     "labels": ds["spec"]["template"]["metadata"]["labels"],
                     "annotations": template_annotations(ds),
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name,
                                          "uid": ds["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "antrea-agent", "image": "x"}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn node_object(name: &str, os: &str) -> Json {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/os": os, "beta.kubernetes.io/os": os}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

fn daemonset(
    name: &str,
    os: &str,
    selector: Json,
    on_delete: bool,
    max_unavailable: Option<Json>,
    n: usize,
) -> Json {
    let mut strategy = json!({"type": if on_delete { "OnDelete" } else { "RollingUpdate" }});
    if let Some(m) = max_unavailable {
        strategy["rollingUpdate"] = json!({"maxUnavailable": m});
    }
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "generation": 1, "labels": agent_labels()},
        "spec": {"selector": selector,
                 "updateStrategy": strategy,
                 "template": {"metadata": {"labels": agent_labels(), "annotations": {}},
                              "spec": {"nodeSelector": {"kubernetes.io/os": os},
                                       "containers": [{"name": "antrea-agent", "image": "antrea/antrea-agent:v2"}]}}},
        "status": {"desiredNumberScheduled": n, "currentNumberScheduled": n, "numberReady": n, "updatedNumberScheduled": n, "numberAvailable": n, "numberMisscheduled": 0, "observedGeneration": 1},
    })
}

impl Cluster {
    pub fn new(o: Options2) -> Cluster {
        Cluster::with_shape(o, Shape::default())
    }

    pub fn with_shape(o: Options2, shape: Shape) -> Cluster {
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
                name: shape
                    .names
                    .as_ref()
                    .and_then(|v| v.get(i).cloned())
                    .unwrap_or_else(|| format!("worker-{i:02}")),
                ip: format!("10.0.{}.{}", i / 200, i % 200 + 1),
                sock: n.sock.clone(),
                run_dir: n.run_dir.clone(),
                log_dir: n.log_dir.clone(),
            })
            .collect();
        let state: Shared = Arc::new(Mutex::new(State::default()));
        {
            let mut st = state.lock().unwrap();
            st.put("namespaces", "", json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}}));
            for sa in ["default", "psk-guard-node"] {
                st.put(
                    "serviceaccounts",
                    NS,
                    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}),
                );
            }
            st.put("secrets", NS, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "antrea-ipsec"}, "type": "Opaque", "data": {"psk": base64_encode(o.key.as_bytes())}}));
            st.put("configmaps", NS, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "antrea-config"}, "data": {"antrea-agent.conf": "featureGates:\n  AntreaIPAM: false\nipsec:\n  authenticationMode: psk\n"}}));
            let selector = shape
                .selector
                .clone()
                .unwrap_or_else(|| json!({"matchLabels": agent_labels()}));
            st.put(
                "daemonsets",
                NS,
                daemonset(
                    "antrea-agent",
                    "linux",
                    selector.clone(),
                    o.on_delete,
                    shape.max_unavailable.clone(),
                    o.nodes,
                ),
            );
            let ds = st.get("daemonsets", NS, "antrea-agent").cloned().unwrap();
            for info in &infos {
                st.put("nodes", "", node_object(&info.name, "linux"));
                st.put("pods", NS, agent_pod(&ds, &info.name, "Running", true));
            }
            if shape.windows {
                st.put("nodes", "", node_object(WINDOWS_NODE, "windows"));
                st.put(
                    "daemonsets",
                    NS,
                    daemonset(
                        "antrea-agent-windows",
                        "windows",
                        selector,
                        o.on_delete,
                        None,
                        1,
                    ),
                );
                let wds = st
                    .get("daemonsets", NS, "antrea-agent-windows")
                    .cloned()
                    .unwrap();
                st.put("pods", NS, agent_pod(&wds, WINDOWS_NODE, "Running", true));
            }
            if shape.stray_pods {
                // Not Antrea's: a debugging pod someone left, same component label, no owner.
                st.put("pods", NS, json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "agent-debug", "labels": {"component": "antrea-agent", "app": "debug"}},
                    "spec": {"nodeName": infos[0].name, "containers": [{"name": "sh", "image": "busybox"}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
                st.put("pods", NS, json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "coredns-6f8b9", "labels": {"k8s-app": "kube-dns"}},
                    "spec": {"nodeName": infos[0].name, "containers": [{"name": "coredns", "image": "coredns"}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
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
        let stale = Arc::new(Mutex::new(HashSet::new()));
        let world = Arc::new(Mutex::new(World::default()));
        let sim = Sim {
            state: state.clone(),
            infos: infos.clone(),
            changes: changes.clone(),
            world: world.clone(),
            stale: stale.clone(),
            failing: Arc::new(Mutex::new(HashSet::new())),
            stop: stop.clone(),
            restart_delay: o.restart_delay,
            starting: Arc::new(Mutex::new(HashSet::new())),
            kubeconfig: kubeconfig.clone(),
        };
        let failing_jobs = sim.failing.clone();
        rt.spawn(daemonset_controller(sim.clone()));
        rt.spawn(job_runner(sim.clone()));
        rt.spawn(garbage_collector(sim.clone()));
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
            world,
            stop,
        }
    }

    /// Runs the real psk-guard against this cluster.
    pub fn psk_guard(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut c = std::process::Command::new(binary());
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

    /// Turns a node NotReady (its kubelet stops posting status) or Ready again.
    pub fn set_ready(&self, node: &str, ready: bool) {
        {
            let mut w = self.world.lock().unwrap();
            if ready {
                w.not_ready.remove(node);
            } else {
                w.not_ready.insert(node.to_owned());
            }
        }
        let mut st = self.state.lock().unwrap();
        let mut n = st.get("nodes", "", node).cloned().unwrap();
        n["status"]["conditions"] =
            json!([{"type": "Ready", "status": if ready { "True" } else { "False" }}]);
        st.put("nodes", "", n);
    }

    /// Waits until the agent DaemonSet's status shows `available` available pods (the
    /// controllers have caught up with a change of the world); panics after 20 s.
    pub fn wait_available(&self, available: u64) {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self
                .state
                .lock()
                .unwrap()
                .get("daemonsets", NS, "antrea-agent")
                .and_then(|d| d["status"]["numberAvailable"].as_u64());
            if now == Some(available) {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "the DaemonSet never showed {available} available (now {now:?})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent pods of DaemonSet `ds` (by owner uid): (name, node, uid).
    pub fn pods_of(&self, ds: &str) -> Vec<(String, String, String)> {
        let st = self.state.lock().unwrap();
        let Some(uid) = st
            .get("daemonsets", NS, ds)
            .map(|d| d["metadata"]["uid"].clone())
        else {
            return vec![];
        };
        st.list("pods", NS)
            .into_iter()
            .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_owned(),
                    p["spec"]["nodeName"].as_str().unwrap_or("").to_owned(),
                    p["metadata"]["uid"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
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

/// What the controllers share.
#[derive(Clone)]
struct Sim {
    state: Shared,
    infos: Vec<NodeInfo>,
    changes: Changes,
    world: Arc<Mutex<World>>,
    stale: Arc<Mutex<HashSet<String>>>,
    failing: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
    restart_delay: Duration,
    /// Pods (by name) whose container is being started.
    starting: Arc<Mutex<HashSet<String>>>,
    /// What a pod's service account token gives its containers: access to this server (standing
    /// in for the in-cluster config, `KUBERNETES_SERVICE_HOST` and the token at
    /// /var/run/secrets/kubernetes.io/serviceaccount).
    kubeconfig: PathBuf,
}

impl Sim {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn node_up(&self, node: &str) -> bool {
        let w = self.world.lock().unwrap();
        !w.not_ready.contains(node)
    }
    fn node_accepts_pods(&self, node: &str) -> bool {
        let w = self.world.lock().unwrap();
        !w.not_ready.contains(node) && !w.pending.contains(node)
    }
}

fn pod_available(p: &Json) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["phase"] == "Running"
        && p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// A node's labels, with the ones its kubelet always sets on registration
/// (pkg/kubelet/kubelet_node_status.go: `kubernetes.io/os`), for nodes a test put by hand.
fn node_labels(node: &Json) -> Json {
    let mut l = node["metadata"]["labels"].clone();
    if l["kubernetes.io/os"].is_null() {
        l["kubernetes.io/os"] = json!("linux");
    }
    l
}

fn node_matches(node: &Json, selector: &Json) -> bool {
    let labels = node_labels(node);
    selector
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels[k] == *v)
}

/// `maxUnavailable` as an absolute number (an int or a percentage of desired, rounded up as
/// intstr.GetScaledValueFromIntOrPercent does for DaemonSets); at least 1 when maxSurge is 0.
fn max_unavailable(ds: &Json, desired: usize) -> usize {
    let m = &ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"];
    let n = match (m.as_u64(), m.as_str()) {
        (Some(n), _) => n as usize,
        (None, Some(p)) => {
            let pct: usize = p.trim_end_matches('%').parse().unwrap_or(0);
            (pct * desired).div_ceil(100)
        }
        _ => 1,
    };
    n.max(1)
}

/// One pass of the DaemonSet controller for `ds_name`: status, then pods to delete (rolling
/// update) and nodes missing a pod. Returns (pods to delete, pods created).
fn sync_daemonset(sim: &Sim, st: &mut State, ds_name: &str) -> Vec<String> {
    let Some(ds) = st.get("daemonsets", NS, ds_name).cloned() else {
        return vec![];
    };
    let uid = ds["metadata"]["uid"].clone();
    let tmpl = template_annotations(&ds);
    let on_delete = ds["spec"]["updateStrategy"]["type"] == "OnDelete";
    let node_sel = ds["spec"]["template"]["spec"]["nodeSelector"].clone();
    let nodes: Vec<String> = st
        .list("nodes", "")
        .into_iter()
        .filter(|n| node_matches(n, &node_sel))
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    // The node lifecycle controller: pods on a NotReady node are not Ready.
    let pods: Vec<Json> = st
        .list("pods", NS)
        .into_iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
        .cloned()
        .collect();
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("");
        if !sim.node_up(node) && pod_available(p) {
            let mut p2 = p.clone();
            p2["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
            st.put("pods", NS, p2);
        }
    }
    let pods: Vec<Json> = st
        .list("pods", NS)
        .into_iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
        .cloned()
        .collect();
    let on = |n: &str| pods.iter().find(|p| p["spec"]["nodeName"] == n);
    let updated = |p: &Json| p["metadata"]["annotations"] == tmpl;
    let max = max_unavailable(&ds, nodes.len());
    let (mut unavailable, mut replace_now, mut candidates) = (0, vec![], vec![]);
    let mut missing = vec![];
    for n in &nodes {
        match on(n) {
            None => {
                unavailable += 1;
                missing.push(n.clone());
            }
            Some(p) if updated(p) => {
                if !pod_available(p) {
                    unavailable += 1;
                }
            }
            Some(p) => {
                let name = p["metadata"]["name"].as_str().unwrap().to_owned();
                if on_delete {
                    continue;
                }
                if !pod_available(p) {
                    replace_now.push(name);
                    unavailable += 1;
                } else if unavailable < max {
                    candidates.push(name);
                }
            }
        }
    }
    let budget = max.saturating_sub(unavailable).min(candidates.len());
    let mut delete = replace_now;
    delete.extend(candidates.into_iter().take(budget));
    // Status reflects the pods as they are.
    let count = |f: &dyn Fn(&Json) -> bool| nodes.iter().filter(|n| on(n).is_some_and(f)).count();
    let available = count(&pod_available);
    let mut ds2 = ds.clone();
    ds2["status"] = json!({
        "desiredNumberScheduled": nodes.len(),
        "currentNumberScheduled": count(&|_| true),
        "numberReady": available,
        "numberAvailable": available,
        "numberUnavailable": nodes.len() - available,
        "updatedNumberScheduled": count(&updated),
        "numberMisscheduled": 0,
        "observedGeneration": ds["metadata"]["generation"].clone(),
    });
    if ds2["status"] != ds["status"] {
        st.put("daemonsets", NS, ds2);
    }
    // The manage loop: a pod for every node without one (Pending until its kubelet starts it).
    let mut created = vec![];
    for n in missing {
        let pod = agent_pod(&ds, &n, "Pending", false);
        created.push(pod["metadata"]["name"].as_str().unwrap().to_owned());
        st.put("pods", NS, pod);
    }
    for name in &delete {
        st.remove(&("pods".into(), NS.into(), name.clone()));
    }
    created
}

async fn daemonset_controller(sim: Sim) {
    while !sim.stopped() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut created = {
            let mut st = sim.state.lock().unwrap();
            let mut c = sync_daemonset(&sim, &mut st, "antrea-agent");
            c.extend(sync_daemonset(&sim, &mut st, "antrea-agent-windows"));
            c
        };
        // Pending pods whose container has not been started yet (e.g. a node came back).
        {
            let st = sim.state.lock().unwrap();
            for p in st.list("pods", NS) {
                if p["status"]["phase"] == "Pending"
                    && p["metadata"]["ownerReferences"][0]["kind"] == "DaemonSet"
                {
                    created.push(p["metadata"]["name"].as_str().unwrap().to_owned());
                }
            }
        }
        for pod in created {
            if sim.starting.lock().unwrap().insert(pod.clone()) {
                tokio::spawn(kubelet_start_agent(sim.clone(), pod));
            }
        }
    }
}

/// The kubelet starts an agent container: after the restart delay (and only on a node that is
/// up and accepts pods), the agent reads the Secret and configures its tunnels, then is Ready.
async fn kubelet_start_agent(sim: Sim, pod: String) {
    let key = ("pods".to_owned(), NS.to_owned(), pod.clone());
    let node = {
        let st = sim.state.lock().unwrap();
        st.objects
            .get(&key)
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_owned())
    };
    let Some(node) = node else {
        sim.starting.lock().unwrap().remove(&pod);
        return;
    };
    tokio::time::sleep(sim.restart_delay).await;
    loop {
        if sim.stopped() || !sim.state.lock().unwrap().objects.contains_key(&key) {
            sim.starting.lock().unwrap().remove(&pod);
            return;
        }
        if sim.node_accepts_pods(&node) {
            let secret = secret_key(&sim.state.lock().unwrap());
            let is_stale = sim.stale.lock().unwrap().contains(&node);
            let info = sim.infos.iter().find(|i| i.name == node).cloned();
            let started = match (info, secret, is_stale) {
                // An agent that cannot reach its OVSDB crashes: its pod does not become Ready
                // (the rolling update stalls on it) until an attempt succeeds.
                (Some(info), Some(k), false) => agent_start(&info, &sim.infos, &k, &sim.changes)
                    .await
                    .is_ok(),
                _ => true,
            };
            if started {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut st = sim.state.lock().unwrap();
    if let Some(mut p) = st.objects.get(&key).cloned() {
        p["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        st.put("pods", NS, p);
    }
    sim.starting.lock().unwrap().remove(&pod);
}

async fn job_runner(sim: Sim) {
    while !sim.stopped() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let jobs: Vec<_> = std::mem::take(&mut sim.state.lock().unwrap().new_jobs);
        for key in jobs {
            tokio::spawn(run_job_until_deadline(sim.clone(), key));
        }
    }
}

/// The garbage collector: every 300 ms, objects whose owners are all gone are deleted.
async fn garbage_collector(sim: Sim) {
    while !sim.stopped() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut st = sim.state.lock().unwrap();
        let uids: HashSet<String> = st
            .objects
            .values()
            .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        let orphans: Vec<kube_api::Key> = st
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|v| {
                        !v.is_empty()
                            && !v
                                .iter()
                                .any(|r| r["uid"].as_str().is_some_and(|u| uids.contains(u)))
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &orphans {
            st.remove(k);
        }
    }
}

/// Pod Security admission of the Job's pod (staging/src/k8s.io/pod-security-admission): the
/// namespace's enforce level, or the configured default; see `kube_api::pod_security_refusal`.
fn pod_security_violation(st: &State, ns: &str, pod_spec: &Json) -> Option<String> {
    kube_api::pod_security_refusal(st, ns, pod_spec)
}

/// Admission of a Job's pod, in the API server's order: the ServiceAccount plugin (mutating;
/// it refuses before the registry generates the pod's name, so its message names the
/// generateName `<job>-`, apiserver admission/errors.go `extractResourceName`), then mutating
/// webhooks (`World::refuse_pods`, e.g. a sidecar injector timing out: an Internal error), then
/// Pod Security (validating: it sees the generated name). The refusal as the Job controller's
/// `FailedCreate` Event words it after "Error creating: ".
fn admission(
    sim: &Sim,
    st: &State,
    key: &kube_api::Key,
    spec: &Json,
    node: &str,
) -> Option<String> {
    let ns = &key.1;
    if let Some(why) = service_account_missing(st, ns, spec) {
        return Some(format!("pods \"{}-\" is forbidden: {why}", key.2));
    }
    let purpose = st.objects.get(key)?["metadata"]["labels"]["psk-guard.io/purpose"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    {
        let mut w = sim.world.lock().unwrap();
        if let Some((message, left)) = w.refuse_pods.get_mut(&format!("{purpose}:{node}")) {
            if *left > 0 {
                *left -= 1;
                return Some(message.clone());
            }
        }
    }
    pod_security_violation(st, ns, spec)
        .map(|why| format!("pods \"{}-{}\" is forbidden: {why}", key.2, random_suffix()))
}

/// The ServiceAccount admission plugin (plugin/pkg/admission/serviceaccount/admission.go,
/// `Admit`): a pod without `serviceAccountName` gets `default`; a pod whose service account does
/// not exist in its namespace is refused, Forbidden, "error looking up service account NS/NAME:
/// serviceaccount \"NAME\" not found" (the NotFound of `getServiceAccount`). The Job controller
/// records that as a `FailedCreate` Event and tries again, so the Job never gets a pod.
/// A Job's dry run does not see it: the plugin admits pods, not Jobs. The ServiceAccount
/// controller creates `default` in every namespace; the cluster starts with it and
/// `psk-guard-node` (docs/deploy/serviceaccounts.yaml).
fn service_account_missing(st: &State, ns: &str, pod_spec: &Json) -> Option<String> {
    let name = pod_spec["serviceAccountName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    st.get("serviceaccounts", ns, name).is_none().then(|| {
        format!("error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found")
    })
}

/// The kubelet's check of a hostPath volume's `type` (pkg/volume/hostpath/host_path.go
/// `checkType`/`typeMatchedOrError`, wrapped by the operation generator's "MountVolume.SetUp
/// failed for volume"): a `Directory` that does not exist or is no directory fails the mount.
/// The node's directories stand for its `/var/run/antrea` and `/var/log/antrea`.
fn host_path_missing(spec: &Json, info: &NodeInfo) -> Option<String> {
    spec["volumes"].as_array()?.iter().find_map(|v| {
        let path = v["hostPath"]["path"].as_str()?;
        let on_node = match path {
            "/var/run/antrea" => &info.run_dir,
            "/var/log/antrea" => &info.log_dir,
            _ => return None,
        };
        let why = match std::fs::metadata(on_node) {
            _ if v["hostPath"]["type"] != "Directory" => return None,
            Ok(m) if m.is_dir() => return None,
            Ok(_) => format!("hostPath type check failed: {path} is not a directory"),
            Err(_) => format!("hostPath {path} doesn't exist"),
        };
        let name = v["name"].as_str().unwrap_or("");
        Some(format!(
            "MountVolume.SetUp failed for volume \"{name}\" : {why}"
        ))
    })
}

/// A true Job condition of type `t`.
fn job_condition(t: &str, reason: &str, message: &str) -> Json {
    json!({"type": t, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": "2026-11-26T00:00:00Z", "lastTransitionTime": "2026-11-26T00:00:00Z"})
}

/// A finished Job's status as the Job controller writes it (pkg/controller/job/job_controller.go,
/// 1.31+): the counts, and the terminal conditions, `SuccessCriteriaMet` then `Complete` on
/// success, `FailureTarget` then `Failed` on failure (reason `PodFailurePolicy` when a FailJob
/// rule matched the exit code, else `BackoffLimitExceeded`).
fn job_status(sim: &Sim, key: &kube_api::Key, exit: Option<i32>) {
    let mut st = sim.state.lock().unwrap();
    if let Some(mut j) = st.objects.get(key).cloned() {
        let cond = |t: &str, reason: &str| job_condition(t, reason, "");
        j["status"] = if exit == Some(0) {
            json!({"succeeded": 1, "conditions": [cond("SuccessCriteriaMet", "CompletionsReached"), cond("Complete", "CompletionsReached")]})
        } else {
            let fail_job = j["spec"]["podFailurePolicy"]["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| {
                    r["action"] == "FailJob"
                        && r["onExitCodes"]["operator"] == "In"
                        && exit.is_some_and(|c| {
                            r["onExitCodes"]["values"]
                                .as_array()
                                .is_some_and(|v| v.contains(&json!(c)))
                        })
                });
            let reason = if fail_job {
                "PodFailurePolicy"
            } else {
                "BackoffLimitExceeded"
            };
            json!({"failed": 1, "conditions": [cond("FailureTarget", reason), cond("Failed", reason)]})
        };
        st.put("jobs", &key.1, j);
    }
}

/// The Job controller's `activeDeadlineSeconds` (pkg/controller/job/job_controller.go `syncJob`,
/// `pastActiveDeadline`, `deleteActivePods`, `trackJobStatusAndRemoveFinalizers`; 1.31+
/// `delayTerminalCondition`): counted from the Job's first sync (here: when the runner picks it
/// up, right after its creation), whether or not it has a pod. Past it the controller deletes the
/// active pod (its container is killed), counts it failed (none when admission never let one be
/// created) and ends the Job with `FailureTarget` then `Failed`, both reason `DeadlineExceeded`.
/// A client's own timer started after creating its Jobs fires later than this one.
async fn run_job_until_deadline(sim: Sim, key: kube_api::Key) {
    let deadline = {
        let st = sim.state.lock().unwrap();
        st.objects
            .get(&key)
            .and_then(|j| j["spec"]["activeDeadlineSeconds"].as_u64())
    };
    let work = async {
        run_job(sim.clone(), key.clone()).await;
        if !job_ended(&sim, &key) {
            // A Job without a finished pod (refused, Pending, hung) stays active until its
            // deadline (the runtime, the cluster's, ends this task with the cluster).
            std::future::pending::<()>().await;
        }
    };
    let Some(secs) = deadline else {
        return work.await;
    };
    let lead = sim.world.lock().unwrap().deadline_lead;
    tokio::select! {
        _ = work => {}
        _ = tokio::time::sleep(Duration::from_secs(secs).saturating_sub(lead)) => deadline_exceeded(&sim, &key),
    }
}

/// Whether the Job is gone or has a terminal condition.
fn job_ended(sim: &Sim, key: &kube_api::Key) -> bool {
    let st = sim.state.lock().unwrap();
    st.objects.get(key).is_none_or(|job| {
        job["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    })
}

fn deadline_exceeded(sim: &Sim, key: &kube_api::Key) {
    if job_ended(sim, key) {
        return;
    }
    let mut st = sim.state.lock().unwrap();
    let Some(mut job) = st.objects.get(key).cloned() else {
        return;
    };
    let uid = job["metadata"]["uid"].clone();
    let active: Vec<String> = st
        .list("pods", &key.1)
        .into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"][0]["uid"] == uid
                && p["status"]["phase"] != "Succeeded"
                && p["status"]["phase"] != "Failed"
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    for p in &active {
        st.remove(&("pods".into(), key.1.clone(), p.clone()));
    }
    let cond = |t: &str| {
        job_condition(
            t,
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        )
    };
    job["status"] =
        json!({"failed": active.len(), "conditions": [cond("FailureTarget"), cond("Failed")]});
    st.put("jobs", &key.1, job);
}

fn set_pod_phase(sim: &Sim, ns: &str, pod: &str, phase: &str) {
    let mut st = sim.state.lock().unwrap();
    if let Some(mut p) = st.get("pods", ns, pod).cloned() {
        p["status"]["phase"] = json!(phase);
        st.put("pods", ns, p);
    }
}

/// The Job controller and the kubelet for one Job: admission, scheduling, the delayed start, the
/// container (the real psk-guard) and its merged log.
async fn run_job(sim: Sim, key: kube_api::Key) {
    let ns = key.1.clone();
    let (job, secret, node_obj, violation) = {
        let st = sim.state.lock().unwrap();
        let Some(job) = st.objects.get(&key).cloned() else {
            return;
        };
        let spec = &job["spec"]["template"]["spec"];
        let pinned = spec["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchFields"][0]["values"][0]
            .as_str();
        // A pod pinned to no node goes where the scheduler finds room: here the first node
        // whose labels match its nodeSelector.
        let node = match pinned {
            Some(n) => n.to_owned(),
            None => sim
                .infos
                .iter()
                .find(|i| {
                    st.get("nodes", "", &i.name)
                        .is_some_and(|n| node_matches(n, &spec["nodeSelector"]))
                })
                .map(|i| i.name.clone())
                .unwrap_or_default(),
        };
        (
            job.clone(),
            st.get("secrets", NS, "antrea-ipsec").cloned(),
            st.get("nodes", "", &node)
                .cloned()
                .unwrap_or(json!({"metadata": {"name": node}})),
            admission(&sim, &st, &key, spec, &node),
        )
    };
    let spec = job["spec"]["template"]["spec"].clone();
    // The Job exists; its pod is refused at creation, and the Job controller tries again with
    // backoff, 1 s doubling up to 60 s (pkg/controller/job `DefaultJobApiBackOff`,
    // `MaxJobApiBackOff`), recording `FailedCreate` on the Job each time; client-go's
    // EventCorrelator folds a repeat of the same message into the same Event (its count).
    let mut violation = violation;
    let mut backoff = Duration::from_secs(1);
    let mut events: std::collections::HashMap<String, (String, u64)> = Default::default();
    while let Some(message) = violation {
        {
            let mut st = sim.state.lock().unwrap();
            let (name, count) = events
                .entry(message.clone())
                .or_insert_with(|| (format!("{}.{}", key.2, random_suffix()), 0));
            *count += 1;
            st.put("events", &ns, json!({"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name},
                "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": key.2, "namespace": ns, "uid": job["metadata"]["uid"]},
                "reason": "FailedCreate", "type": "Warning", "count": count,
                "message": format!("Error creating: {message}")}));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
        let st = sim.state.lock().unwrap();
        if sim.stopped() || !st.objects.contains_key(&key) {
            return;
        }
        violation = admission(
            &sim,
            &st,
            &key,
            &spec,
            node_obj["metadata"]["name"].as_str().unwrap_or(""),
        );
    }
    let node = node_obj["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let pod = format!("{}-{}", key.2, random_suffix());
    {
        let mut st = sim.state.lock().unwrap();
        let mut containers = vec![json!({"name": spec["containers"][0]["name"], "image": "x"})];
        if st.inject_sidecar {
            containers.push(json!({"name": "istio-proxy", "image": "proxyv2"}));
        }
        st.put("pods", &ns, json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "labels": job["spec"]["template"]["metadata"]["labels"],
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": key.2, "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": node, "containers": containers},
            "status": {"phase": "Pending"}}));
        // The Job controller counts the pod it created as active (status.active).
        if let Some(mut j) = st.objects.get(&key).cloned() {
            j["status"]["active"] = json!(1);
            st.put("jobs", &ns, j);
        }
    }
    // Scheduling and the kubelet: a pod whose node does not exist, does not match its
    // nodeSelector, cannot run a Linux image, or is down stays Pending.
    let info = sim.infos.iter().find(|i| i.name == node).cloned();
    let runs_here = node_obj["status"].is_object()
        && node_matches(&node_obj, &spec["nodeSelector"])
        && node_labels(&node_obj)["kubernetes.io/os"] == "linux";
    let (Some(info), true) = (info, runs_here) else {
        return;
    };
    if sim
        .failing
        .lock()
        .unwrap()
        .contains(&format!("hang:{node}"))
    {
        return; // the Job never finishes (a pod stuck Pending, an unreachable node)
    }
    if let Some(why) = host_path_missing(&spec, &info) {
        // The kubelet cannot set up the volume: the pod stays Pending (ContainerCreating) and
        // the kubelet records FailedMount on it, retrying for ever.
        let mut st = sim.state.lock().unwrap();
        let uid = st
            .get("pods", &ns, &pod)
            .map(|p| p["metadata"]["uid"].clone());
        st.put("events", &ns, json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{pod}.{}", random_suffix())},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": ns, "uid": uid},
            "reason": "FailedMount", "type": "Warning", "source": {"component": "kubelet", "host": node},
            "message": why}));
        return;
    }
    let delay = {
        let w = sim.world.lock().unwrap();
        w.job_start_delays
            .get(&node)
            .copied()
            .unwrap_or(w.job_start_delay)
    };
    tokio::time::sleep(delay).await;
    while !sim.node_accepts_pods(&node) {
        if sim.stopped() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // `node` fails every Job there; `purpose:node` only that purpose's (e.g. `push:worker-01`).
    let purpose = job["metadata"]["labels"]["psk-guard.io/purpose"]
        .as_str()
        .unwrap_or("");
    let failing = sim.failing.lock().unwrap().clone();
    if failing.contains(&node) || failing.contains(&format!("{purpose}:{node}")) {
        set_pod_phase(&sim, &ns, &pod, "Failed");
        job_status(&sim, &key, None);
        return;
    }
    set_pod_phase(&sim, &ns, &pod, "Running");
    let container = &spec["containers"][0];
    // Each hostPath the container mounts: (path in the pod, the node's directory, read-only).
    let mounts: Vec<(&str, String, bool)> = [
        ("/var/run/antrea", &info.run_dir),
        ("/var/log/antrea", &info.log_dir),
    ]
    .into_iter()
    .filter_map(|(inside, host)| {
        let m = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == inside)?;
        Some((inside, host.display().to_string(), m["readOnly"] == true))
    })
    .collect();
    // Each emptyDir the container mounts: (path in the pod, a fresh directory of the pod).
    let empty_dirs = empty_dirs(&sim, &spec, container, &pod);
    let in_pod = |a: &str| {
        let mut a = a.to_owned();
        for (inside, host, _) in &mounts {
            a = a.replace(inside, host);
        }
        for (inside, dir) in &empty_dirs {
            a = a.replace(inside.as_str(), dir.to_str().unwrap());
        }
        // A host path the Job does not mount: the container sees nothing there.
        a.replace("/var/log/antrea", "/nonexistent/var/log/antrea")
    };
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| in_pod(a.as_str().unwrap()))
        .collect();
    let probe: Option<Probe> = Probe::of(container, &in_pod);
    // The container's view of the host paths: bind mounts in a private mount namespace,
    // read-only when the volumeMount says so; stdout and stderr go to one log stream.
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(r#"while [ "$1" != -- ]; do mount --bind "$1" "$1" && { [ "$2" = rw ] || mount -o remount,ro,bind "$1" "$1"; } || exit 99; shift 2; done; shift; exec "$@""#)
        .arg("sh");
    for (_, host, read_only) in &mounts {
        cmd.args([host.as_str(), if *read_only { "ro" } else { "rw" }]);
    }
    cmd.arg("--")
        .arg(binary())
        .args(&args)
        .env_remove("PSK_GUARD_FINGERPRINT_SALT")
        .env_remove("RUST_LOG")
        .env_remove("PSK_GUARD_TEST_PAUSE_AFTER")
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null());
    // The service account token is mounted unless the pod opts out.
    if spec["automountServiceAccountToken"] != false {
        cmd.env("KUBECONFIG", &sim.kubeconfig);
    }
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
    // Deleting the pod (its Job's deadline) kills the container.
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap();
    let exited = Arc::new(AtomicBool::new(false));
    if let Some(probe) = probe {
        tokio::spawn(prober(
            sim.clone(),
            ns.clone(),
            pod.clone(),
            node.clone(),
            probe,
            child.id(),
            exited.clone(),
        ));
    }
    let out = child.wait_with_output().await.unwrap();
    exited.store(true, Ordering::Relaxed);
    let log = cri_log(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    );
    if args.first().map(String::as_str) == Some("push-key") && out.status.success() {
        if let Some(v) = push_result(&log) {
            if v["tunnels_changed"].as_u64().unwrap_or(0) > 0 {
                let k = secret
                    .as_ref()
                    .map(|s| base64_decode(s["data"]["psk"].as_str().unwrap_or("")))
                    .unwrap_or_default();
                sim.changes.lock().unwrap().push((
                    node.clone(),
                    v["written_at_unix_ms"].as_u64().unwrap_or(0) as u128,
                    key_tag(&k),
                ));
            }
        }
    }
    sim.state
        .lock()
        .unwrap()
        .logs
        .insert((ns.clone(), pod.clone()), log);
    let ok = out.status.success();
    // A terminated container is not ready (pkg/kubelet/status: containers that exited).
    set_pod_ready(&sim, &ns, &pod, false);
    set_pod_phase(&sim, &ns, &pod, if ok { "Succeeded" } else { "Failed" });
    job_status(&sim, &key, out.status.code());
}

/// A container's log as the kubelet serves it (pkg/kubelet/kuberuntime/logs/logs.go) from the
/// runtime's CRI log file: containerd reads stdout and stderr concurrently and writes each line as
/// an entry, a line longer than `max_container_log_line_size` (16 KiB) as several partial entries;
/// the kubelet joins partial entries in file order. Which stream's entry comes first is a race:
/// this takes the worst case, every stderr line right after the first partial stdout entry (so
/// inside a long stdout line), else before stdout.
fn cri_log(stdout: &str, stderr: &str) -> String {
    const MAX_LINE: usize = 16 * 1024;
    let mut entries: Vec<(&[u8], bool)> = vec![]; // (content, partial)
    for line in stdout.lines() {
        let mut chunks = line.as_bytes().chunks(MAX_LINE).peekable();
        while let Some(c) = chunks.next() {
            entries.push((c, chunks.peek().is_some()));
        }
    }
    let at = entries.iter().position(|e| e.1).map_or(0, |i| i + 1);
    entries.splice(at..at, stderr.lines().map(|l| (l.as_bytes(), false)));
    let mut log = Vec::with_capacity(stdout.len() + stderr.len() + 1);
    for (content, partial) in entries {
        log.extend_from_slice(content);
        if !partial {
            log.push(b'\n');
        }
    }
    String::from_utf8_lossy(&log).into_owned()
}

/// The emptyDir volumes `container` mounts: (mount path, a new directory for this pod), as the
/// kubelet creates one empty directory per pod and volume (pkg/volume/emptydir).
fn empty_dirs(sim: &Sim, spec: &Json, container: &Json, pod: &str) -> Vec<(String, PathBuf)> {
    let base = sim.kubeconfig.parent().unwrap().join("pods").join(pod);
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let vol = spec["volumes"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == m["name"])?;
            vol["emptyDir"].is_object().then_some(())?;
            let dir = base.join(m["name"].as_str()?);
            std::fs::create_dir_all(&dir).unwrap();
            Some((m["mountPath"].as_str()?.to_owned(), dir))
        })
        .collect()
}

/// A container's readinessProbe (exec only; the psk-guard image has nothing else to run), with
/// the kubelet's defaults (k8s.io/api core/v1 Probe: periodSeconds 10, timeoutSeconds 1,
/// successThreshold 1, failureThreshold 3, initialDelaySeconds 0).
struct Probe {
    command: Vec<String>,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u64,
    failure_threshold: u64,
}

impl Probe {
    fn of(container: &Json, in_pod: &dyn Fn(&str) -> String) -> Option<Probe> {
        let p = container["readinessProbe"].as_object()?;
        let secs =
            |k: &str, d: u64| Duration::from_secs(p.get(k).and_then(Json::as_u64).unwrap_or(d));
        let command = p["exec"]["command"]
            .as_array()?
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let a = a.as_str().unwrap();
                // The image's binary is the psk-guard under test.
                if i == 0 && a == psk_guard::cluster::jobs::IMAGE_BINARY {
                    binary()
                } else {
                    in_pod(a)
                }
            })
            .collect();
        Some(Probe {
            command,
            initial_delay: secs("initialDelaySeconds", 0),
            period: secs("periodSeconds", 10),
            timeout: secs("timeoutSeconds", 1),
            success_threshold: p
                .get("successThreshold")
                .and_then(Json::as_u64)
                .unwrap_or(1),
            failure_threshold: p
                .get("failureThreshold")
                .and_then(Json::as_u64)
                .unwrap_or(3),
        })
    }

    /// One exec of the probe: success when it exits 0 within the timeout (pkg/kubelet/prober/
    /// prober.go runProbe: exec through the runtime, a timeout is a failure).
    async fn run(&self) -> bool {
        let mut c = tokio::process::Command::new(&self.command[0]);
        c.args(&self.command[1..])
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let Ok(mut child) = c.spawn() else {
            return false;
        };
        matches!(
            tokio::time::timeout(self.timeout, child.wait()).await,
            Ok(Ok(st)) if st.success()
        )
    }
}

/// The kubelet's readiness worker for one container (pkg/kubelet/prober/worker.go): after
/// `initialDelaySeconds`, the probe runs every `periodSeconds` until the container exits; the
/// readiness result starts as Failure (`initialValue` for readiness probes) and flips after
/// `successThreshold` successes in a row (back after `failureThreshold` failures). The pod's
/// Ready condition is the containers' readiness (pkg/kubelet/status/generate.go
/// GeneratePodReadyCondition), so a pod is never Ready before a probe succeeded. A node in
/// `World::unready` never passes a probe; one in `World::stall_after_ready` has its container
/// stopped once Ready.
async fn prober(
    sim: Sim,
    ns: String,
    pod: String,
    node: String,
    probe: Probe,
    pid: Option<u32>,
    exited: Arc<AtomicBool>,
) {
    set_pod_ready(&sim, &ns, &pod, false);
    tokio::time::sleep(probe.initial_delay).await;
    let (mut ready, mut run_ok, mut run_bad) = (false, 0, 0);
    while !exited.load(Ordering::Relaxed) && !sim.stopped() {
        if sim.state.lock().unwrap().get("pods", &ns, &pod).is_none() {
            return; // the pod was deleted
        }
        let unready = {
            let mut w = sim.world.lock().unwrap();
            w.probe_execs += 1;
            w.unready.contains(&node)
        };
        let ok = !unready && probe.run().await;
        if exited.load(Ordering::Relaxed) {
            return;
        }
        (run_ok, run_bad) = if ok {
            (run_ok + 1, 0)
        } else {
            (0, run_bad + 1)
        };
        if !ready && run_ok >= probe.success_threshold {
            ready = true;
            set_pod_ready(&sim, &ns, &pod, true);
            sim.world.lock().unwrap().ready_times.push(now_ms());
            let stall = sim
                .world
                .lock()
                .unwrap()
                .stall_after_ready
                .get(&node)
                .copied();
            if let (Some(d), Some(pid)) = (stall, pid) {
                signal(pid, "STOP");
                tokio::time::sleep(d).await;
                signal(pid, "CONT");
            }
        } else if ready && run_bad >= probe.failure_threshold {
            ready = false;
            set_pod_ready(&sim, &ns, &pod, false);
        }
        tokio::time::sleep(probe.period).await;
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// The pod's Ready condition (and ContainersReady), as the kubelet's status manager posts it.
fn set_pod_ready(sim: &Sim, ns: &str, pod: &str, ready: bool) {
    let mut st = sim.state.lock().unwrap();
    if let Some(mut p) = st.get("pods", ns, pod).cloned() {
        if p["status"]["phase"] != "Running" {
            return;
        }
        let s = if ready { "True" } else { "False" };
        p["status"]["conditions"] =
            json!([{"type": "ContainersReady", "status": s}, {"type": "Ready", "status": s}]);
        st.put("pods", ns, p);
    }
}

/// push-key's summary from its pod's log: psk-guard's framed result (`cluster::frame`), or a line
/// that is a bare JSON object.
pub fn push_result(log: &str) -> Option<Json> {
    psk_guard::cluster::frame::decode(log).ok().or_else(|| {
        log.lines().find_map(|l| {
            serde_json::from_str::<Json>(l)
                .ok()
                .filter(|v| v.is_object())
        })
    })
}
