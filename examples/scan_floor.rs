//! The floor of `benches/scan-db`: reads a conf.db, frames its records and verifies every SHA-1
//! on a second thread (scan-db's own pipeline), without looking inside any record.
//! Usage: scan_floor FILE
fn main() {
    let path = std::env::args().nth(1).expect("usage: scan_floor FILE");
    let f = std::fs::File::open(&path).expect("open");
    let size = f.metadata().ok().map(|m| m.len());
    let n = psk_guard::forensics::verify_records(f, size, 64 << 20).expect("read");
    println!("{n} records");
}
