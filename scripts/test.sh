#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, unit, property and black-box tests
# (the real binary, real OpenTelemetry SDK clients, real promtool).
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool checks the /metrics output; install it when missing (Debian's prometheus package).
if ! command -v promtool >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing promtool (Debian package prometheus)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool not found: install the prometheus package (promtool check is required under CI)" >&2
  fi
fi

# The status page test drives headless Chromium through chromedriver; install them when
# missing (Debian's chromium and chromium-driver). Without them that test fails and says why.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing chromium and chromedriver (Debian packages chromium, chromium-driver)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium or chromedriver not found: install the chromium and chromium-driver packages (the status page test needs them)" >&2
  fi
fi

# The OpenMetrics scrape is checked with the reference parser (Python prometheus_client).
if ! python3 -c "import prometheus_client" >/dev/null 2>&1; then
  if command -v python3 >/dev/null 2>&1; then
    echo "installing prometheus_client (PyPI) for the OpenMetrics parser check"
    python3 -m pip install -q prometheus_client >/dev/null 2>&1 \
      || python3 -m pip install -q --break-system-packages prometheus_client >/dev/null 2>&1 \
      || echo "could not install prometheus_client (required under CI)" >&2
  else
    echo "python3 not found: the OpenMetrics parser check needs python3 with prometheus_client" >&2
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# --workspace includes fuzz/ (not a default member): its tests replay every saved fuzz corpus
# input through its target and run a bounded, deterministic mutation smoke (docs/fuzzing.md).
cargo test --workspace --all-targets --locked
