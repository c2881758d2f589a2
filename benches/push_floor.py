"""The floor of `benches/rotation`'s push window on this machine (issue 10).

For each NODES: NODES ovsdb-servers, each seeded like a simulated node (NODES - 1 IPsec tunnel
interfaces on ports of br-int), then one key write per server, what `push-key` sends (a wait that
the geneve rows carrying the old key are exactly the uuids read, then one mutate of those rows:
delete options:psk, insert the new one; with PUSH_FLOOR_NO_WAIT=1 the mutate alone, push-key's
write from 90b4ad5 to the wait's commit; with PUSH_FLOOR_PER_TUNNEL=1, one mutate per tunnel by
uuid, push-key's write before 90b4ad5), encoded beforehand and sent to
every server at the same instant over connections opened beforehand, from one process. Prints
when the replies came back (ms after the first byte was sent): no psk-guard, no API server, no
simulated kubelet is running, so this is the least the simulated cluster needs for every node to
have committed the key. On a machine with fewer cores than nodes the servers share the cores and
the last reply is about NODES * (NODES - 1) row changes of CPU divided by the core count.

Usage: python3 benches/push_floor.py DIR NODES [NODES...]   (DIR is created and removed)
"""
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def call(s, ops, i):
    s.sendall(json.dumps({"method": "transact", "params": ["Open_vSwitch"] + ops, "id": i}).encode())
    dec, buf = json.JSONDecoder(), b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise SystemExit("ovsdb-server closed the connection")
        buf += chunk
        try:
            reply, _ = dec.raw_decode(buf.decode())
            return reply
        except ValueError:
            continue


def ok(reply):
    return all(x is not None and "error" not in x for x in reply["result"])


def node(d, tunnels):
    """Starts a seeded server in d; returns its connection and the pre-encoded key write."""
    os.makedirs(d)
    subprocess.run(["ovsdb-tool", "create", f"{d}/conf.db", SCHEMA], check=True)
    subprocess.run(["ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock", f"--pidfile={d}/pid",
                    f"--unixctl={d}/ctl", "--no-chdir", "-vconsole:off", "--detach"], check=True)
    s = socket.socket(socket.AF_UNIX)
    s.connect(f"{d}/db.sock")
    ops = []
    for i in range(tunnels):
        ops.append({"op": "insert", "table": "Interface", "uuid-name": f"i{i}", "row": {
            "name": f"tun{i}", "type": "geneve",
            "options": ["map", [["psk", "old-key-0123456789abcdef0123456789"], ["remote_ip", f"10.0.{i >> 8}.{i & 255}"]]]}})
        ops.append({"op": "insert", "table": "Port", "uuid-name": f"p{i}", "row": {
            "name": f"tun{i}", "interfaces": ["named-uuid", f"i{i}"],
            "external_ids": ["map", [["antrea-type", "ipsec-tunnel"], ["node-name", f"node-{i}"]]]}})
    ports = ["set", [["named-uuid", f"p{i}"] for i in range(tunnels)]]
    ops.append({"op": "insert", "table": "Bridge", "uuid-name": "br", "row": {"name": "br-int", "ports": ports}})
    ops.append({"op": "insert", "table": "Open_vSwitch", "row": {"bridges": ["named-uuid", "br"]}})
    assert ok(call(s, ops, 1)), "seeding failed"
    rows = call(s, [{"op": "select", "table": "Interface", "where": [], "columns": ["_uuid"]}], 2)
    uuids = [r["_uuid"][1] for r in rows["result"][0]["rows"]]
    assert len(uuids) == tunnels
    key = "new-key-0123456789abcdef0123456789ab"
    new_key = [["options", "delete", ["set", ["psk"]]], ["options", "insert", ["map", [["psk", key]]]]]
    old = ["options", "includes", ["map", [["psk", "old-key-0123456789abcdef0123456789"]]]]
    write = []
    if os.environ.get("PUSH_FLOOR_PER_TUNNEL") == "1":
        where = [[["_uuid", "==", ["uuid", u]]] for u in uuids]
    elif os.environ.get("PUSH_FLOOR_NO_WAIT") == "1":
        where = [[old]]
    else:
        where = [[["type", "==", "geneve"], old]]
        write.append({"op": "wait", "table": "Interface", "where": where[0], "columns": ["_uuid"],
                      "until": "==", "rows": [{"_uuid": ["uuid", u]} for u in uuids], "timeout": 0})
    write += [{"op": "mutate", "table": "Interface", "where": w, "mutations": new_key} for w in where]
    write += [{"op": "comment", "comment": "push-floor"}]
    return s, json.dumps({"method": "transact", "params": ["Open_vSwitch"] + write, "id": 3}).encode()


def run(base, n):
    conns = []
    try:
        for i in range(n):
            conns.append(node(f"{base}/n{i}", n - 1))
        time.sleep(1)  # let the seeding settle
        t0 = time.monotonic()
        for s, req in conns:
            s.sendall(req)
        sent = time.monotonic() - t0
        sel, bufs, done = selectors.DefaultSelector(), {}, []
        for s, _ in conns:
            sel.register(s, selectors.EVENT_READ)
            bufs[s] = b""
        while len(done) < n:
            for k, _ in sel.select():
                s = k.fileobj
                bufs[s] += s.recv(1 << 20)
                try:
                    reply = json.loads(bufs[s])
                except ValueError:
                    continue
                changed = sum(r.get("count", 0) for r in reply["result"][:-1])
                assert ok(reply) and changed == n - 1, "a key write failed"
                done.append(time.monotonic() - t0)
                sel.unregister(s)
        done.sort()
        ms = lambda x: round(x * 1000, 1)
        print(json.dumps({"nodes": n, "tunnels_per_node": n - 1, "all_sent_ms": ms(sent),
                          "replies_ms": {"first": ms(done[0]), "p50": ms(done[n // 2]),
                                         "p90": ms(done[int(n * 0.9)]), "last": ms(done[-1])},
                          "cores": os.cpu_count(),
                          "load_avg_1m": open("/proc/loadavg").read().split()[0]}), flush=True)
    finally:
        for s, _ in conns:
            s.close()
        for i in range(n):
            try:
                with open(f"{base}/n{i}/pid") as f:
                    os.kill(int(f.read()), 15)
            except (OSError, ValueError):
                pass


def main():
    base, counts = sys.argv[1], [int(x) for x in sys.argv[2:]] or [50, 200]
    try:
        for n in counts:
            d = f"{base}/{n}"
            run(d, n)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
