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

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("environment variable {0} is not set or not UTF-8 (the Job sets it from the Secret)")]
    NoKey(String),
    #[error("{0}")]
    Ovsdb(#[from] crate::ovsdb::Error),
}

/// Reads the key from `var` and removes the variable from the environment.
pub fn key_from_env(var: &str) -> Result<Psk, PushError> {
    let v = std::env::var(var).map_err(|_| PushError::NoKey(var.to_owned()))?;
    // SAFETY-free in edition 2021; no other thread reads the environment at this point.
    std::env::remove_var(var);
    if v.is_empty() {
        return Err(PushError::NoKey(var.to_owned()));
    }
    Ok(Psk::new(v))
}

/// Writes `psk` into every IPsec tunnel at `at_ms` (Unix ms; now if past). Returns the JSON summary.
pub async fn push(
    sock: &std::path::Path,
    psk: &Psk,
    at_ms: Option<u128>,
    timeout: Duration,
    fp_key: &FingerprintKey,
) -> Result<serde_json::Value, PushError> {
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        if at > now {
            tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
        }
    }
    let written_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    client.transact_ok(VSWITCH_DB, &ops).await?;
    // The operations held copies of the key.
    drop(ops);
    Ok(json!({
        "tunnels_changed": targets.len(),
        "fingerprint": fp_key.fingerprint(psk).to_string(),
        "written_at_unix_ms": written_at,
    }))
}
