//! `psk-guard push-key`, the node half of the `push` strategy: read the new key from an
//! environment variable (set from the Secret by the Job), wait for the shared instant, then write
//! it into `options:psk` of every IPsec tunnel of this node in ONE transaction, so the node is
//! never half-changed (OVSDB transactions are all-or-nothing). ovs-monitor-ipsec picks the change
//! up and reloads strongSwan without restarts.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::checks::tunnels;
use crate::ovsdb::{
    client::Options, Atom, Client, Condition, Mutation, OpResult, Operation, Prepared, Row, Value,
    VSWITCH_DB,
};
use crate::secret::{Fingerprint, FingerprintKey, Psk};

/// How late a node may write after the shared instant (clock skew, a slow start): past it the
/// node refuses rather than widen the window in which nodes hold different keys.
pub const LATE_TOLERANCE_MS: u128 = 5_000;
/// How far ahead the shared instant may be (`rotate --push-lead-ms` is at most this).
pub const MAX_AHEAD_MS: u128 = 600_000;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("environment variable {0} is not set or not UTF-8 (the Job sets it from the Secret)")]
    NoKey(String),
    #[error("environment variable {var}: {why}; nothing was written")]
    WeakKey { var: String, why: String },
    #[error("--at-unix-ms {at} is {late} ms in the past (more than the {LATE_TOLERANCE_MS} ms tolerated): writing now would leave this node's key changing apart from the others; nothing was written (rerun the rotation)")]
    InstantPast { at: u128, late: u128 },
    #[error("--at-unix-ms {at} is {ahead} ms ahead, more than {MAX_AHEAD_MS} ms: not a shared instant of a running rotation (is it in seconds, or is this node's clock wrong?); nothing was written")]
    InstantTooFar { at: u128, ahead: u128 },
    #[error("nothing was written: this node reached the instant {at} {late} ms too late (more than the {tolerance} ms tolerated; the process was stalled, or this node's clock is ahead){}, and writing now would leave its key changing apart from the others", seen_words(*at, *seen))]
    Late {
        at: u128,
        late: u128,
        tolerance: u128,
        /// When the announcement of the instant reached this node (barrier mode).
        seen: Option<u128>,
    },
    #[error("the rotation gave this push up before announcing an instant (another node's push pod never became ready); nothing was written")]
    Aborted,
    #[error("no write instant was announced on lease {lease} within {secs} s{}; nothing was written", if why.is_empty() { String::new() } else { format!(" (watching it failed: {why})") })]
    NoInstant {
        lease: String,
        secs: u64,
        why: String,
    },
    #[error("cannot reach the API server to watch the rotation lease: {0}; nothing was written")]
    Lease(String),
    #[error("cannot create the readiness file {0}: {1}; nothing was written")]
    Ready(String, String),
    #[error("nothing was written: the IPsec tunnels changed between the read and the write (a tunnel given another key, removed, or added with the old key: another client of OVSDB, or antrea-agent as a node joins or leaves); rerun push-key, or let the agents' restart bring this node over")]
    Changed,
    #[error("{0}")]
    Ovsdb(#[from] crate::ovsdb::Error),
}

/// When the announcement reached the node, relative to the instant (for [`PushError::Late`]).
fn seen_words(at: u128, seen: Option<u128>) -> String {
    match seen {
        None => String::new(),
        Some(s) if s > at => format!(
            "; the announcement reached this node at Unix ms {s}, {} ms after the instant",
            s - at
        ),
        Some(s) => format!(
            "; the announcement reached this node at Unix ms {s}, {} ms before the instant",
            at - s
        ),
    }
}

/// Reads the key from `var`, removes the variable from the environment, and refuses a key that
/// `rotate --psk-file` would refuse ([`crate::secret::check_new_key`]).
pub fn key_from_env(var: &str) -> Result<Psk, PushError> {
    let v = std::env::var(var).map_err(|_| PushError::NoKey(var.to_owned()))?;
    // SAFETY-free in edition 2021; no other thread reads the environment at this point.
    std::env::remove_var(var);
    if v.is_empty() {
        return Err(PushError::NoKey(var.to_owned()));
    }
    let psk = Psk::new(v);
    crate::secret::check_new_key(&psk).map_err(|why| PushError::WeakKey {
        var: var.to_owned(),
        why,
    })?;
    Ok(psk)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Refuses a shared instant more than [`LATE_TOLERANCE_MS`] past or [`MAX_AHEAD_MS`] ahead of
/// `now` (Unix ms). Checked before connecting and again right before the write.
pub fn check_instant(at: u128, now: u128) -> Result<(), PushError> {
    if now > at.saturating_add(LATE_TOLERANCE_MS) {
        return Err(PushError::InstantPast { at, late: now - at });
    }
    if at > now + MAX_AHEAD_MS {
        return Err(PushError::InstantTooFar {
            at,
            ahead: at - now,
        });
    }
    Ok(())
}

/// When to write: at a fixed instant (`--at-unix-ms`, by hand), as soon as possible (neither), or
/// at the instant the rotator announces on its Lease once every node is ready (`--barrier`).
pub enum When {
    Now,
    At(u128),
    Barrier(Barrier),
}

/// Barrier mode (`rotate --strategy push`): the node prepares everything, says it is ready, and
/// waits for the rotator to announce the instant on its Lease.
pub struct Barrier {
    /// The push this node takes part in: only an announcement naming it counts.
    pub id: String,
    /// The rotation Lease (namespace, name) that carries the announcement.
    pub lease: (String, String),
    /// Created (in the pod's emptyDir) once the transaction is prepared: the readinessProbe
    /// tests it (`push-key --probe-ready`).
    pub ready_file: std::path::PathBuf,
    /// How long to wait for the announcement before giving up (nothing written).
    pub wait: Duration,
}

/// The Lease annotation announcing the instant: `<barrier id> <unix ms>`, or `<barrier id> abort`
/// when the rotator gave the push up (a node never became ready): then no node writes.
pub const INSTANT_ANNOTATION: &str = "psk-guard.io/push-at";

/// In barrier mode, how late a node may write after the announced instant. The instant is set
/// only once every node is prepared and waiting, so only a stalled node (CPU starvation, a
/// frozen cgroup, a clock far ahead) is late. A node a little late still writes: the other nodes
/// already hold the new key, and a node that refuses keeps the old one until the agents' restart
/// reaches it, a far longer split than a write a few seconds late (at 200 simulated nodes on 2
/// cores, 11-43 nodes woke more than 1 s late, and refusing left them split for 60-160 s). Past
/// this bound the pod is not merely slow: it refuses, and the restart brings the node over. The
/// bound stays well inside the push Jobs' deadline ([`super::max_push_lead`]), so a late write
/// never outlives the rotation that asked for it.
pub const BARRIER_LATE_TOLERANCE_MS: u128 = 3_000;

/// The permissions of the push pods' service account (`psk-guard-node`): watching the rotation
/// Lease, by name, for the announced instant (a Role in docs/deploy/rbac.yaml).
pub const PERMISSIONS: &[crate::cluster::Permission] = &[
    crate::cluster::Permission::named("list", "coordination.k8s.io", "leases"),
    crate::cluster::Permission::named("watch", "coordination.k8s.io", "leases"),
];

/// `push-key --probe-ready FILE`, the push pod's readinessProbe (an exec probe runs the image's
/// only binary): whether `file` exists as a regular file (a symlink does not count). Prints
/// nothing.
pub fn probe_ready(file: &std::path::Path) -> bool {
    std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_file())
}

/// Writes `psk` into every IPsec tunnel of this node in one transaction, when `when` says. The
/// tunnels are read and the transaction built first; a fixed instant is checked
/// ([`check_instant`]) before connecting and again right before the write. Returns the JSON
/// summary.
pub async fn push(
    sock: &std::path::Path,
    psk: &Psk,
    when: When,
    timeout: Duration,
    fp_key: &FingerprintKey,
) -> Result<serde_json::Value, PushError> {
    if let When::At(at) = when {
        check_instant(at, now_ms())?;
    }
    let client = Client::connect(
        sock,
        Options {
            timeout,
            ..Options::default()
        },
    )
    .await?;
    client.require_db(VSWITCH_DB).await?;
    let (ts, old_keys) = tunnels::read_keeping_keys(&client, fp_key).await?;
    let targets: Vec<&tunnels::Tunnel> = ts
        .iter()
        .filter(|t| t.key.is_some() || !t.remote_name)
        .collect();
    let ops = write_ops(&targets, &old_keys, psk);
    drop(old_keys);
    // Encoded now, so that at the instant only its bytes are copied and sent: with many nodes
    // writing at once, encoding a transaction per tunnel then is time the last nodes wait for.
    let prepared = Prepared::transact_carrying_key(VSWITCH_DB, &ops);
    let (at, seen) = match when {
        When::Now => (None, None),
        When::At(at) => (Some((at, LATE_TOLERANCE_MS)), None),
        When::Barrier(b) => {
            let at = barrier_instant(&b, timeout).await?;
            (Some((at, BARRIER_LATE_TOLERANCE_MS)), Some(now_ms()))
        }
    };
    if let Some((at, tolerance)) = at {
        sleep_until_instant(at, tolerance, seen).await?;
    }
    let written_at = now_ms();
    let results = match client.transact_prepared_ok(&prepared, &ops).await {
        Ok(r) => r,
        // A wait that does not hold at once fails "timed out" (RFC 7047 5.2.6, timeout 0).
        Err(crate::ovsdb::Error::OpFailed {
            op: "wait", error, ..
        }) if error.error == "timed out" => return Err(PushError::Changed),
        Err(e) => return Err(e.into()),
    };
    // The operations and the encoded request held copies of the key.
    drop(prepared);
    drop(ops);
    let mut summary = json!({
        "tunnels_changed": rows_changed(&results),
        "fingerprint": fp_key.fingerprint(psk).to_string(),
        "written_at_unix_ms": written_at,
    });
    if let Some((at, _)) = at {
        summary["instant_unix_ms"] = json!(at);
    }
    if let Some(seen) = seen {
        // When the announcement reached this node: the rotator compares it with when it wrote
        // the announcement (the propagation of the instant, reported as push_propagation_ms).
        summary["instant_seen_unix_ms"] = json!(seen);
    }
    Ok(summary)
}

/// The one transaction: `options:psk` of every target tunnel replaced by `psk`. Tunnels whose
/// key was kept ([`tunnels::KeptKeys`]) and whose type is a tunnel type are changed by one
/// operation per (type, old key): every Interface row of that type carrying that key, which
/// ovsdb-server commits in about half the time of one operation per tunnel (at the instant, time
/// every other node on a shared machine waits for). Each such operation is preceded by a `wait`
/// that those rows are exactly the ones read, so that a change in between (a tunnel given
/// another key, a row given the old key) aborts the whole transaction and nothing is written
/// ([`PushError::Changed`]): the write changes exactly the tunnels read, or none. The others (no
/// key, a key not kept, another type) are changed one by one, by uuid.
fn write_ops(
    targets: &[&tunnels::Tunnel],
    old_keys: &tunnels::KeptKeys,
    psk: &Psk,
) -> Vec<Operation> {
    let new_key = || {
        vec![
            Mutation::new("options", "delete", Value::Set(vec![Atom::string("psk")])),
            Mutation::new(
                "options",
                "insert",
                Value::Map(vec![(
                    Atom::string("psk"),
                    Atom::string(psk.expose_secret()),
                )]),
            ),
        ]
    };
    let mutate = |conditions| Operation::Mutate {
        table: "Interface".into(),
        conditions,
        mutations: new_key(),
    };
    // (type, old key's fingerprint) -> the old key and the uuids read with them.
    let mut by_key: BTreeMap<(&str, Fingerprint), (&str, Vec<&str>)> = BTreeMap::new();
    let mut one_by_one = vec![];
    for t in targets {
        let kept = t
            .key
            .as_ref()
            .and_then(|k| Some((k.fingerprint, old_keys.get(k.fingerprint)?)));
        match kept {
            Some((fp, old)) if tunnels::TUNNEL_TYPES.contains(&t.kind()) => by_key
                .entry((t.kind(), fp))
                .or_insert_with(|| (old, vec![]))
                .1
                .push(t.uuid()),
            _ => one_by_one.push(t.uuid()),
        }
    }
    let (mut ops, mut mutates) = (vec![], vec![]);
    for ((kind, _), (old, uuids)) in &by_key {
        let old = *old;
        let conditions = vec![
            Condition::new("type", "==", Value::Atom(Atom::string(*kind))),
            Condition::new(
                "options",
                "includes",
                Value::Map(vec![(Atom::string("psk"), Atom::string(old))]),
            ),
        ];
        ops.push(Operation::Wait {
            table: "Interface".into(),
            conditions: conditions.clone(),
            columns: vec!["_uuid".into()],
            until_equal: true,
            rows: uuids
                .iter()
                .map(|u| {
                    Row::from([("_uuid".to_owned(), Value::Atom(Atom::Uuid((*u).to_owned())))])
                })
                .collect(),
            timeout_ms: Some(0),
        });
        // Rows already on the new key (a push resumed, a tunnel added with it) need no write,
        // and a mutation of them would count them twice.
        if old != psk.expose_secret() {
            mutates.push(mutate(conditions));
        }
    }
    // Every wait before any mutation: a wait sees the transaction's earlier operations, and a
    // mutation moving rows onto the new key would break the wait of a group already on it.
    ops.extend(mutates);
    ops.extend(
        one_by_one
            .into_iter()
            .map(|u| mutate(vec![Condition::uuid_eq(u)])),
    );
    ops.push(Operation::Comment("psk-guard push-key".into()));
    ops
}

/// How many rows the write's mutations changed.
fn rows_changed(results: &[OpResult]) -> u64 {
    results
        .iter()
        .map(|r| match r {
            OpResult::Count(n) => *n,
            _ => 0,
        })
        .sum()
}

/// Sleeps until `at` (Unix ms), then refuses if the node is more than `tolerance` ms past it
/// (connecting and reading took long, the process was stalled): a late write would widen the
/// window in which nodes hold different keys.
async fn sleep_until_instant(
    at: u128,
    tolerance: u128,
    seen: Option<u128>,
) -> Result<(), PushError> {
    let now = now_ms();
    if at > now {
        // At most MAX_AHEAD_MS (checked), so this fits.
        tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
    }
    let now = now_ms();
    if now > at.saturating_add(tolerance) {
        return Err(PushError::Late {
            at,
            late: now - at,
            tolerance,
            seen,
        });
    }
    Ok(())
}

/// Barrier mode: says this node is ready (the readiness file), then watches the rotation Lease
/// for the instant announced for this push. Fails (nothing written) on an abort, an instant out
/// of bounds, or no announcement within the wait.
async fn barrier_instant(b: &Barrier, timeout: Duration) -> Result<u128, PushError> {
    use crate::cluster::watch::Watched;
    use k8s_openapi::api::coordination::v1::Lease;
    let (ns, name) = &b.lease;
    let client = crate::cluster::watching_client(timeout)
        .await
        .map_err(|e| PushError::Lease(e.to_string()))?;
    let api: kube::Api<Lease> = kube::Api::namespaced(client, ns);
    // A field selector on the name: RBAC authorizes the list and the watch against the Role's
    // resourceNames (apiserver requestinfo.go).
    let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut lease = Watched::new(api, config);
    mark_ready(&b.ready_file)?;
    let deadline = tokio::time::Instant::now() + b.wait;
    loop {
        let announced = lease.get(name).and_then(|l| {
            l.metadata
                .annotations
                .as_ref()?
                .get(INSTANT_ANNOTATION)
                .cloned()
        });
        if let Some(a) = announced {
            match parse_announcement(&a, &b.id) {
                Some(Ok(at)) => {
                    // Too far ahead is refused here; too late by sleep_until_instant.
                    let now = now_ms();
                    if at > now + MAX_AHEAD_MS {
                        return Err(PushError::InstantTooFar {
                            at,
                            ahead: at - now,
                        });
                    }
                    return Ok(at);
                }
                Some(Err(())) => return Err(PushError::Aborted),
                None => {} // an earlier push's announcement
            }
        }
        if !lease.changed(deadline).await {
            return Err(PushError::NoInstant {
                lease: format!("{ns}/{name}"),
                secs: b.wait.as_secs(),
                why: lease.last_error.clone().unwrap_or_default(),
            });
        }
    }
}

/// `<id> <unix ms>` → `Some(Ok(ms))`, `<id> abort` → `Some(Err(()))`, anything else (another
/// push's announcement, garbage) → `None`.
fn parse_announcement(value: &str, id: &str) -> Option<Result<u128, ()>> {
    let (who, what) = value.trim().split_once(' ')?;
    if who != id {
        return None;
    }
    match what {
        "abort" => Some(Err(())),
        ms => ms.parse().ok().map(Ok),
    }
}

/// Creates the readiness file (new, not through a symlink).
fn mark_ready(file: &std::path::Path) -> Result<(), PushError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(file)
        .map(drop)
        .map_err(|e| PushError::Ready(file.display().to_string(), e.kind().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One operation per distinct (type, old key) (a condition on the key, not on each tunnel),
    /// each after a wait that the rows it changes are the ones read, and one by uuid for a tunnel
    /// without a key; the kept keys never show in `Debug`.
    #[test]
    fn the_write_is_one_operation_per_old_key() {
        let reply = br#"[
            {"rows":[
              {"interfaces":["uuid","u1"],"external_ids":["map",[["antrea-type","ipsec-tunnel"]]]},
              {"interfaces":["uuid","u4"],"external_ids":["map",[["antrea-type","ipsec-tunnel"]]]}]},
            {"rows":[
              {"_uuid":["uuid","u1"],"name":"t1","type":"geneve","options":["map",[["psk","old-one"]]]},
              {"_uuid":["uuid","u2"],"name":"t2","type":"geneve","options":["map",[["psk","old-two"]]]},
              {"_uuid":["uuid","u3"],"name":"t3","type":"geneve","options":["map",[["psk","old-one"]]]},
              {"_uuid":["uuid","u4"],"name":"t4","type":"geneve","options":["map",[]]},
              {"_uuid":["uuid","u5"],"name":"t5","type":"gre","options":["map",[["remote_name","n5"]]]}]}]"#;
        let fp = FingerprintKey::given("test");
        let (ts, keys) = tunnels::decode_reply_keeping_keys(reply, &fp).unwrap();
        assert_eq!(format!("{keys:?}"), "KeptKeys(2 keys)");
        let targets: Vec<&tunnels::Tunnel> = ts
            .iter()
            .filter(|t| t.key.is_some() || !t.remote_name)
            .collect();
        assert_eq!(targets.len(), 4);
        let psk = Psk::new("new-key".into());
        let ops: Vec<serde_json::Value> = write_ops(&targets, &keys, &psk)
            .iter()
            .map(Operation::to_json)
            .collect();
        assert_eq!(ops.len(), 6, "{ops:?}");
        // Per (type, old key): a wait that the rows of that type carrying the key are exactly
        // the ones read; every wait first, then the mutations of those rows.
        let mut by_key: Vec<(String, String, serde_json::Value)> = (0..2)
            .map(|i| {
                let (wait, mutate) = (&ops[i], &ops[i + 2]);
                assert_eq!(wait["op"], "wait");
                assert_eq!(wait["until"], "==");
                assert_eq!(wait["timeout"], 0);
                assert_eq!(wait["columns"], json!(["_uuid"]));
                assert_eq!(mutate["op"], "mutate");
                assert_eq!(wait["where"], mutate["where"]);
                assert_eq!(mutate["where"][0], json!(["type", "==", "geneve"]));
                (
                    mutate["where"][1].to_string(),
                    mutate["mutations"][1][2].to_string(),
                    wait["rows"].clone(),
                )
            })
            .collect();
        by_key.sort_by(|a, b| a.0.cmp(&b.0));
        let new = json!(["map", [["psk", "new-key"]]]).to_string();
        assert_eq!(
            by_key,
            [
                (
                    r#"["options","includes",["map",[["psk","old-one"]]]]"#.to_owned(),
                    new.clone(),
                    json!([{"_uuid": ["uuid", "u1"]}, {"_uuid": ["uuid", "u3"]}])
                ),
                (
                    r#"["options","includes",["map",[["psk","old-two"]]]]"#.to_owned(),
                    new.clone(),
                    json!([{"_uuid": ["uuid", "u2"]}])
                ),
            ]
        );
        assert_eq!(ops[4]["where"][0], json!(["_uuid", "==", ["uuid", "u4"]]));
        assert_eq!(
            ops[4]["mutations"][1][2],
            json!(["map", [["psk", "new-key"]]])
        );
        assert_eq!(ops[5]["op"], "comment");
    }

    /// Only the tunnels' keys are kept: a row that is no tunnel (here an internal interface with
    /// a psk option) keeps nothing, so it can neither grow the set nor be written.
    #[test]
    fn only_tunnel_keys_are_kept() {
        let reply = br#"[
            {"rows":[{"interfaces":["uuid","u1"],"external_ids":["map",[["antrea-type","ipsec-tunnel"]]]}]},
            {"rows":[
              {"_uuid":["uuid","u1"],"name":"t1","type":"geneve","options":["map",[["psk","old-one"]]]},
              {"_uuid":["uuid","x1"],"name":"x1","type":"internal","options":["map",[["psk","other-1"]]]},
              {"_uuid":["uuid","x2"],"name":"x2","type":"","options":["map",[["psk","other-2"]]]}]}]"#;
        let fp = FingerprintKey::given("test");
        let (ts, keys) = tunnels::decode_reply_keeping_keys(reply, &fp).unwrap();
        assert_eq!(ts.len(), 1);
        assert_eq!(format!("{keys:?}"), "KeptKeys(1 keys)");
    }

    #[test]
    fn instant_bounds() {
        let now = 1_800_000_000_000;
        assert!(check_instant(now, now).is_ok());
        assert!(check_instant(now - LATE_TOLERANCE_MS, now).is_ok());
        assert!(check_instant(now + MAX_AHEAD_MS, now).is_ok());
        assert!(matches!(
            check_instant(now - LATE_TOLERANCE_MS - 1, now),
            Err(PushError::InstantPast { .. })
        ));
        assert!(matches!(
            check_instant(now + MAX_AHEAD_MS + 1, now),
            Err(PushError::InstantTooFar { .. })
        ));
        assert!(matches!(
            check_instant(u128::MAX, now),
            Err(PushError::InstantTooFar { .. })
        ));
    }
}
