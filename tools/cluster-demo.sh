#!/usr/bin/env bash
# The scale-out story on this machine: a 3-server JetStream cluster and a PostgreSQL
# (tools/cluster.sh up), N messages published to a replicated (R3) stream, three workers bound to
# one durable consumer writing one shared store, the server that leads the consumer SIGKILLed
# mid-run and started again, then the tally from the servers' own accounting and from the
# database, and everything stopped (tools/cluster.sh down, by PID).
#   tools/cluster-demo.sh [--messages N] [--dir DIR]     (default 100000, /tmp/mayhem-cluster-demo)
# Uses build/release/mayhem (tools/build.sh builds it). When this build has no PostgreSQL store
# (--store postgres://...), the workers use --store memory and the database tally is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

n=100000
dir=/tmp/mayhem-cluster-demo
while [ $# -gt 0 ]; do
  case $1 in
    --messages) n=${2:?}; shift 2 ;;
    --dir) dir=${2:?}; shift 2 ;;
    *) echo "cluster-demo.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
bin=build/release/mayhem
[ -x "$bin" ] || { echo "cluster-demo.sh: no $bin (run tools/build.sh)" >&2; exit 1; }

tools/cluster.sh up --dir "$dir"
workers=()
cleanup() {
  for p in "${workers[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  tools/cluster.sh down --dir "$dir" >/dev/null
}
trap cleanup EXIT
eval "$(tools/cluster.sh env --dir "$dir")"
SOURCE=${SOURCE:?} STORE=${STORE:?}
mons=()
for k in 1 2 3; do mons+=("$(cat "$dir/n$k.mon")"); done
pg_port=$(cat "$dir/pg.port")

# The servers' accounting for stream MAYHEM / consumer mayhem, from whichever running server
# knows most (followers may lag): "messages ack_pending pending delivered_consumer delivered_stream
# ack_floor leader".
js_state() {
  python3 - "${mons[@]}" <<'EOF'
import json, sys, urllib.request
best = None
for port in sys.argv[1:]:
    try:
        d = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz?consumers=1", timeout=1))
    except Exception:
        continue
    for a in d.get("account_details", []):
        for s in a.get("stream_detail", []):
            cs = [c for c in s.get("consumer_detail", []) if c["name"] == "mayhem"]
            if s["name"] != "MAYHEM" or not cs:
                continue
            c = cs[0]
            v = (s["state"]["messages"], c["num_ack_pending"], c["num_pending"],
                 c["delivered"]["consumer_seq"], c["delivered"]["stream_seq"],
                 c["ack_floor"]["stream_seq"], c.get("cluster", {}).get("leader", "?"))
            if best is None or v[5] > best[5] or (v[5] == best[5] and v[0] < best[0]):
                best = v
print(*(best or (-1, -1, -1, 0, 0, 0, "?")))
EOF
}

echo "== publishing $n messages to an R3 stream"
"$bin" publish --nats "$SOURCE" --stream-replicas 3 --messages "$n" --log-level warning

store=memory
if "$bin" --help 2>&1 | grep -q "postgres://"; then store=$STORE; fi
echo "== three workers, one durable, --store $store"
for k in 1 2 3; do
  "$bin" --source "$SOURCE" --stream-replicas 3 --store "$store" --messages 0 \
    --latency-scale 0.1 --fail-rate 0 --max-in-flight 500 --summary-json \
    --log-file "$dir/worker$k.log" >"$dir/worker$k.json" &
  workers+=($!)
done

killed=""
start=$SECONDS
while :; do
  read -r msgs ackp pend dcons dstream floor leader < <(js_state)
  if [ -z "$killed" ] && [ "$floor" -ge $((n / 4)) ] && [ "$floor" -lt "$n" ] && [ "$leader" != "?" ]; then
    killed=$leader
    echo "== $floor acked; SIGKILL $killed (it leads the consumer); back in 3 s"
    tools/cluster.sh kill "$killed" --dir "$dir" >/dev/null
    (sleep 3 && tools/cluster.sh start "$killed" --dir "$dir" >/dev/null && echo "== $killed started again") &
  fi
  [ "$msgs" = 0 ] && [ "$ackp" = 0 ] && [ "$pend" = 0 ] && [ "$floor" -ge "$n" ] && break
  [ $((SECONDS - start)) -gt 600 ] && { echo "cluster-demo.sh: not done after 600 s" >&2; exit 1; }
  sleep 0.2
done
wait %% 2>/dev/null || true
for p in "${workers[@]}"; do kill -INT "$p"; done
for p in "${workers[@]}"; do wait "$p" || echo "cluster-demo.sh: worker $p exited $?" >&2; done
workers=()

echo "== the workers"
for k in 1 2 3; do
  python3 -c 'import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print("worker%s: acked %d, redelivered %d, %.0f msgs/s" % (sys.argv[2], s["acked"], s.get("redelivered", 0), s["msgs_per_s"]))' "$dir/worker$k.json" "$k"
done
echo "== the servers (consumer info)"
read -r msgs ackp pend dcons dstream floor leader < <(js_state)
echo "stream messages left $msgs, pending $pend, unacknowledged $ackp, acked up to stream seq $floor of $n, deliveries $dcons (redeliveries $((dcons - dstream))), consumer leader now $leader"
if [ "$store" != memory ]; then
  echo "== the database"
  runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h 127.0.0.1 -p "$pg_port" -U postgres \
    -At -F ' ' -c "SELECT count(*), count(DISTINCT message_id), count(*) FILTER (WHERE outcome = 'acked') FROM saves" mayhem 2>/dev/null |
    { read -r rows ids acked; echo "rows $rows, distinct message_ids $ids, acked $acked (published $n)"; } ||
    echo "(could not query the saves table)"
fi
