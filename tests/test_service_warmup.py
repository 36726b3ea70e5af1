"""`Server.warm_up`: the policy's and the market's compiled kernels are loaded before the first
order is read, so no order's first decision carries them as latency (the first TWAP decision
of a fresh server: 8–9 ms without it, 0.04 ms with it, against the watchdog's 0.1 s cap).
No Redis: the probe runs in the process, on the configured venue."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from execrl.domain import ConfigError
from lobster_data import goog

GOOG_1 = goog(1)

# A fresh process, so that nothing else loaded the kernels first: numba's dispatchers list a
# signature once it is compiled or loaded from the cache.
_PROBE = """
import json, sys
from execrl.policies.baselines import _schedule_act
from execrl.safety.watchdog import _check
from execrl.service.serve import ServeConfig, Server
from execrl.sim.spec import parse_market

market, venue = parse_market(json.loads(sys.argv[1])), sys.argv[2]
logs = []
server = Server(None, ServeConfig(market=market, venue=venue), log=logs.append)
before = [len(_schedule_act.signatures), len(_check.signatures)]
took = server.warm_up()
print(json.dumps({"before": before, "after": [len(_schedule_act.signatures),
                  len(_check.signatures)], "took": took, "logs": logs}))
"""


@pytest.mark.parametrize("market, venue", [
    ({"model": "almgren_chriss"}, "paper"),
    ({"model": "almgren_chriss"}, "stream"),
    ({"model": "replay", "data": str(GOOG_1), "n_steps": 10}, "stream"),
])
def test_warm_up_loads_the_policy_and_the_watchdog_before_the_first_order(market, venue):
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(market), venue],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == [0, 0]
    assert got["after"][0] >= 1 and got["after"][1] >= 1  # the TWAP policy's, the watchdog's
    assert isinstance(got["took"], float) and got["took"] > 0
    assert len(got["logs"]) == 1 and got["logs"][0].startswith("serve: warmed up in ")
    assert out.stderr == ""  # the probe prints nothing of its own


def test_a_warm_up_that_fails_is_one_line_and_the_server_goes_on(monkeypatch):
    from execrl import executor_cli
    from execrl.presets import preset_market
    from execrl.service.serve import ServeConfig, Server

    def refuse(*_a, **_k):
        raise ConfigError("executor config policy.type = 'nope' is unknown")

    monkeypatch.setattr(executor_cli, "build_executor", refuse)
    logs: list[str] = []
    server = Server(None, ServeConfig(market=preset_market("ac")), log=logs.append)
    assert server.warm_up() is None
    assert logs == ["serve: warm-up skipped (ConfigError: executor config policy.type = 'nope' "
                    "is unknown); the first orders load the compiled kernels"]


def test_a_market_that_refuses_the_probe_order_is_named_in_the_one_line():
    """The probe is the market's default order (a replay's: 30 minutes); a replay of 650 s of
    data refuses it, and the server says so and goes on."""
    from execrl.service.serve import ServeConfig, Server
    from execrl.sim.spec import parse_market

    market = parse_market({"model": "replay", "data": "synthetic:1", "horizon": 60.0})
    logs: list[str] = []
    server = Server(None, ServeConfig(market=market, venue="stream"), log=logs.append)
    assert server.warm_up() is None
    assert len(logs) == 1 and logs[0].startswith("serve: warm-up skipped (ConfigError: market "
                                                 "field 'horizon' = 1800 s does not fit")
