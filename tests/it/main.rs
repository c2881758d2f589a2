//! The integration suite: one binary, real ovsdb-server processes (see `harness`).

mod check;
mod forensics;
mod harness;
mod output;
mod ovsdb_client;
