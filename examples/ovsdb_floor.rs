//! The floor of `benches/node-check`: sends psk-guard's own `transact` (the same two selects, the
//! same columns) over the unix socket, reads the reply until it is whole, and exits. Nothing is
//! decoded or printed. Usage: ovsdb_floor SOCKET
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use psk_guard::ovsdb::frame::Scanner;
use psk_guard::ovsdb::VSWITCH_DB;

fn main() {
    let sock = std::env::args().nth(1).expect("usage: ovsdb_floor SOCKET");
    let mut params = vec![serde_json::json!(VSWITCH_DB)];
    params.extend(
        psk_guard::checks::tunnels::read_ops()
            .iter()
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
