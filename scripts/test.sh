#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Tests that need a real server or tool start their own (tests/pg.py, tests/redis_server.py,
# promtool, Debian's chromium through Playwright: never `playwright install`, it downloads).
# Where one is missing, install Debian's package (root with apt-get only, quietly); if that
# fails its tests skip and say why: it never fails the run.
need() {  # need COMMAND PACKAGE WHAT-SKIPS
  local cmd=$1 pkg=$2 what=$3
  command -v "$cmd" >/dev/null && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 0
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq --no-install-recommends "$pkg" \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg"; }
  } >/dev/null 2>&1 || echo "note: $pkg could not be installed; $what will skip"
}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need initdb postgresql "the PostgreSQL tests"
fi
need redis-server redis-server "the service tests"
need promtool prometheus "the alert rules' test"
need chromium chromium "the console's browser test"
exec .venv/bin/python -m pytest -q "$@"
