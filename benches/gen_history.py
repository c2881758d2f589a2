#!/usr/bin/env python3
"""Writes a standalone conf.db with a long PSK history, record by record, in the format ovsdb-server
writes (`OVSDB JSON <len> <sha1>` + JSON): the vswitch schema, a base transaction with a bridge and
N tunnel ports, then transactions that each change one tunnel's key the two ways Antrea/operators do
(a direct transact: row diff only; ovs-vsctl: row diff + the command line in _comment), until the file
reaches the target size. Usage: gen_history.py OUT SCHEMA TARGET_MB [TUNNELS]"""
import hashlib, json, sys, uuid

out, schema_path, target_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
tunnels = int(sys.argv[4]) if len(sys.argv) > 4 else 200
target = target_mb * 1024 * 1024

def rec(f, obj):
    body = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    f.write(b"OVSDB JSON %d %s\n" % (len(body), hashlib.sha1(body).hexdigest().encode()))
    f.write(body)
    return len(body) + 60

with open(schema_path) as s:
    schema = json.load(s)
date = 1_700_000_000_000
with open(out, "wb") as f:
    size = rec(f, schema)
    ovs, br = str(uuid.uuid4()), str(uuid.uuid4())
    ifaces = [str(uuid.uuid4()) for _ in range(tunnels)]
    ports = [str(uuid.uuid4()) for _ in range(tunnels)]
    names = [f"node{i:04d}-{i:06x}" for i in range(tunnels)]
    base = {"_date": date, "_is_diff": True,
            "Open_vSwitch": {ovs: {"bridges": ["uuid", br]}},
            "Bridge": {br: {"name": "br-int", "ports": ["set", [["uuid", p] for p in ports]]}},
            "Port": {p: {"name": n, "interfaces": ["uuid", i],
                         "external_ids": ["map", [["antrea-type", "ipsec-tunnel"], ["node-name", f"node-{k}"]]]}
                     for k, (p, i, n) in enumerate(zip(ports, ifaces, names))},
            "Interface": {i: {"name": n, "type": "geneve",
                              "options": ["map", [["psk", "key-000000000"], ["remote_ip", f"10.0.{k // 250}.{k % 250 + 1}"]]]}
                          for k, (i, n) in enumerate(zip(ifaces, names))}}
    size += rec(f, base)
    current = ["key-000000000"] * tunnels
    k = 0
    while size < target:
        k += 1
        date += 1000
        t = k % tunnels
        cluster_key = f"key-{k // 20000:09d}"  # a rotation every 20,000 transactions
        if current[t] != cluster_key:
            # Re-key one tunnel: a map diff that replaces the value carries the new pair.
            txn = {"_date": date, "_is_diff": True, "Interface": {ifaces[t]: {"options": ["map", [["psk", cluster_key]]]}}}
            if k % 2:
                txn["_comment"] = (f"ovs-vsctl (invoked by antrea-agent): ovs-vsctl --db=unix:/var/run/openvswitch/db.sock "
                                   f"set Interface {names[t]} options:psk={cluster_key}")
        else:
            # The agent deletes and recreates the tunnel port (same key): a full new row.
            old, ifaces[t] = ifaces[t], str(uuid.uuid4())
            txn = {"_date": date, "_is_diff": True, "Interface": {old: None, ifaces[t]: {
                "name": names[t], "type": "geneve",
                "options": ["map", [["psk", cluster_key], ["remote_ip", f"10.0.{t // 250}.{t % 250 + 1}"]]]}},
                "Port": {ports[t]: {"interfaces": ["set", [["uuid", old], ["uuid", ifaces[t]]]]}}}
        size += rec(f, txn)
        current[t] = cluster_key
print(f"{out}: {size} bytes, {k + 2} records, {tunnels} tunnels, {len(set(current))} current keys")
