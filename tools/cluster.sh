#!/usr/bin/env bash
# A throwaway cluster on this machine, all on loopback: three nats-server processes with JetStream
# and routes to each other (cluster "mayhem", servers n1..n3, each with its own store folder) and
# one PostgreSQL (initdb into the state folder, run as the `postgres` account when started as
# root: PostgreSQL refuses to run as root). Every process is recorded by PID in the state folder
# and stopped by that PID (never by name).
#
#   tools/cluster.sh up [--dir DIR]          start everything, wait until ready, print the URLs
#   tools/cluster.sh down [--dir DIR]        stop everything (by recorded PID), remove the folder
#   tools/cluster.sh status [--dir DIR]      what runs, with its PID and ports
#   tools/cluster.sh kill nK [--dir DIR]     SIGKILL one nats-server (K = 1..3)
#   tools/cluster.sh start nK [--dir DIR]    start it again with the same ports and store
#   tools/cluster.sh env [--dir DIR]         print SOURCE=... and STORE=... (for scripts: eval)
#
# The state folder is --dir, else $MAYHEM_CLUSTER_DIR, else /tmp/mayhem-cluster. Ports are picked
# free at `up` and kept for `start`. Needs nats-server, curl, python3 and PostgreSQL 15
# (tools/install-deps.sh installs them).
set -euo pipefail

cmd=${1:-}
[ $# -gt 0 ] && shift
node=""
if [ "$cmd" = kill ] || [ "$cmd" = start ]; then
  node=${1:-}
  [ $# -gt 0 ] && shift
fi
dir=${MAYHEM_CLUSTER_DIR:-/tmp/mayhem-cluster}
while [ $# -gt 0 ]; do
  case $1 in
    --dir) dir=${2:?--dir needs a folder}; shift 2 ;;
    *) echo "cluster.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
NATS_SERVER=${NATS_SERVER:-nats-server}
NODES=(n1 n2 n3)

die() { echo "cluster.sh: $*" >&2; exit 1; }
usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }
port_of() { cat "$dir/$1" 2>/dev/null || die "no $dir/$1: is the cluster up (tools/cluster.sh up)?"; }

# N free loopback ports, one per line (bound and released at once: another process could take one
# in between, then that server fails to start and says so).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# Runs a command as the postgres account when we are root (PostgreSQL refuses root), else as us.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

urls() {
  local list="" n
  for n in "${NODES[@]}"; do list+="${list:+,}nats://127.0.0.1:$(port_of "$n.port")"; done
  echo "$list"
}
store_url() { echo "postgres://postgres@127.0.0.1:$(port_of pg.port)/mayhem"; }

start_node() {
  local n=$1 others="" m
  alive "$(pid_of "$n")" && { echo "cluster.sh: $n already runs (PID $(pid_of "$n"))"; return; }
  for m in "${NODES[@]}"; do
    [ "$m" = "$n" ] || others+="${others:+,}nats://127.0.0.1:$(port_of "$m.route")"
  done
  mkdir -p "$dir/$n/store"
  setsid "$NATS_SERVER" -js -sd "$dir/$n/store" --name "$n" --cluster_name mayhem \
    --cluster "nats://127.0.0.1:$(port_of "$n.route")" --routes "$others" \
    -a 127.0.0.1 -p "$(port_of "$n.port")" -m "$(port_of "$n.mon")" \
    -l "$dir/$n/server.log" </dev/null >/dev/null 2>&1 &
  echo $! >"$dir/$n.pid"
}

# The node's JetStream state as one word: "leader=NAME" once a meta leader is known, else "none".
meta_leader() {
  curl -s --max-time 1 "http://127.0.0.1:$(port_of "$1.mon")/jsz" 2>/dev/null |
    python3 -c 'import json,sys
try:
    print("leader=" + json.load(sys.stdin)["meta_cluster"]["leader"])
except Exception:
    print("none")' 2>/dev/null || echo none
}

# Waits (up to 30 s) until every running node knows the JetStream meta leader.
wait_nodes_ready() {
  local deadline=$((SECONDS + 30)) n ok
  while :; do
    ok=1
    for n in "${NODES[@]}"; do
      alive "$(pid_of "$n")" || continue
      [ "$(meta_leader "$n")" = none ] && ok=0
    done
    [ $ok = 1 ] && return 0
    for n in "${NODES[@]}"; do
      [ -f "$dir/$n.pid" ] && ! alive "$(pid_of "$n")" && die "$n exited; its log: $dir/$n/server.log"
    done
    [ $SECONDS -ge $deadline ] && die "no JetStream meta leader after 30 s (logs: $dir/n*/server.log)"
    sleep 0.1
  done
}

start_pg() {
  local data="$dir/pg/data" port
  port=$(port_of pg.port)
  alive "$(pid_of pg)" && { echo "cluster.sh: PostgreSQL already runs (PID $(pid_of pg))"; return; }
  if [ ! -d "$data" ]; then
    mkdir -p "$dir/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pg"
    as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >"$dir/pg/initdb.log" 2>&1 ||
      die "initdb failed: $dir/pg/initdb.log"
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$dir/pg/server.log" -w -t 30 \
    -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1" start >/dev/null ||
    die "PostgreSQL did not start: $dir/pg/server.log"
  head -1 "$data/postmaster.pid" >"$dir/pg.pid"
  as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -qAtc \
    "SELECT 1 FROM pg_database WHERE datname = 'mayhem'" postgres | grep -q 1 ||
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres mayhem
}

# Stops a recorded PID with `sig`, waits up to 10 s, then SIGKILL.
stop_pid() {
  local name=$1 sig=$2 pid
  pid=$(pid_of "$name")
  if alive "$pid"; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$dir/$name.pid"
}

check_node() {
  case $1 in n1 | n2 | n3) ;; *) echo "cluster.sh: $cmd needs n1, n2 or n3 (got '$1')" >&2; exit 2 ;; esac
}

case $cmd in
  up)
    command -v "$NATS_SERVER" >/dev/null || die "no nats-server (tools/install-deps.sh)"
    [ -x "$PG_BIN/postgres" ] || die "no PostgreSQL in $PG_BIN (tools/install-deps.sh)"
    mkdir -p "$dir"
    chmod 755 "$dir"
    if [ ! -f "$dir/pg.port" ]; then
      mapfile -t ports < <(free_ports 10)
      i=0
      for n in "${NODES[@]}"; do
        echo "${ports[i]}" >"$dir/$n.port"
        echo "${ports[i + 1]}" >"$dir/$n.route"
        echo "${ports[i + 2]}" >"$dir/$n.mon"
        i=$((i + 3))
      done
      echo "${ports[9]}" >"$dir/pg.port"
    fi
    for n in "${NODES[@]}"; do start_node "$n"; done
    start_pg
    wait_nodes_ready
    echo "cluster.sh: up (state in $dir)"
    echo "  --source $(urls)"
    echo "  --store $(store_url)"
    echo "  monitoring: $(for n in "${NODES[@]}"; do printf 'http://127.0.0.1:%s ' "$(port_of "$n.mon")"; done)"
    ;;
  down)
    [ -d "$dir" ] || { echo "cluster.sh: nothing at $dir"; exit 0; }
    for n in "${NODES[@]}"; do stop_pid "$n" TERM; done
    # SIGINT: PostgreSQL's fast shutdown.
    stop_pid pg INT
    rm -rf "$dir"
    echo "cluster.sh: down"
    ;;
  status)
    [ -d "$dir" ] || { echo "cluster.sh: not up (no $dir)"; exit 1; }
    for n in "${NODES[@]}"; do
      pid=$(pid_of "$n")
      if alive "$pid"; then
        echo "$n: running, PID $pid, nats://127.0.0.1:$(port_of "$n.port"), $(meta_leader "$n")"
      else
        echo "$n: stopped (nats://127.0.0.1:$(port_of "$n.port"))"
      fi
    done
    pid=$(pid_of pg)
    if alive "$pid"; then echo "pg: running, PID $pid, $(store_url)"; else echo "pg: stopped"; fi
    echo "--source $(urls)"
    ;;
  kill)
    check_node "$node"
    stop_pid "$node" KILL
    echo "cluster.sh: $node killed"
    ;;
  start)
    check_node "$node"
    start_node "$node"
    wait_nodes_ready
    echo "cluster.sh: $node started (PID $(pid_of "$node"))"
    ;;
  env)
    echo "SOURCE=$(urls)"
    echo "STORE=$(store_url)"
    ;;
  *) usage ;;
esac
