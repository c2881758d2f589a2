//! The floor of `benches/node-check`: sends psk-guard's own `transact` (the same two selects, the
//! same columns) over the unix socket, reads the reply until it is whole, and exits. Nothing is
//! decoded or printed. Usage: ovsdb_floor SOCKET [--interface-only]
//!
//! With `--interface-only`, only the transact's Interface select is sent (not the Port select
//! that tells which interfaces Antrea marked as IPsec tunnels): the server's share of what
//! ovs-vsctl asks for, to show what the Port select costs.
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use psk_guard::ovsdb::frame::Scanner;
use psk_guard::ovsdb::VSWITCH_DB;

fn main() {
    let sock = std::env::args()
        .nth(1)
        .expect("usage: ovsdb_floor SOCKET [--interface-only]");
    let interface_only = std::env::args().nth(2).as_deref() == Some("--interface-only");
    let ops = psk_guard::checks::tunnels::read_ops();
    let mut params = vec![serde_json::json!(VSWITCH_DB)];
    params.extend(
        ops.iter()
            .skip(usize::from(interface_only))
            .map(|o| o.to_json()),
    );
    let req = serde_json::json!({"method": "transact", "params": params, "id": 1}).to_string();
    let mut s = UnixStream::connect(sock).expect("connect");
    s.write_all(req.as_bytes()).expect("write");
    let (mut buf, mut scanner) = (Vec::with_capacity(1 << 16), Scanner::default());
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed before the reply was whole");
        buf.extend_from_slice(&chunk[..n]);
        if scanner.scan(&buf, 0).expect("framing").is_some() {
            break;
        }
    }
}
