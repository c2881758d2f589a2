//! psk-guard: find and fix exposed, weak and stale IPsec pre-shared keys on Antrea nodes.
//!
//! # Layout
//!
//! - [`secret`]: the only place a key lives ([`secret::Psk`], wiped on drop, never printed) and
//!   the keyed fingerprints every output uses instead.
//! - [`ovsdb`]: our OVSDB JSON-RPC client (framing, protocol types, connection, unixctl).
//! - [`checks`]: `psk-guard check`, the node checks: tunnel keys in OVSDB, file modes and owners,
//!   IPsec downgrades, network remotes, certificate keys, keys in log files.
//! - [`keysearch`]: finding a key in bytes (log files) without holding a copy of it.
//! - [`forensics`]: the conf.db log reader and the history of keys still on disk (`scan-db`).
//! - [`fix`]: `psk-guard fix`: compaction and mode tightening, planned, applied, verified.
//! - [`audit`]: `psk-guard audit`: the cluster-level recommendations, and the fan-out to nodes.
//! - [`cluster`]: the Kubernetes client, permission preflight, Lease, Events, per-node Jobs.
//! - [`rotation`]: `psk-guard rotate`: the phases, the record on the Secret, rollout, `push-key`.
//! - [`report`]: one findings model printed as text, JSON or SARIF; exit codes.
//! - [`nodefs`]: the one way node paths are opened, read and changed: no symlink followed by
//!   name, the directory chain checked, every action through the opened descriptor.
//! - [`hardening`]: no core dumps, memory locked where permitted, the test pause point.
//! - [`cli`]: flags to configuration, and the entry point.

pub mod audit;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod fix;
pub mod forensics;
pub mod hardening;
pub mod hostroot;
pub mod keysearch;
pub mod nodefs;
pub mod ovsdb;
pub mod report;
pub mod rotation;
pub mod secret;
