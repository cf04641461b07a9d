#!/usr/bin/env bash
# The write-ahead log's disk bytes per span and its replay speed (BENCHMARKS.md, "The
# write-ahead log"). Two phases, release binaries (`cargo build --release -p cujo -p
# cujo-bench`; CARGO_TARGET_DIR is respected):
#
# 1. cujo-load drives cujo (plain forwarding, bench.sh's 512 MiB budget, the log on) at
#    RATE spans/s for DURATION, with cujo's exporter pointed at a closed port, so every
#    acknowledged request stays in the log. cujo-load then stops cujo (SIGTERM, SIGKILL a
#    second later); its check that the downstream got every span fails by design.
#    Disk bytes per span = the segment files' bytes / spans acknowledged.
# 2. cujo restarts on that log with a counting downstream up (cujo-sink, a process of its
#    own): the "write-ahead log replayed" line gives records, spans and spans/s handed to
#    the pipeline; /metrics gives the time until every replayed span was delivered.
#
#   scripts/wal-replay.sh [RATE] [DURATION]      # default: 100000 spans/s for 5s
#   WAL_COMMIT=0ms scripts/wal-replay.sh          # commit_interval (default 5ms)
#   COLD=1 scripts/wal-replay.sh                  # drop the segments' cached pages first
#                                                 # (dd iflag=nocache: these files only)
set -euo pipefail
cd "$(dirname "$0")/.."

RATE=${1:-100000}
DURATION=${2:-5s}
BIN=${CARGO_TARGET_DIR:-target}/release
for b in cujo cujo-load cujo-sink; do
  [[ -x $BIN/$b ]] || { echo "wal-replay.sh: $BIN/$b not built" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cujo-wal-replay.XXXXXX")
WAL=$WORK/wal
ADMISSION='admission: { max_in_flight: 512MiB }'
WAL_YAML="wal: { directory: \"$WAL\", max_size: 4GiB, commit_interval: ${WAL_COMMIT:-5ms} }"

# cujo-load writes cujo's config; this wrapper points its exporter at a closed port.
cat > "$WORK/cujo-no-downstream" <<EOF
#!/bin/sh
sed -i 's#endpoint: "http://[^"]*"#endpoint: "http://127.0.0.1:1"#' "\$2"
exec "$(realpath "$BIN/cujo")" "\$@"
EOF
chmod +x "$WORK/cujo-no-downstream"

echo "== phase 1: $RATE spans/s for $DURATION into the log, the downstream unreachable"
"$BIN/cujo-load" --target cujo --bin "$WORK/cujo-no-downstream" --label cujo-wal \
  --cujo-yaml "$ADMISSION
$WAL_YAML" --mode rate --rate "$RATE" --duration "$DURATION" --warmup 1s \
  --drain-timeout 1s --stop-timeout 1s --retry-timeout 2s \
  --metrics-out "$WORK/phase1.metrics" > "$WORK/phase1.out" 2>&1 || true
metric() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
spans=$(metric 'cujo_receiver_spans_total{transport="grpc",outcome="accepted"}' "$WORK/phase1.metrics")
records=$(metric cujo_wal_appended_records_total "$WORK/phase1.metrics")
payload=$(metric cujo_wal_appended_bytes_total "$WORK/phase1.metrics")
disk=$(find "$WAL" -name '*.wal' -printf '%s\n' | awk '{ s += $1 } END { print s }')
segments=$(find "$WAL" -name '*.wal' | wc -l)
awk -v s="$spans" -v r="$records" -v p="$payload" -v d="$disk" -v n="$segments" 'BEGIN {
  printf "acknowledged: %d spans in %d requests (%.0f spans each)\n", s, r, s / r
  printf "record payload (sender tag + decoded request): %d bytes, %.1f bytes/span\n", p, p / s
  printf "on disk: %d bytes in %d segments, %.1f bytes/span\n", d, n, d / s }'

if [[ ${COLD:-0} == 1 ]]; then
  for f in "$WAL"/*.wal; do dd if="$f" iflag=nocache count=0 status=none; done
  echo "segments' pages dropped from the page cache"
fi

echo "== phase 2: restart on the log, cujo-sink up"
SINK_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADMIN_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
coproc SINK { exec "$BIN/cujo-sink" --listen "127.0.0.1:$SINK_PORT"; }
cat > "$WORK/replay.yaml" <<EOF
receivers: { otlp: { grpc: { endpoint: "127.0.0.1:0" } } }
exporters:
  otlp: { endpoint: "http://127.0.0.1:$SINK_PORT", protocol: grpc, compression: none, batch: { max_spans: 8192, timeout: 200ms } }
  prometheus: { endpoint: "127.0.0.1:$ADMIN_PORT" }
$ADMISSION
$WAL_YAML
EOF
sleep 0.5 # cujo-sink binds at once; cujo's exporter retries anyway
started=$(date +%s.%N)
"$BIN/cujo" --config "$WORK/replay.yaml" > "$WORK/replay.log" 2>&1 &
CUJO=$!
trap 'kill $CUJO 2>/dev/null; kill $SINK_PID 2>/dev/null' EXIT
until grep -q 'write-ahead log replayed' "$WORK/replay.log"; do sleep 0.05; done
grep 'write-ahead log replayed' "$WORK/replay.log" | sed 's/^.*write-ahead log replayed/replayed:/'
replayed=$(grep -o 'spans=[0-9]*' "$WORK/replay.log" | head -1 | cut -d= -f2)
sent=0
until [[ ${sent%.*} -ge $replayed ]]; do
  sleep 0.05
  sent=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '$1 == "cujo_exporter_sent_spans_total" { print $2 }')
  sent=${sent:-0}
done
done_at=$(date +%s.%N)
awk -v n="$replayed" -v a="$started" -v b="$done_at" 'BEGIN {
  printf "delivered: %d spans %.2f s after the start, %.0f spans/s end to end\n", n, b - a, n / (b - a) }'
kill -TERM $CUJO; wait $CUJO || true
echo quit >&"${SINK[1]}"
rm -rf "$WAL"
echo "logs and metrics: $WORK"
