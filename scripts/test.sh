#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The audit trail's PostgreSQL test starts a server of its own (tests/pg.py); where none is
# installed, try Debian's package (root with apt-get only, quietly). If that fails the test skips
# and says why; it never fails the run.
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq postgresql || { apt-get update -qq && apt-get install -y -qq postgresql; }
    } >/dev/null 2>&1 || echo "note: PostgreSQL could not be installed; its audit test will skip"
  fi
fi
# The service's tests (execrl serve / feed) start a throwaway redis-server of their own
# (tests/redis_server.py); the same way, install Debian's where it is missing.
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq redis-server || { apt-get update -qq && apt-get install -y -qq redis-server; }
    } >/dev/null 2>&1 || echo "note: redis-server could not be installed; the service tests will skip"
  fi
fi
# The alert rules' test runs promtool (Debian's prometheus package) the same way.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends prometheus \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }
    } >/dev/null 2>&1 || echo "note: promtool could not be installed; the alert rules' test will skip"
  fi
fi
# The console's browser test (tests/test_console_browser.py) drives Debian's chromium through
# Playwright (never `playwright install`: it downloads); the same way, install it where missing.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends chromium \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }
    } >/dev/null 2>&1 || echo "note: chromium could not be installed; the console's browser test will skip"
  fi
fi
exec .venv/bin/python -m pytest -q "$@"
