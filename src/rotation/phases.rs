//! The phases of a rotation, one function each, sharing one [`Run`]. The machine itself is the
//! loop in [`super::rotate_locked`]: it matches on the recorded phase and calls the function that
//! moves the rotation out of it. Every phase either records the next phase on the Secret (so a
//! crash resumes after it) or stops the run with an exit status and findings.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::node;
use super::record::{Phase, Record};
use super::{
    advance, failure_words, finish, generate_key, node_job, pause_after, record_phase, rollout,
    verdict, write_key, Ctx, Rotated, Strategy, NODE_ARGS,
};
use crate::cluster::jobs::{self, Outcome};
use crate::cluster::ClusterError;
use crate::report::{Code, Finding, Report, Severity, Subject};
use crate::secret::{FingerprintKey, Psk};

/// What a phase function tells the machine: go on with the (newly recorded) phase, or stop here
/// with this exit status.
pub(super) enum Step {
    Next,
    Stop(u8),
}

/// The context every phase shares: the run's configuration and client, the rotation record and
/// the precondition for its next write, the target nodes, and the report being built.
pub(super) struct Run<'a> {
    pub ctx: &'a Ctx<'a>,
    pub rec: Record,
    /// The resourceVersion of our last write to the Secret: the precondition of the next one.
    pub rv: String,
    pub fp_key: FingerprintKey,
    pub strategy: Strategy,
    pub ds: DaemonSet,
    pub nodes: Vec<String>,
    /// Per-node results for the report, by node name.
    pub node_rows: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    pub report: Report,
    pub timings: serde_json::Map<String, serde_json::Value>,
    pub started: Instant,
}

impl Run<'_> {
    /// Records `phase` (and its Event): see [`advance`].
    async fn advance(
        &mut self,
        phase: Phase,
        event: Option<(&str, String)>,
    ) -> Result<Step, ClusterError> {
        advance(
            self.ctx,
            &mut self.rec,
            &mut self.rv,
            &self.fp_key,
            phase,
            event,
        )
        .await?;
        Ok(Step::Next)
    }

    fn row(&mut self, node: &str) -> &mut serde_json::Map<String, serde_json::Value> {
        self.node_rows.entry(node.to_owned()).or_default()
    }

    /// The rotation's result so far, with exit status `code`.
    pub fn finish(self, code: u8) -> Rotated {
        finish(
            self.report,
            &self.rec,
            self.node_rows,
            self.timings,
            self.started,
            code,
        )
    }
}

/// The first step: resume the unfinished rotation recorded on the Secret (if its key is the one
/// that rotation wrote), or write a new key with a new record (phase `secret-written`).
/// Returns the record, the resourceVersion of the Secret as read or written, and the
/// fingerprint key of the rotation.
pub(super) async fn start(
    ctx: &Ctx<'_>,
    secret: &Secret,
    current: Psk,
    new_key: Option<Psk>,
) -> Result<(Record, String, FingerprintKey), ClusterError> {
    let existing =
        Record::read(secret.metadata.annotations.as_ref()).filter(|r| r.phase != Phase::Done);
    let rv = secret.metadata.resource_version.clone().unwrap_or_default();
    match existing {
        Some(rec) => resume(ctx, rec, &current).await.map(|(r, k)| (r, rv, k)),
        None => write_new_key(ctx, &current, new_key).await,
    }
}

async fn resume(
    ctx: &Ctx<'_>,
    rec: Record,
    current: &Psk,
) -> Result<(Record, FingerprintKey), ClusterError> {
    let cfg = ctx.cfg;
    let fp_key = FingerprintKey::given(&rec.salt);
    if fp_key.fingerprint(current) != rec.new_fingerprint {
        return Err(ClusterError::Precondition(format!(
            "{} records an unfinished rotation {} (phase {}), but its key is not the one that rotation wrote: someone edited it. Check the Secret, then remove the record (kubectl -n {} annotate secret {} psk-guard.io/phase-) to start a new rotation",
            ctx.what(), rec.id, rec.phase.as_str(), cfg.namespace, cfg.secret
        )));
    }
    ctx.progress(&format!(
        "resuming rotation {} from phase {}",
        rec.id,
        rec.phase.as_str()
    ));
    let msg = format!(
        "psk-guard resumes rotation {} at phase {}",
        rec.id,
        rec.phase.as_str()
    );
    ctx.event("RotationResumed", &msg, false).await;
    Ok((rec, fp_key))
}

async fn write_new_key(
    ctx: &Ctx<'_>,
    current: &Psk,
    new_key: Option<Psk>,
) -> Result<(Record, String, FingerprintKey), ClusterError> {
    let new = match new_key {
        Some(k) => k,
        None => generate_key()?,
    };
    let rec = Record::new(ctx.cfg.strategy, current, &new);
    let fp_key = FingerprintKey::given(&rec.salt);
    if rec.old_fingerprint == rec.new_fingerprint {
        return Err(ClusterError::Precondition(
            "the new key equals the current one: nothing to rotate".into(),
        ));
    }
    let written = write_key(ctx, &rec, &new, &fp_key).await?;
    drop(new);
    let rv = written.metadata.resource_version.unwrap_or_default();
    ctx.progress(&format!(
        "rotation {}: new key {} stored in {} (old key {})",
        rec.id,
        rec.new_fingerprint,
        ctx.what(),
        rec.old_fingerprint
    ));
    let msg = format!(
        "psk-guard rotation {} ({}): new key {} replaces {}",
        rec.id, rec.strategy, rec.new_fingerprint, rec.old_fingerprint
    );
    ctx.event("RotationStarted", &msg, false).await;
    pause_after(Phase::SecretWritten);
    Ok((rec, rv, fp_key))
}

/// `secret-written` → `rolled-out`: the new key reaches every node, by the rotation's strategy.
pub(super) async fn roll_out(run: &mut Run<'_>) -> Result<Step, ClusterError> {
    let t = Instant::now();
    if run.strategy == Strategy::Push {
        push(run).await?;
    }
    restart_agents(run).await?;
    run.timings
        .insert("rollout_ms".into(), json!(t.elapsed().as_millis() as u64));
    let msg = format!(
        "rotation {}: every antrea-agent restarted with the new key",
        run.rec.id
    );
    run.advance(Phase::RolledOut, Some(("RolledOut", msg)))
        .await
}

/// `push`: every node's OVSDB gets the new key at one shared instant, behind a barrier. Each
/// node's push pod reads its tunnels, prepares the transaction and only then turns Ready (its
/// readinessProbe); once EVERY pod is Ready, the instant (now + `--push-lead-ms`) is announced
/// on the rotation Lease, which the pods watch; each writes at the instant, or refuses when it
/// would write more than [`node::BARRIER_LATE_TOLERANCE_MS`] late. However slowly pods start,
/// the window is the lead's spread, not the pods' start times. A pod that never gets Ready calls
/// the push off before any node wrote ([`call_off`]).
async fn push(run: &mut Run<'_>) -> Result<(), ClusterError> {
    let ctx = run.ctx;
    let barrier = hex::encode(rand::random::<[u8; 4]>());
    let job = push_job(ctx, &run.rec.id, &barrier);
    ctx.progress(&format!(
        "pushing the new key to {} node(s): waiting until every push pod is ready",
        run.nodes.len()
    ));
    let t = Instant::now();
    let created = jobs::create_on_nodes(&ctx.client, &job, &run.nodes).await;
    let deadline = tokio::time::Instant::now() + ready_timeout(ctx);
    if let Err(not_ready) = jobs::wait_ready(&ctx.client, &job, &created, deadline).await {
        return Err(call_off(run, &job, created, &barrier, not_ready).await);
    }
    run.timings.insert(
        "push_ready_ms".into(),
        json!(t.elapsed().as_millis() as u64),
    );
    // The instant is fixed right before the Lease update is sent (after its read): the lead
    // runs from there. Only the last update sent can have been stored without an answer.
    let lead = ctx.cfg.push_lead.as_millis() as u64;
    let mut at_ms = 0;
    let t_announce = Instant::now();
    let announced = match ctx.held.check() {
        Ok(()) => {
            announce_instant(ctx, &mut || {
                at_ms = unix_ms_now() + lead;
                format!("{barrier} {at_ms}")
            })
            .await
        }
        Err(e) => Err(e),
    };
    let instant = format!("{barrier} {at_ms}");
    run.timings.insert(
        "push_announce_ms".into(),
        json!(t_announce.elapsed().as_millis() as u64),
    );
    if let Err(e) = announced {
        // The update may have been stored although its answer was lost (a timeout, a dropped
        // connection): then pods already saw the instant and write at it, and calling the push
        // off now would split the nodes. Call it off only if the Lease does not hold the instant.
        if !call_off_unless_announced(ctx, &barrier, &instant).await {
            jobs::abandon(&ctx.client, &job, created).await;
            return Err(e);
        }
        ctx.progress(&format!(
            "announcing the push instant failed ({e}), but the rotation lease holds it: the nodes write at it; going on"
        ));
    }
    let announced_ms = unix_ms_now();
    ctx.progress(&format!(
        "every push pod is ready: the nodes write at Unix ms {at_ms} (in {} ms; announcing it took {} ms)",
        at_ms.saturating_sub(announced_ms),
        t_announce.elapsed().as_millis()
    ));
    run.timings
        .insert("push_instant_unix_ms".into(), json!(at_ms));
    run.timings
        .insert("push_announced_unix_ms".into(), json!(announced_ms));
    let results = jobs::wait_on_nodes(&ctx.client, &job, created).await;
    record_push(run, &results, at_ms, announced_ms).await
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long the push pods have to get Ready: half the Job timeout, so that pods still have time
/// to write before their Jobs' `activeDeadlineSeconds` (the whole Job timeout) ends them.
fn ready_timeout(ctx: &super::Ctx<'_>) -> std::time::Duration {
    ready_timeout_of(ctx.cfg.job_timeout)
}

/// [`ready_timeout`] for a Job timeout.
pub(super) fn ready_timeout_of(job_timeout: std::time::Duration) -> std::time::Duration {
    job_timeout / 2
}

/// The push Job: `push-key` in barrier mode for push `barrier`, watching the rotation Lease.
pub(super) fn push_job(ctx: &super::Ctx<'_>, id: &str, barrier: &str) -> jobs::NodeJob {
    let cfg = ctx.cfg;
    let mut args = vec![
        "push-key".to_owned(),
        "--from-env".into(),
        "ANTREA_IPSEC_PSK".into(),
        "--barrier".into(),
        barrier.to_owned(),
        "--lease".into(),
        format!("{}/{}", cfg.namespace, cfg.lease),
        "--ready-file".into(),
        jobs::READY_FILE.into(),
        "--barrier-wait".into(),
        cfg.job_timeout.as_secs().max(1).to_string(),
    ];
    args.extend(NODE_ARGS.map(String::from));
    jobs::NodeJob {
        barrier: true,
        ..node_job(ctx, "push", id, args, true)
    }
}

/// Announces the instant made by `value` (`<barrier> <unix ms>`) on the rotation Lease.
async fn announce_instant(
    ctx: &super::Ctx<'_>,
    value: &mut dyn FnMut() -> String,
) -> Result<(), ClusterError> {
    crate::cluster::lease::annotate_unless(
        &ctx.client,
        &ctx.cfg.namespace,
        &ctx.cfg.lease,
        &ctx.holder,
        (node::INSTANT_ANNOTATION, value),
        None,
    )
    .await
    .map(drop)
}

/// Announces `value` (`<barrier> <unix ms>` or `<barrier> abort`) on the rotation Lease.
async fn announce(ctx: &super::Ctx<'_>, value: &str) -> Result<(), ClusterError> {
    crate::cluster::lease::annotate(
        &ctx.client,
        &ctx.cfg.namespace,
        &ctx.cfg.lease,
        &ctx.holder,
        node::INSTANT_ANNOTATION,
        value,
    )
    .await
}

/// After an announcement of `instant` that failed: writes `<barrier> abort` unless the Lease
/// holds `instant` (stored although the answer was lost), never over it
/// ([`crate::cluster::lease::annotate_unless`]). Whether the push must go on: true when the
/// instant is stored, or when the Lease cannot be read to tell (the pods may have seen it; the
/// push's results then say which nodes wrote, and a push no node wrote stops, resumable); false
/// when the push was called off or the instant is surely not stored.
async fn call_off_unless_announced(ctx: &super::Ctx<'_>, barrier: &str, instant: &str) -> bool {
    use crate::cluster::lease::{annotate_unless, Annotated};
    let abort = format!("{barrier} abort");
    let cfg = ctx.cfg;
    match annotate_unless(
        &ctx.client,
        &cfg.namespace,
        &cfg.lease,
        &ctx.holder,
        (node::INSTANT_ANNOTATION, &mut || abort.clone()),
        Some(instant),
    )
    .await
    {
        Ok(Annotated::Kept) => true,
        Ok(Annotated::Written) => false,
        // Someone else holds the Lease, and it does not hold the instant: a late write of it
        // would carry an older resourceVersion and be refused (409).
        Err(ClusterError::LeaseLost(_)) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the rotation lease to tell whether the push instant was stored; waiting for the push pods' results");
            true
        }
    }
}

/// Announces `<barrier> abort` (the waiting pods exit without writing) and deletes the push Jobs.
async fn give_up(ctx: &super::Ctx<'_>, job: &jobs::NodeJob, created: jobs::Created, barrier: &str) {
    if let Err(e) = announce(ctx, &format!("{barrier} abort")).await {
        tracing::warn!(error = %e, "could not call the push off on the lease; its pods give up at their own deadline");
    }
    jobs::abandon(&ctx.client, job, created).await;
}

/// Some push pod never got Ready: no instant was announced, so no node wrote. Tells the waiting
/// pods the push is off (they exit without writing), deletes the Jobs, and stops the rotation at
/// `secret-written` naming the nodes: every node keeps the old key, the Secret holds the new
/// one, and a rerun resumes with a new push.
async fn call_off(
    run: &mut Run<'_>,
    job: &jobs::NodeJob,
    created: jobs::Created,
    barrier: &str,
    not_ready: Vec<(String, String)>,
) -> ClusterError {
    let ctx = run.ctx;
    give_up(ctx, job, created, barrier).await;
    let named: Vec<String> = not_ready
        .iter()
        .map(|(n, why)| format!("{n} ({why})"))
        .collect();
    let msg = format!(
        "push called off before any node wrote: the push pod of {} was not ready. Every node keeps the old key; {} already holds the new one (rotation {}, phase secret-written). Fix those nodes or leave them out (--exclude-node), then rerun psk-guard rotate: it resumes and pushes again",
        named.join(", "),
        ctx.what(),
        run.rec.id
    );
    ctx.event("PushNotReady", &msg, true).await;
    ClusterError::Precondition(msg)
}

/// The push's results: per node whether it wrote and when, the measured window, and what the
/// failures mean (none wrote: stop, resumable; some wrote: the agents' restart converges the rest).
async fn record_push(
    run: &mut Run<'_>,
    results: &[(String, Outcome)],
    at_ms: u64,
    announced_ms: u64,
) -> Result<(), ClusterError> {
    let ctx = run.ctx;
    let mut failed = vec![];
    let mut written = vec![];
    let mut seen = vec![];
    for (n, o) in results {
        let ok = matches!(o, Outcome::Succeeded(_));
        run.row(n).insert("pushed".into(), json!(ok));
        if !ok {
            let why = failure_words(o);
            run.row(n).insert("detail".into(), json!(why));
            failed.push(format!("{n} ({why})"));
        }
        if let Some(t) = o
            .result()
            .ok()
            .and_then(|r| r["written_at_unix_ms"].as_u64())
        {
            run.row(n).insert("pushed_at_unix_ms".into(), json!(t));
            written.push(t);
        }
        if let Some(t) = o
            .result()
            .ok()
            .and_then(|r| r["instant_seen_unix_ms"].as_u64())
        {
            seen.push(t);
        }
    }
    // How long the announcement took to reach the last node that wrote (its watch of the
    // Lease): what the lead must cover.
    if let Some(last) = seen.iter().max() {
        run.timings.insert(
            "push_propagation_ms".into(),
            json!(last.saturating_sub(announced_ms)),
        );
    }
    // The measured mixed-key window of the push (by the nodes' clocks, NTP-synced on a real
    // cluster): first node's write to the last, and how late the last was after the instant.
    if let (Some(first), Some(last)) = (written.iter().min(), written.iter().max()) {
        run.timings
            .insert("push_window_ms".into(), json!(last - first));
        run.timings
            .insert("push_late_ms".into(), json!(last.saturating_sub(at_ms)));
    }
    if failed.is_empty() {
        return Ok(());
    }
    if written.is_empty()
        && !results
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Succeeded(_)))
    {
        // No node wrote: every node still holds the old key, none is split from another. Stop
        // here; the rerun resumes at this phase and pushes again.
        let msg = format!(
            "pushing the key failed on {} and no node wrote it: rerun psk-guard rotate to retry (the rotation resumes)",
            failed.join(", ")
        );
        ctx.event("PushFailed", &msg, true).await;
        return Err(ClusterError::Precondition(msg));
    }
    // Some nodes hold the new key and these do not: never leave them split. The restart of every
    // agent that follows makes each read the new key from the Secret (the restart strategy),
    // which brings the nodes the push missed to it; verification then checks every node.
    let msg = format!(
        "pushing the key failed on {} while other nodes wrote it: restarting every antrea-agent brings those nodes to the new key",
        failed.join(", ")
    );
    ctx.progress(&msg);
    ctx.event("PushIncomplete", &msg, true).await;
    run.timings
        .insert("push_failed_nodes".into(), json!(failed.len()));
    Ok(())
}

/// Both strategies end by restarting the agents, so each reads the new key from the Secret.
async fn restart_agents(run: &mut Run<'_>) -> Result<(), ClusterError> {
    let ctx = run.ctx;
    rollout::restart(
        &ctx.client,
        &ctx.cfg.namespace,
        &run.ds,
        &run.rec.id,
        &run.nodes,
        rollout::Pace {
            progress_deadline: ctx.cfg.progress_deadline,
            tty: ctx.interactive,
            held: &ctx.held,
        },
    )
    .await
}

/// The arguments of a verify Job of rotation `rec`.
pub(super) fn verify_args(rec: &Record) -> Vec<String> {
    let mut args = vec![
        "check".to_owned(),
        "-o".into(),
        "json".into(),
        "--no-history".into(),
        // Verification asks only whether the tunnels carry the new key.
        "--no-logs".into(),
        "--no-proc".into(),
        "--fail-on".into(),
        "never".into(),
        "--fingerprint-salt".into(),
        rec.salt.clone(),
        "--expect-fingerprint".into(),
        rec.new_fingerprint.to_string(),
    ];
    args.extend(NODE_ARGS.map(String::from));
    args
}

/// `rolled-out` → `verified`: a check Job on every node confirms each tunnel carries the new
/// key. Nodes that do not are recorded as unconverged and the run stops with findings.
pub(super) async fn verify(run: &mut Run<'_>) -> Result<Step, ClusterError> {
    let ctx = run.ctx;
    let job = node_job(ctx, "verify", &run.rec.id, verify_args(&run.rec), false);
    let results = jobs::run_on_nodes(&ctx.client, &job, &run.nodes).await;
    let mut unconverged = vec![];
    for (node, o) in &results {
        let (ok, why) = verdict(o);
        let row = run.row(node);
        row.insert("converged".into(), json!(ok));
        if ok {
            continue;
        }
        row.insert("detail".into(), json!(why));
        unconverged.push(node.clone());
        run.report.push(
            Finding::new(Code::PskUnexpectedFingerprint, Severity::High, Subject::named("node", node.clone()))
                .observed(why)
                .expected(format!("every tunnel carries key {}", run.rec.new_fingerprint))
                .remediation("check the node's antrea-agent pod, then rerun psk-guard rotate: it resumes this rotation"),
        );
    }
    if !unconverged.is_empty() {
        run.rec.unconverged = unconverged.clone();
        record_phase(ctx, &run.rec, &mut run.rv, &run.fp_key).await?;
        let msg = format!(
            "rotation {}: not converged on {}",
            run.rec.id,
            unconverged.join(", ")
        );
        ctx.event("VerifyFailed", &msg, true).await;
        return Ok(Step::Stop(crate::report::EXIT_FINDINGS));
    }
    run.rec.unconverged.clear();
    let msg = format!(
        "rotation {}: every node's tunnels carry the new key",
        run.rec.id
    );
    run.advance(Phase::Verified, Some(("Verified", msg))).await
}

/// The arguments of a compact Job.
pub(super) fn compact_args() -> Vec<String> {
    let mut args = vec![
        "fix".to_owned(),
        "--only-compact".into(),
        "-o".into(),
        "json".into(),
    ];
    args.extend(NODE_ARGS.map(String::from));
    args
}

/// `verified` → `compacted`: with `--compact`, a Job on every node purges the old keys from
/// conf.db's history. A node where that fails is a finding, and the run stops.
pub(super) async fn compact(run: &mut Run<'_>) -> Result<Step, ClusterError> {
    let ctx = run.ctx;
    if !ctx.cfg.compact {
        return run.advance(Phase::Compacted, None).await;
    }
    let job = node_job(ctx, "compact", &run.rec.id, compact_args(), false);
    let results = jobs::run_on_nodes(&ctx.client, &job, &run.nodes).await;
    let mut failed = vec![];
    for (n, o) in &results {
        let ok = matches!(o, Outcome::Succeeded(_));
        run.row(n).insert("compacted".into(), json!(ok));
        if !ok {
            failed.push(n.clone());
            run.row(n).insert("detail".into(), json!(failure_words(o)));
        }
        // Compacted, but conf.db came back with a looser mode the read-only mount cannot undo.
        let mode_left: Vec<String> = o
            .result()
            .ok()
            .and_then(|r| r["incomplete"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|i| i["check"] == crate::fix::MODE_AFTER_COMPACTION)
            .filter_map(|i| i["reason"].as_str().map(str::to_owned))
            .collect();
        if ok && !mode_left.is_empty() {
            run.report.push(
                Finding::new(
                    Code::ConfDbModeTooOpen,
                    Severity::Medium,
                    Subject::named("node", n.clone()),
                )
                .observed(mode_left.join("; "))
                .expected("conf.db keeps the mode it had before compaction")
                .remediation("run psk-guard fix on the node to tighten conf.db again"),
            );
        }
    }
    if failed.is_empty() {
        return run.advance(Phase::Compacted, None).await;
    }
    for n in &failed {
        let why = results
            .iter()
            .find(|(x, _)| x == n)
            .map(|(_, o)| failure_words(o))
            .unwrap_or_default();
        run.report.push(
            Finding::new(Code::PskHistoryOnDisk, Severity::High, Subject::named("node", n.clone()))
                .observed(format!("compaction of conf.db failed or was not verified ({why})"))
                .expected("no old key left in conf.db")
                .remediation("run psk-guard fix on the node, or rerun psk-guard rotate (it resumes at compaction)"),
        );
    }
    let msg = format!(
        "rotation {}: old keys may remain on {}",
        run.rec.id,
        failed.join(", ")
    );
    ctx.event("CompactFailed", &msg, true).await;
    Ok(Step::Stop(crate::report::EXIT_FINDINGS))
}

/// `compacted` → `done`.
pub(super) async fn done(run: &mut Run<'_>) -> Result<Step, ClusterError> {
    let msg = format!(
        "rotation {} done: every node uses key {}",
        run.rec.id, run.rec.new_fingerprint
    );
    run.advance(Phase::Done, Some(("RotationDone", msg))).await
}
