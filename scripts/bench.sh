#!/usr/bin/env bash
# End-to-end load benchmark: cujo vs rotel, saturate, fixed-rate and a fraction of saturation,
# alternated over several rounds in one run, then a markdown table of medians for
# BENCHMARKS.md. The counting downstream runs in a process of its own (cujo-sink).
#
#   scripts/bench.sh                      # 3 rounds x {saturate, rate} x all targets
#   scripts/bench.sh --only rotel         # before target/release/cujo exists
#   scripts/bench.sh --rounds 1 --duration 5s --rate 50000
#   scripts/bench.sh --only cujo,cujo-pipeline,rotel --modes saturate,rate,fraction
#
# Targets: cujo (plain forwarding), cujo-padded, cujo-propagate, cujo-sli (these four with
# admission.max_in_flight 512MiB), cujo-default (plain forwarding at the default budget,
# 256 MiB), cujo-pipeline (propagation + 4 CUJs at the default budget), rotel.
# Not in the default set: cujo-wal (plain forwarding with the write-ahead log on, see below),
# cujo-sidecar, and cujo-sli-polled, cujo-sli with its admin /api/v1/slos and /metrics
# each GET --poll-rate times a second while the load runs (cujo-load --poll-rate); the table
# then adds its throughput over cujo-sli's round by round, and the polls' latencies.
# Modes: saturate (closed loop), rate (--rate spans/s, open loop), fraction (--fraction of
# the saturation measured in the same round's saturate run, or measured first when the round
# has none, offered to a fresh target in open loop: refusals below saturation).
# Each cujo run's /metrics, scraped after the load, is kept beside its log
# (target/bench-logs/STAMP/TARGET-MODE-ROUND.metrics); a run with refusals also prints which
# shares of the memory budget were full (cujo_memory_full_total).
#
# Options (env var in brackets):
#   --only LIST         comma-separated targets (default: all seven) [ONLY]
#   --rounds N          rounds per (target, mode), default 3         [ROUNDS]
#   --duration D        measured window per run, default 20s         [DURATION]
#   --warmup D          unmeasured load before it, default 2s        [WARMUP]
#   --rate N            spans/s offered in rate mode, default 100000 [RATE]
#   --fraction F        share of saturation in fraction mode, 0.8    [FRACTION]
#   --clients N         gRPC connections, default 8                  [CLIENTS]
#   --concurrency N     requests in flight per connection            [CONCURRENCY]
#                       (default: cujo-load's, 1 saturate / 4 rate)
#   --modes LIST        comma-separated, default saturate,rate       [MODES]
#   --downstream WHERE  process (cujo-sink, default) or in-process   [DOWNSTREAM]
#   --out FILE          JSON lines file (appended)                   [OUT]
#   --poll-rate N       GETs/s of each admin endpoint, cujo-sli-polled [POLL_RATE]
#                       only (default 50)
#   --poll-connections N  keep-alive connections per endpoint sharing   [POLL_CONNECTIONS]
#                       that rate (default 1: a poll slower than 1/rate delays the next)
#   --poll-plain        poll without Accept-Encoding: gzip (scrapers    [POLL_PLAIN=1]
#                       and browsers ask for gzip, so the default does)
#   --pin               rate mode only: the target alone on the last core, [PIN=1]
#                       the load generator and the sink on the others (taskset),
#                       so its CPU per span is not disturbed by theirs
#   --no-build          use the binaries already built
# ROTEL_BIN overrides the rotel-agent path; CARGO_TARGET_DIR is respected.
# The table's "CPU µs/span over plain" is each run's CPU per span minus that of the `cujo`
# run of the same round and mode (median over rounds).
set -euo pipefail

SCRIPT=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
cd "$(dirname "$SCRIPT")/.."

ONLY=${ONLY:-both}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-2s}
RATE=${RATE:-100000}
FRACTION=${FRACTION:-0.8}
DOWNSTREAM=${DOWNSTREAM:-process}
CLIENTS=${CLIENTS:-8}
CONCURRENCY=${CONCURRENCY:-}
MODES=${MODES:-saturate,rate}
OUT=${OUT:-}
POLL_RATE=${POLL_RATE:-50}
POLL_CONNECTIONS=${POLL_CONNECTIONS:-1}
POLL_PLAIN=${POLL_PLAIN:-}
PIN=${PIN:-}
BUILD=1

while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) ONLY=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --fraction) FRACTION=$2; shift 2 ;;
    --downstream) DOWNSTREAM=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --concurrency) CONCURRENCY=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --poll-rate) POLL_RATE=$2; shift 2 ;;
    --poll-connections) POLL_CONNECTIONS=$2; shift 2 ;;
    --poll-plain) POLL_PLAIN=1; shift ;;
    --pin) PIN=1; shift ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; exit 0 ;;
    *) echo "bench.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

# cujo-propagate: cujo with the trace assembler on (root-attribute propagation), so the
# cost of holding and enriching every trace shows against plain forwarding in the same run.
# Every cujo target gets the same admission budget: propagation needs room to hold traces, and
# plain forwarding with a smaller one measured budget-bound (64 MiB: 1.12M spans/s with
# refusals; 128 MiB and up: 1.48M, none), which would flatter the ratios.
ADMISSION_YAML='admission: { max_in_flight: 512MiB }'
PROPAGATE_YAML="$ADMISSION_YAML
assembler: { decision_wait: 500ms, trace_timeout: 10s }
propagate: { attributes: [\"cuj.*\", \"user.tier\", \"tenant.id\", \"graphql.operation.name\"] }"
# cujo-sli: propagation plus 10 CUJs with 2 dimensions each (the workload's five journeys,
# each as a root-latency CUJ and an end-to-end CUJ over the whole trace).
SLI_YAML="$PROPAGATE_YAML
cujs:"
for journey in checkout add-to-cart view-product search view-cart; do
  for variant in api e2e; do
    if [[ $variant == api ]]; then scope=root; measure=root; else scope=trace; measure=end_to_end; fi
    SLI_YAML+="
  - name: $journey-$variant
    match: { attributes: { cuj.name: $journey } }
    dimensions: [user.tier, tenant.id]
    availability:
      scope: $scope
      bad: [ { status: error }, { attribute: http.response.status_code, gte: 500 } ]
      exclude: [ { attribute: http.response.status_code, gte: 400, lt: 500 } ]
    latency: { threshold: 300ms, measure: $measure }
    objectives: [ { sli: availability, target: 99.9%, window: 30d }, { sli: latency, target: 99%, window: 30d } ]"
  done
done
# cujo-pipeline: the full pipeline as deployed, at the default budget (no admission:
# override, 256 MiB): propagation as above plus 4 CUJs by user.tier (a dimension every root
# has, 3 values), two of them end-to-end over the whole trace (availability scope: trace).
PIPELINE_YAML="assembler: { decision_wait: 500ms, trace_timeout: 10s }
propagate: { attributes: [\"cuj.*\", \"user.tier\", \"tenant.id\", \"graphql.operation.name\"] }
cujs:"
for cuj in checkout:api checkout:e2e search:api add-to-cart:e2e; do
  journey=${cuj%%:*} variant=${cuj##*:}
  if [[ $variant == api ]]; then scope=root; measure=root; else scope=trace; measure=end_to_end; fi
  PIPELINE_YAML+="
  - name: $journey-$variant
    match: { attributes: { cuj.name: $journey } }
    dimensions: [user.tier]
    availability:
      scope: $scope
      bad: [ { status: error }, { attribute: http.response.status_code, gte: 500 } ]
      exclude: [ { attribute: http.response.status_code, gte: 400, lt: 500 } ]
    latency: { threshold: 300ms, measure: $measure }
    objectives: [ { sli: availability, target: 99.9%, window: 30d }, { sli: latency, target: 99%, window: 30d } ]"
done
# cujo-sidecar: config/sidecar.yaml's settings (64 MiB budget, remote_parent: release) with
# the pipeline's 4 CUJs, for the sidecar's figures at a pod's rate (--rate 1000). The
# workload's traces span several services, so the sidecar holds whole traces here (more
# than a pod that does not own its roots would). The harness's receivers take 16 MiB
# requests (the sidecar's take 4 MiB), so the receivers' share is raised to hold one. Not in
# the default set.
SIDECAR_YAML="admission: { max_in_flight: 64MiB, shares: { receivers: 30% } }
assembler: { decision_wait: 2s, trace_timeout: 30s, max_buffered_spans: 200000, root_cache: { ttl: 10m, max_traces: 100000 }, remote_parent: release }
${PIPELINE_YAML#*$'\n'}"
# cujo-wal: plain forwarding (as cujo) with the write-ahead log on: every request on disk
# before it is acknowledged (group commit, commit_interval 5ms). A fresh log directory per
# run. Not in the default set.
WAL_DIR=${WAL_DIR:-${TMPDIR:-/tmp}/cujo-bench-wal}
WAL_YAML="$ADMISSION_YAML
wal: { directory: \"$WAL_DIR\", max_size: 4GiB, commit_interval: ${WAL_COMMIT:-5ms}, segment_size: ${WAL_SEGMENT:-64MiB} }"
ALL_TARGETS=(cujo cujo-padded cujo-propagate cujo-sli cujo-default cujo-pipeline rotel)
if [[ $ONLY == both || $ONLY == all ]]; then
  TARGETS=("${ALL_TARGETS[@]}")
else
  IFS=, read -r -a TARGETS <<< "$ONLY"
  for t in "${TARGETS[@]}"; do
    case "$t" in
      cujo|rotel|cujo-padded|cujo-propagate|cujo-sli|cujo-default|cujo-pipeline|cujo-sli-polled|cujo-sidecar|cujo-wal) ;;
      *) echo "bench.sh: --only takes ${ALL_TARGETS[*]} cujo-sli-polled cujo-sidecar cujo-wal (comma-separated), not '$t'" >&2; exit 2 ;;
    esac
  done
fi
IFS=, read -r -a MODE_LIST <<< "$MODES"
for mode in "${MODE_LIST[@]}"; do
  case "$mode" in
    saturate|rate|fraction) ;;
    *) echo "bench.sh: --modes takes saturate, rate, fraction (comma-separated), not '$mode'" >&2; exit 2 ;;
  esac
done
case "$DOWNSTREAM" in
  process|in-process) ;;
  *) echo "bench.sh: --downstream takes process or in-process, not '$DOWNSTREAM'" >&2; exit 2 ;;
esac

TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOAD="$TARGET_DIR/release/cujo-load"
SINK="$TARGET_DIR/release/cujo-sink"
CUJO_BIN="$TARGET_DIR/release/cujo"
ROTEL_BIN=${ROTEL_BIN:-/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/rotel/rotel-agent}

if [[ $BUILD == 1 ]]; then
  packages=(-p cujo-bench)
  [[ " ${TARGETS[*]} " == *" cujo"* ]] && packages=(-p cujo "${packages[@]}")
  cargo build --release "${packages[@]}"
fi

[[ -x "$LOAD" ]] || { echo "bench.sh: $LOAD not built" >&2; exit 1; }
[[ $DOWNSTREAM == in-process || -x "$SINK" ]] || { echo "bench.sh: $SINK not built" >&2; exit 1; }
for t in "${TARGETS[@]}"; do
  case "$t" in
    cujo|cujo-padded|cujo-propagate|cujo-sli|cujo-default|cujo-pipeline|cujo-sli-polled|cujo-sidecar|cujo-wal) [[ -x "$CUJO_BIN" ]] || { echo "bench.sh: $CUJO_BIN not built (use --only rotel until it is)" >&2; exit 1; } ;;
    rotel) [[ -x "$ROTEL_BIN" ]] || { echo "bench.sh: rotel-agent not found at $ROTEL_BIN (pip install rotel, or set ROTEL_BIN)" >&2; exit 1; } ;;
  esac
done

stamp=$(date +%Y%m%d-%H%M%S)
LOG_DIR="$TARGET_DIR/bench-logs/$stamp"
mkdir -p "$LOG_DIR"
OUT=${OUT:-$LOG_DIR/results.jsonl}

bin_for() {
  case "$1" in
    cujo|cujo-padded|cujo-propagate|cujo-sli|cujo-default|cujo-pipeline|cujo-sli-polled|cujo-sidecar|cujo-wal) echo "$CUJO_BIN" ;;
    rotel) echo "$ROTEL_BIN" ;;
  esac
}

# cujo-load arguments that select a target.
target_args() {
  case "$1" in
    cujo) printf '%s\0' --target cujo --cujo-yaml "$ADMISSION_YAML" ;;
    # Plain forwarding of spans padded to the size propagation makes them (448 B): what the
    # bytes alone cost, in and out, apart from the assembler's work.
    cujo-padded) printf '%s\0' --target cujo --label cujo-padded --padding-bytes 180 --cujo-yaml "$ADMISSION_YAML" ;;
    cujo-propagate) printf '%s\0' --target cujo --label cujo-propagate --cujo-yaml "$PROPAGATE_YAML" ;;
    cujo-sli) printf '%s\0' --target cujo --label cujo-sli --cujo-yaml "$SLI_YAML" ;;
    # Plain forwarding as deployed: no admission: key, the default 256 MiB budget.
    cujo-default) printf '%s\0' --target cujo --label cujo-default ;;
    cujo-pipeline) printf '%s\0' --target cujo --label cujo-pipeline --cujo-yaml "$PIPELINE_YAML" ;;
    cujo-sidecar) printf '%s\0' --target cujo --label cujo-sidecar --cujo-yaml "$SIDECAR_YAML" ;;
    cujo-wal) rm -rf "$WAL_DIR"; printf '%s\0' --target cujo --label cujo-wal --cujo-yaml "$WAL_YAML" ;;
    # cujo-sli while its SLO report and /metrics are read, as dashboards and deploy gates do.
    cujo-sli-polled) printf '%s\0' --target cujo --label cujo-sli-polled --cujo-yaml "$SLI_YAML" \
      --poll-rate "$POLL_RATE" --poll-connections "$POLL_CONNECTIONS" --unpolled-label cujo-sli \
      ${POLL_PLAIN:+--poll-plain} ;;
    *) printf '%s\0' --target "$1" ;;
  esac
}

extra=(--downstream "$DOWNSTREAM" --sink-bin "$SINK")
# --pin: the target's core, and the cores the load generator and the sink share.
if [[ -n $PIN ]]; then
  command -v taskset > /dev/null || { echo "bench.sh: --pin needs taskset (util-linux)" >&2; exit 2; }
  (( $(nproc) >= 2 )) || { echo "bench.sh: --pin needs two cores or more" >&2; exit 2; }
  PIN_TARGET=$(( $(nproc) - 1 ))
  PIN_OTHERS=0
  if (( PIN_TARGET > 1 )); then PIN_OTHERS="0-$(( PIN_TARGET - 1 ))"; fi
fi
[[ -n "$CONCURRENCY" ]] && extra+=(--concurrency "$CONCURRENCY")
failures=0
echo "results: $OUT   logs: $LOG_DIR"
for ((round = 1; round <= ROUNDS; round++)); do
  # Alternate which target goes first so slow drift (thermal, page cache) doesn't favour one.
  order=("${TARGETS[@]}")
  if (( round % 2 == 0 )); then
    reversed=(); for ((i = ${#order[@]} - 1; i >= 0; i--)); do reversed+=("${order[i]}"); done
    order=("${reversed[@]}")
  fi
  # This round's saturation throughput per target, for fraction mode.
  declare -A saturation=()
  for mode in "${MODE_LIST[@]}"; do
    for t in "${order[@]}"; do
      log="$LOG_DIR/$t-$mode-$round.log"
      printf 'round %d/%d  %-8s %-14s ... ' "$round" "$ROUNDS" "$mode" "$t"
      rc=0
      mapfile -d '' -t targs < <(target_args "$t")
      bin=$(bin_for "$t")
      pinned=()
      if [[ -n $PIN && $mode == rate ]]; then
        # The target runs through a wrapper that moves it onto its core and execs it (same
        # PID, so its CPU is still its own); cujo-load and the sink it starts stay on the rest.
        wrapper="$LOG_DIR/pinned-$t.sh"
        printf '#!/bin/sh\nexec taskset -c %s %q "$@"\n' "$PIN_TARGET" "$(readlink -f "$bin")" > "$wrapper"
        chmod +x "$wrapper"
        bin=$wrapper
        pinned=(taskset -c "$PIN_OTHERS")
      fi
      mode_args=(--mode "$mode" --rate "$RATE" --rate-fraction "$FRACTION")
      [[ $mode == fraction && -n "${saturation[$t]:-}" ]] && mode_args+=(--saturation "${saturation[$t]}")
      ${pinned[@]+"${pinned[@]}"} "$LOAD" "${targs[@]}" --bin "$bin" "${mode_args[@]}" --round "$round" \
        --duration "$DURATION" --warmup "$WARMUP" --clients "$CLIENTS" \
        --json-out "$OUT" --metrics-out "${log%.log}.metrics" "${extra[@]}" > "$log" 2>&1 || rc=$?
      if [[ $rc == 0 ]]; then
        if [[ $mode == saturate ]]; then
          saturation[$t]=$(grep -m1 -o '"spans_per_s":[0-9.e+-]*' <(grep '^{' "$log") | cut -d: -f2)
        fi
        grep -E '^throughput|^latency|^refusals' "$log" | tail -n 3 | sed -E 's/ +/ /g' | tr '\n' ' '
        echo
        grep -E '^polls ' "$log" | sed -E 's/ +/ /g; s/^/    /' || true
        # Refused requests: which shares of cujo's memory budget were full (its /metrics,
        # scraped after the run, are kept beside the log).
        metrics="${log%.log}.metrics"
        if [[ -s $metrics ]] && grep -qE '^refusals +[1-9]' "$log"; then
          { grep -E '^cujo_memory_full_total' "$metrics" | grep -v ' 0$' || true; } | sed 's/^/    /'
        fi
      else
        failures=$((failures + 1))
        echo "FAILED (exit $rc; 3 = span counts did not match) — see $log"
        tail -n 5 "$log" | sed 's/^/    /'
      fi
    done
  done
done

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || true)
echo
echo "Machine: $(nproc) cores${cpu:+, $cpu}; $(git rev-parse --short HEAD 2>/dev/null || echo '?'); rotel $("$ROTEL_BIN" --version 2>/dev/null | awk '{print $2}' || echo '?')."
[[ -n $PIN ]] && echo "Rate mode pinned (--pin): the target alone on core $PIN_TARGET, the load generator and the sink on cores $PIN_OTHERS."
echo "Each run: ${CLIENTS} clients${CONCURRENCY:+ x $CONCURRENCY in flight}, ${WARMUP} warm-up + ${DURATION} measured; rate mode offers ${RATE} spans/s; fraction mode ${FRACTION} of saturation; downstream ${DOWNSTREAM}; medians of ${ROUNDS} rounds; CPU % is of one core (the machine has $(nproc))."
if [[ " ${TARGETS[*]} " == *" cujo-sli-polled "* ]]; then
  echo "cujo-sli-polled: cujo-sli with /api/v1/slos and /metrics each GET ${POLL_RATE}/s (keep-alive HTTP/1.1, ${POLL_CONNECTIONS} connection(s) each, ${POLL_PLAIN:+without}${POLL_PLAIN:-with} Accept-Encoding: gzip) from the warm-up on; the pollers are threads of cujo-load, so their CPU is in its benchmark CPU, not the target's."
fi
echo
"$LOAD" --report "$OUT"
if (( failures > 0 )); then
  echo
  echo "$failures run(s) failed or did not account for every span; see $LOG_DIR" >&2
  exit 1
fi
