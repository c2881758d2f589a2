//! The integration suite: one binary, real ovsdb-server processes (see `harness`).

mod audit;
mod bounds;
mod check;
mod faults;
mod forensics;
mod formats;
mod fuzz;
mod guides;
mod harness;
mod hostile;
mod kube_api;
mod kube_discovery;
mod leaks;
mod manifests;
mod memory;
mod node_attacker;
mod output;
mod ovsdb_client;
mod rotate;
mod shells;
mod sim;
mod strict;
mod tty;
