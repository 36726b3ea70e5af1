"""Fuzzing what a user hands to the command line: order, market and config files and the
options. For every input, ``execrl`` either runs (exit 0) or refuses it with exit 2 and one
line ``error: ...`` on stderr, no traceback, and nothing written to ``--out``.

Files are random JSON (and TOML) documents built around valid ones: fields set to random
values of any type, extreme numbers (huge and tiny floats, 2**63, 5000-digit integers, NaN,
Infinity, 1e400), duplicate keys, nested garbage, other top levels, and bytes that are not
UTF-8 or cut short. Runs are derandomised (the same examples every time) and small, so the
file stays fast enough for every CI run.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from execrl.cli import app
from execrl.sim.almgren_chriss import ACMarketConfig

runner = CliRunner()

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Orders per policy in a fuzzed run: enough for the statistics, small enough to be quick.
ORDERS = "10"

# Text includes "[": an error line quotes the user's text and must never read it as markup.
_TEXT = st.text(st.characters(codec="utf-8"), max_size=8)


def check_outcome(result: Result, out: Path) -> None:
    """Exit 0, or exit 2 with one ``error:`` line on stderr and nothing written."""
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert result.exception is None
        return
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.exception!r}\n{result.output}"
    # warnings (an order the limits cannot complete, a run too small) may precede the error
    lines = [
        line for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("warning:")
    ]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not out.exists(), f"refused, yet {out} was written"


def invoke(args: Sequence[str], files: dict[str, bytes]) -> None:
    """Write ``files`` into a fresh folder, run ``execrl`` on ``args`` (``{dir}`` replaced by
    the folder, ``--out`` given as ``{dir}/out``) and check the outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, content in files.items():
            (folder / name).write_bytes(content)
        result = runner.invoke(app, [a.replace("{dir}", tmp) for a in args])
        check_outcome(result, folder / "out")


# -- JSON documents, with what json.dumps cannot write ------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A literal written as is: NaN, 1e400, an integer of 5000 digits."""

    text: str


@dataclass(frozen=True)
class Obj:
    """A JSON object as a list of pairs, so that a key can appear twice."""

    pairs: tuple[tuple[str, Any], ...]


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{_json(k)}: {dump(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dump(v) for v in value) + "]"
    return _json(value)


def _json(value: Any) -> str:
    # NaN and Infinity floats become those literals; text stays text (UTF-8 in the file)
    return json.dumps(value, ensure_ascii=False)


def to_obj(data: dict[str, Any]) -> Obj:
    return Obj(tuple((k, to_obj(v) if isinstance(v, dict) else v) for k, v in data.items()))


RAW_LITERALS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0",
                "9" * 41, "9" * 5000, "1" + "0" * 308 + ".5", '"\\ud800"', '"a\\u0000b"']
EXTREME_NUMBERS = [0, 1, -1, 2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
                   10**12, 10**12 + 1, 0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1e-300,
                   1e-9, 1e-3, 0.5, 1.0 - 1e-16, 1e9, 1e15, 1e300, 1.7976931348623157e308]

numbers = st.one_of(
    st.sampled_from(EXTREME_NUMBERS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and +-inf included
    st.builds(lambda m, e: m * 10.0**e, st.floats(1.0, 9.99), st.integers(-320, 308)),
    st.sampled_from(RAW_LITERALS).map(Raw),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, _TEXT)
garbage = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(st.sampled_from(["a", "qty", "sigma", "x"]) | _TEXT, inner),
                 max_size=3).map(lambda pairs: Obj(tuple(pairs))),
    ),
    max_leaves=6,
)
values = st.one_of(numbers, numbers, numbers, garbage)


#: a positive number of any magnitude, as an integer or a float (a valid-looking extreme)
magnitudes = st.one_of(
    st.builds(lambda m, e: m * 10.0**e, st.floats(1.0, 9.99), st.integers(-320, 308)),
    st.builds(lambda m, e: int(m * 10**e), st.integers(1, 9), st.integers(0, 25)),
)


@st.composite
def edited(draw: st.DrawFn, base: dict[str, Any], fields: Sequence[str]) -> Any:
    """``base`` with up to three edits: mostly a field set to a number of any magnitude or a
    random value, else a field removed, given twice or a new key; now and then a document
    that is not an object at all."""
    if draw(st.integers(0, 15)) == 0:
        return draw(garbage)
    pairs = list(to_obj(base).pairs)
    for _ in range(draw(st.integers(0, 3))):
        edit = draw(st.integers(0, 9))
        key = draw(st.sampled_from(list(fields)))
        if edit <= 6:  # set: a magnitude, an extreme number or anything
            value = draw(magnitudes if edit <= 3 else numbers if edit <= 5 else garbage)
            pairs = [(k, v) for k, v in pairs if k != key] + [(key, value)]
        elif edit == 7:
            pairs = [(k, v) for k, v in pairs if k != key]
        elif edit == 8:
            pairs.append((key, draw(values)))
        else:
            pairs.append((draw(_TEXT), draw(values)))
    return Obj(tuple(pairs))


@st.composite
def file_bytes(draw: st.DrawFn, text: str) -> bytes:
    """The document's bytes: mostly UTF-8, else with a byte-order mark, a byte that is not
    UTF-8, in UTF-16, or cut short."""
    data = text.encode("utf-8", errors="surrogatepass")
    how = draw(st.sampled_from(["utf-8"] * 7 + ["bom", "bad byte", "utf-16", "cut"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "bad byte":
        at = draw(st.integers(0, len(data)))
        return data[:at] + bytes([draw(st.integers(0x80, 0xFF))]) + data[at:]
    if how == "utf-16":
        return text.encode("utf-16", errors="surrogatepass")
    if how == "cut":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    return data


# -- order files ----------------------------------------------------------------------------------

GOOD_ORDER: dict[str, Any] = {
    "order_id": "ABC-123", "symbol": "AAPL", "side": "sell", "qty": 250000, "arrival_px": 187.53,
    "start_ts": 1693564800, "end_ts": 1693568400,
    "constraints": {"participation": 0.1, "price_band_bps": 5, "child_max": 15000},
}
ORDER_FIELDS = ["order_id", "symbol", "side", "qty", "qty", "arrival_px", "arrival_px",
                "start_ts", "end_ts", "horizon_s", "horizon_s", "constraints"]


@st.composite
def order_files(draw: st.DrawFn) -> bytes:
    doc = draw(edited(GOOD_ORDER, ORDER_FIELDS))
    if isinstance(doc, Obj) and draw(st.booleans()):  # edit the constraints too
        constraints = draw(edited(GOOD_ORDER["constraints"],
                                  ["participation", "price_band_bps", "child_max"]))
        doc = Obj(tuple((k, constraints if k == "constraints" else v) for k, v in doc.pairs))
    return draw(file_bytes(dump(doc)))


@settings(FUZZ, max_examples=35)
@given(order=order_files(), side=st.sampled_from(["sell", "buy"]))
def test_fuzzed_order_file_runs_or_is_refused_in_one_line(order: bytes, side: str) -> None:
    if side == "buy":
        order = order.replace(b'"sell"', b'"buy"')
    invoke(["evaluate", "--orders", ORDERS, "--policies", "twap,ac", "--order", "{dir}/o.json",
            "--out", "{dir}/out"], {"o.json": order})


# -- market files ---------------------------------------------------------------------------------

#: what a market file may set (horizon and s0 are the order's: refused, tried now and then)
MARKET_FIELDS = [f for f in ACMarketConfig.model_fields if f not in ("horizon", "s0")]
market_values = st.one_of(magnitudes, magnitudes, magnitudes, st.integers(0, 20_000), values)
signals = st.one_of(
    st.builds(lambda k, s: Obj((("kappa", k), ("sigma", s))), market_values, market_values),
    garbage,
)


@st.composite
def market_files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 15)) == 0:
        return draw(file_bytes(dump(draw(garbage))))
    keys = draw(st.lists(st.sampled_from(MARKET_FIELDS), max_size=4, unique=True))
    if draw(st.integers(0, 7)) == 0:
        keys.append(draw(st.sampled_from(["horizon", "s0", "volatility", *keys])))
    pairs = tuple((k, draw(signals if k == "signal" else market_values)) for k in keys)
    return draw(file_bytes(dump(Obj(pairs))))


@settings(FUZZ, max_examples=35)
@given(market=market_files(), env=st.sampled_from(["ac", "ac-signal"]))
def test_fuzzed_market_file_runs_or_is_refused_in_one_line(market: bytes, env: str) -> None:
    policies = "twap,ac" + (",signal_aware" if env == "ac-signal" else "")
    invoke(["evaluate", "--orders", ORDERS, "--env", env, "--policies", policies,
            "--market", "{dir}/m.json", "--out", "{dir}/out"], {"m.json": market})


# -- valid-looking extreme numbers: they run to finite results or are refused by name --------

@st.composite
def sizes(draw: st.DrawFn, low: int, high: int) -> float:
    """A positive float, mostly between 10**low and 10**high, else anywhere in float64."""
    wide = draw(st.sampled_from([False] * 9 + [True]))
    exponent = draw(st.integers(-320, 308) if wide else st.integers(low, high))
    return draw(st.floats(1.0, 9.99)) * 10.0**exponent


@st.composite
def extreme_runs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], str]:
    order = {k: v for k, v in GOOD_ORDER.items() if k != "end_ts"}
    order["horizon_s"] = draw(sizes(-3, 8))
    order["qty"] = draw(st.builds(lambda m, e: m * 10**e, st.integers(1, 9), st.integers(0, 11))
                        | st.sampled_from([1, 10**12]))
    if draw(st.booleans()):
        order["arrival_px"] = draw(sizes(-3, 8))
    order["constraints"] = draw(st.fixed_dictionaries({}, optional={
        "participation": st.floats(1e-9, 1.0), "child_max": st.integers(1, 10**13)}))
    market_fields = ["sigma", "eta", "gamma", "epsilon", "drift", "risk_aversion", "time_unit_s",
                     "adv", "vol_multiplier"]
    market = {k: draw(sizes(-12, 12)) for k in draw(st.lists(st.sampled_from(market_fields),
                                                    max_size=4, unique=True))}
    if draw(st.booleans()):
        market["n_steps"] = draw(st.integers(1, 50))
    env = draw(st.sampled_from(["ac", "ac", "ac-signal"]))
    if env == "ac-signal" and draw(st.booleans()):
        market["signal"] = {"kappa": draw(sizes(-6, 6)), "sigma": draw(sizes(-6, 6))}
    return order, market, env


@settings(FUZZ, max_examples=20)
@given(run=extreme_runs())
def test_fuzzed_extreme_numbers_run_finite_or_are_refused_by_name(
    run: tuple[dict[str, Any], dict[str, Any], str],
) -> None:
    order, market, env = run
    policies = "twap,pov,ac" + (",signal_aware" if env == "ac-signal" else "")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "o.json").write_text(json.dumps(order))
        (folder / "m.json").write_text(json.dumps(market))
        result = runner.invoke(app, [
            "evaluate", "--orders", ORDERS, "--env", env, "--policies", policies, "--order",
            f"{tmp}/o.json", "--market", f"{tmp}/m.json", "--out", f"{tmp}/out"])
        check_outcome(result, folder / "out")
        if result.exit_code == 0:  # every number written is finite
            results = (folder / "out" / "results.json").read_text()
            json.loads(results, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
            episodes = pd.read_parquet(folder / "out" / "episodes.parquet")
            assert np.isfinite(episodes.select_dtypes("number").to_numpy(np.float64)).all()


# -- --config files (train) -----------------------------------------------------------------------

QTABLE_CONFIG: dict[str, Any] = {
    "mode": "training",
    "q_learning": {"alpha": 0.1, "gamma": 0.99, "epsilon": 0.3, "epsilon_min": 0.05},
    "state": {"remaining_buckets": 5, "time_buckets": 10},
    "replay_buffer": {"batch_size": 32, "update_frequency": 10},
}
CONFIG_KEYS = ["mode", "q_learning", "state", "replay_buffer", "rl_execution", "enabled"]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, Raw):
        return value.text.lower()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, Obj):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.pairs
                               if v is not None) + "}"
    return json.dumps(value)


def toml_text(doc: Obj) -> str:
    """``doc`` in TOML: scalars first, then one table per object (keys may repeat)."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.pairs
             if v is not None and not isinstance(v, Obj)]
    for key, table in doc.pairs:
        if isinstance(table, Obj):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.pairs
                      if v is not None]
    return "\n".join(lines) + "\n"


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, bytes]:
    doc = draw(edited(QTABLE_CONFIG, CONFIG_KEYS))
    if isinstance(doc, Obj) and draw(st.booleans()):
        section = draw(st.sampled_from(["q_learning", "state", "replay_buffer"]))
        inner = draw(edited(QTABLE_CONFIG[section], [*QTABLE_CONFIG[section], "capacity"]))
        doc = Obj(tuple((k, inner if k == section else v) for k, v in doc.pairs))
    if isinstance(doc, Obj) and draw(st.booleans()):
        return "c.toml", draw(file_bytes(toml_text(doc)))
    return "c.json", draw(file_bytes(dump(doc)))


@settings(FUZZ, max_examples=30)
@given(config=config_files())
def test_fuzzed_config_file_trains_or_is_refused_in_one_line(config: tuple[str, bytes]) -> None:
    name, content = config
    invoke(["train", "--algo", "qtable", "--steps", "64", "--n-envs", "4", "--config",
            f"{{dir}}/{name}", "--out", "{dir}/out"], {name: content})


# -- options --------------------------------------------------------------------------------------

POLICY_NAMES = ["twap", "vwap", "pov", "ac", "immediate", "signal_aware", "qtable", "ppo"]
policy_params = st.one_of(
    st.sampled_from(["", "0", "0.1", "1", "-1", "nan", "inf", "1e300", "1e400", "x", "runs/x",
                     "1:2"]),
    numbers.filter(lambda n: not isinstance(n, Raw)).map(repr),
    _TEXT,
)
policy_specs = st.one_of(
    st.sampled_from(["twap", "vwap", "pov", "ac", "immediate", "pov:0.2", "ac:2e-6", "ac:0"]),
    st.sampled_from(["twap", "vwap", "pov", "ac", "immediate", "pov:0.2", "ac:2e-6", "ac:0"]),
    st.builds(lambda name, param: f"{name}:{param}", st.sampled_from(POLICY_NAMES), policy_params),
    _TEXT,
)
policy_lists = st.one_of(
    st.lists(policy_specs, min_size=1, max_size=3, unique=True).map(",".join),
    st.lists(policy_specs, max_size=3).map(",".join),
)


@settings(FUZZ, max_examples=15)
@given(
    orders=st.one_of(st.integers(1, 30), st.integers(-5, 0), st.integers(10**8, 10**12)),
    seed=st.one_of(st.integers(0, 2**32), st.integers(-(2**80), 2**80)),
    policies=policy_lists,
    compare_to=policy_lists,
    env=st.sampled_from(["ac", "ac", "ac", "ac-signal", "lob", "", "AC", " ac"]),
)
def test_fuzzed_options_run_or_are_refused_in_one_line(
    orders: int, seed: int, policies: str, compare_to: str, env: str
) -> None:
    invoke(["evaluate", "--orders", str(orders), "--seed", str(seed), "--policies", policies,
            "--compare-to", compare_to, "--env", env, "--out", "{dir}/out"], {})


# -- what the fuzzing found beyond the input files (fixed in the CLI; kept as cases) --------------


@pytest.mark.parametrize(
    ("args", "files"),
    [
        (["--seed", "-1"], {}),  # was a numpy ValueError traceback
        (["--orders", "0"], {}),  # was click's multi-line usage box
        (["--orders", "abc"], {}),
        (["--seed", "abc"], {}),
        (["--orders", "1000000000"], {}),  # allocated tens of GiB before anything was checked
        (["--policies", "[/red]"], {}),  # the error line was printed as Rich markup
        (["--env", "a[/]"], {}),
        (["--market", "{dir}/m.json"], {"m.json": b'{"[/red]": 1}'}),
        (["--policies", "ppo:" + "x" * 300], {}),  # Path.is_dir raised: name too long
    ],
)
def test_what_fuzzing_found_is_one_line(args: list[str], files: dict[str, bytes]) -> None:
    invoke(["evaluate", "--orders", ORDERS, "--policies", "twap", *args, "--out", "{dir}/out"],
           files)


def test_train_n_envs_beyond_memory_is_one_line() -> None:
    invoke(["train", "--algo", "qtable", "--steps", "10", "--n-envs", "1000000000",
            "--out", "{dir}/out"], {})
