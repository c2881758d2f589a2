//! `psk-guard push-key`, the node half of the `push` strategy: read the new key from an
//! environment variable (set from the Secret by the Job), wait for the shared instant, then write
//! it into `options:psk` of every IPsec tunnel of this node in ONE transaction, so the node is
//! never half-changed (OVSDB transactions are all-or-nothing). ovs-monitor-ipsec picks the change
//! up and reloads strongSwan without restarts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::checks::tunnels;
use crate::ovsdb::{
    client::Options, Atom, Client, Condition, Mutation, Operation, Value, VSWITCH_DB,
};
use crate::secret::{FingerprintKey, Psk};

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
    #[error("{0}")]
    Ovsdb(#[from] crate::ovsdb::Error),
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

/// Writes `psk` into every IPsec tunnel at `at_ms` (Unix ms), refusing an instant outside
/// [`check_instant`]'s bounds, before connecting and again before writing. Returns the JSON summary.
pub async fn push(
    sock: &std::path::Path,
    psk: &Psk,
    at_ms: Option<u128>,
    timeout: Duration,
    fp_key: &FingerprintKey,
) -> Result<serde_json::Value, PushError> {
    if let Some(at) = at_ms {
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
    let ts = tunnels::read(&client, fp_key).await?;
    let targets: Vec<&tunnels::Tunnel> = ts
        .iter()
        .filter(|t| t.key.is_some() || !t.remote_name)
        .collect();
    let mut ops: Vec<Operation> = targets
        .iter()
        .map(|t| Operation::Mutate {
            table: "Interface".into(),
            conditions: vec![Condition::uuid_eq(&t.uuid)],
            mutations: vec![
                Mutation::new("options", "delete", Value::Set(vec![Atom::string("psk")])),
                Mutation::new(
                    "options",
                    "insert",
                    Value::Map(vec![(
                        Atom::string("psk"),
                        Atom::string(psk.expose_secret()),
                    )]),
                ),
            ],
        })
        .collect();
    ops.push(Operation::Comment("psk-guard push-key".into()));
    if let Some(at) = at_ms {
        let now = now_ms();
        if at > now {
            // At most MAX_AHEAD_MS (checked above), so this fits.
            tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
        }
        // Connecting and reading may have taken long: a late write would widen the window.
        check_instant(at, now_ms())?;
    }
    let written_at = now_ms();
    client.transact_ok(VSWITCH_DB, &ops).await?;
    // The operations held copies of the key.
    drop(ops);
    Ok(json!({
        "tunnels_changed": targets.len(),
        "fingerprint": fp_key.fingerprint(psk).to_string(),
        "written_at_unix_ms": written_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
