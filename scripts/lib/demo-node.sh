# Sourced by scripts/demo and tests/image.sh: start_demo_node DIR lays out DIR/var/run/antrea like an
# Antrea IPsec node, starts a throw-away ovsdb-server on it and seeds it: one geneve tunnel port per
# peer with the Helm chart's default PSK, an older key still in conf.db's log, and the modes from
# before Antrea v0.10/v0.13 (readable by everyone). Sets RUN and OVS; stop_demo_node stops the server.
# shellcheck shell=bash

start_demo_node() {
    local demo=$1
    RUN=$demo/var/run/antrea
    OVS=$RUN/openvswitch
    mkdir -p "$OVS"
    # Like a real host path: every parent traversable by everyone.
    chmod 0755 "$demo" "$demo/var" "$demo/var/run"
    ovsdb-tool create "$OVS/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    OVS_RUNDIR=$OVS ovsdb-server "$OVS/conf.db" --remote=punix:"$OVS/db.sock" --pidfile="$OVS/ovsdb-server.pid" \
        --log-file="$demo/ovsdb-server.log" --no-chdir -vconsole:off --detach 2>/dev/null
    local V="ovs-vsctl --db=unix:$OVS/db.sock --no-wait"
    $V init
    $V add-br br-int
    # One tunnel port per peer, named as Antrea names them, with the Helm chart's default key.
    local i=0 peer hash port
    for peer in worker-a worker-b worker-c; do
        i=$((i + 1))
        hash=$(printf 'node/%s' "$peer" | sha1sum | cut -c1-6)
        port="${peer: -8}-$hash"; port="${port#-}"
        $V add-port br-int "$port" -- set Interface "$port" type=geneve options:remote_ip=192.0.2.$((10 + i)) \
            options:psk=changeme -- set Port "$port" external_ids:antrea-type=ipsec-tunnel external_ids:node-name="$peer"
    done
    # An earlier key that was replaced: it stays in conf.db's log until compaction.
    $V set Interface "$port" options:psk=an-older-key-from-last-year && $V set Interface "$port" options:psk=changeme
    # Modes from before Antrea v0.10/v0.13: readable by everyone.
    chmod 0755 "$RUN"; chmod 0644 "$OVS/conf.db"
}

stop_demo_node() {
    [ -n "${OVS:-}" ] && [ -f "$OVS/ovsdb-server.pid" ] && kill "$(cat "$OVS/ovsdb-server.pid")" 2>/dev/null || true
}
