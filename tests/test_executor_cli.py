"""The executor's command line (``execrl execute / shadow / kill / tca / audit``) end to end,
its one-line user errors, and docs/executor.md kept true to the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from execrl.cli import app

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "executor.md"
FAST = ["--orders", "3", "--no-plots", "--seed", "5"]


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles: str) -> None:
    """A user mistake: exit 2, one line ``error: ...`` naming what was wrong, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("execute") / "run"
    result = invoke("execute", *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# -- execute, audit check, audit rerun, tca ---------------------------------------------------
def test_execute_writes_trail_tca_and_summary(executed: Path) -> None:
    trail = executed / "trail"
    for name in ("decisions.parquet", "children.parquet", "fills.parquet", "trail.json",
                 "trail.sqlite"):
        assert (trail / name).is_file(), name
    assert (executed / "tca.md").is_file() and (executed / "tca.json").is_file()
    summary = json.loads((executed / "summary.json").read_text())
    assert summary["orders"] == 3 and summary["venue"] == "simulated" and summary["seed"] == 5
    assert summary["breaches"] == 0
    decisions = pd.read_parquet(trail / "decisions.parquet")
    assert decisions["order_id"].nunique() == 3
    # the summary's child orders are the trail's
    assert summary["child_orders"] == len(pd.read_parquet(trail / "children.parquet"))
    check = invoke("audit", "check", trail)
    assert check.exit_code == 0 and "consistent" in check.output, check.output


def test_audit_check_finds_a_tampered_trail(executed: Path, tmp_path: Path) -> None:
    import shutil

    trail = tmp_path / "trail"
    shutil.copytree(executed / "trail", trail)
    fills = pd.read_parquet(trail / "fills.parquet")
    fills.iloc[1:].to_parquet(trail / "fills.parquet")  # one fill lost
    result = invoke("audit", "check", trail)
    assert result.exit_code == 1 and "problem:" in result.output, result.output


def test_audit_rerun_of_one_order_is_identical(executed: Path) -> None:
    order_id = pd.read_parquet(executed / "trail" / "decisions.parquet")["order_id"].iloc[-1]
    result = invoke("audit", "rerun", executed / "trail", "--order", order_id)
    assert result.exit_code == 0, result.output
    assert f"order {order_id}:" in result.output and "identical" in result.output


def test_tca_of_a_trail_writes_a_report(executed: Path, tmp_path: Path) -> None:
    out = tmp_path / "tca"
    result = invoke("tca", executed / "trail", "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    report = (out / "tca.md").read_text()
    assert "Perold" in report and "markouts" in report.lower()
    assert json.loads((out / "tca.json").read_text())
    # the same trail gives the same numbers as the report written beside it by execute
    assert (json.loads((out / "tca.json").read_text())
            == json.loads((executed / "tca.json").read_text()))


# -- shadow -----------------------------------------------------------------------------------
def test_shadow_beside_live(tmp_path: Path) -> None:
    out = tmp_path / "shadow"
    result = invoke("shadow", "--orders", "10", "--no-plots", "--policy", "pov:0.1",
                    "--out", out)
    assert result.exit_code == 0, result.output
    for side in ("live", "shadow"):
        assert (out / side / "trail" / "decisions.parquet").is_file()
        assert (out / side / "tca.md").is_file()
        assert invoke("audit", "check", out / side / "trail").exit_code == 0
    commands = [json.loads(line) for line in
                (out / "shadow" / "commands.jsonl").read_text().splitlines()]
    children = pd.read_parquet(out / "shadow" / "trail" / "children.parquet")
    assert len(commands) == len(children) > 0
    for c in commands:  # seed 001 §9.1's child order command
        assert {"parent_id", "type", "qty", "px", "ttl_ms", "venue"} <= set(c)
        assert c["venue"] == "shadow" and c["qty"] > 0
    report = (out / "report.md").read_text()
    assert "pov:0.1" in report and "twap" in report
    assert re.search(r"95% bootstrap CI \[[-+]\d+\.\d+, [-+]\d+\.\d+\]", report), report


def test_shadow_of_the_live_policy_is_refused(tmp_path: Path) -> None:
    result = invoke("shadow", *FAST, "--out", tmp_path / "s")
    one_line_error(result, "'twap'")
    assert not (tmp_path / "s").exists()


# -- kill switch ------------------------------------------------------------------------------
def test_kill_and_release(tmp_path: Path) -> None:
    file = tmp_path / "kill"
    assert invoke("kill", file).exit_code == 0
    assert json.loads(file.read_text())["global"] is True
    assert invoke("kill", file, "--release").exit_code == 0
    assert not file.exists()
    one_line_error(invoke("kill", file, "--release"), "does not exist")
    assert invoke("kill", file, "--order", "A-1", "--policy", "ppo").exit_code == 0
    assert json.loads(file.read_text()) == {"global": False, "orders": ["A-1"],
                                            "policies": ["ppo"]}


def test_release_refuses_a_file_that_is_not_a_kill_file(tmp_path: Path) -> None:
    for text in ("precious notes\n", '{"global": true, "extra": 1}\n', "[1, 2]\n"):
        file = tmp_path / "notes.txt"
        file.write_text(text)
        one_line_error(invoke("kill", file, "--release"), "not a kill file")
        assert file.read_text() == text


def test_kill_file_errors(tmp_path: Path) -> None:
    one_line_error(invoke("kill", tmp_path / "nope" / "kill"), "does not exist")
    one_line_error(invoke("kill", tmp_path), "is a folder")
    one_line_error(invoke("kill", tmp_path, "--release"), "is a folder")
    one_line_error(invoke("kill", tmp_path / "k", "--release", "--order", "A"), "--release")


def test_kill_does_not_overwrite_a_file_that_is_not_a_kill_file(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("precious notes\n")
    one_line_error(invoke("kill", file), "notes.txt", "not a kill file")
    assert file.read_text() == "precious notes\n"
    kill = tmp_path / "kill"
    assert invoke("kill", kill, "--order", "A").exit_code == 0
    assert invoke("kill", kill).exit_code == 0  # a kill file may be rewritten
    assert json.loads(kill.read_text())["global"] is True


@pytest.mark.parametrize("where", ["option", "config"])
def test_a_kill_file_that_could_never_work_is_refused(tmp_path: Path, where: str) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a kill request")
    for path, needle in ((tmp_path, "is a folder"), (tmp_path / "no" / "kill", "does not exist"),
                         (notes, "not a kill file")):
        out = tmp_path / "run"
        args = (["--kill-file", path] if where == "option" else
                ["--config", _yaml(tmp_path, f"kill_file: {path}\n")])
        one_line_error(invoke("execute", *FAST, *args, "--out", out), str(path), needle)
        assert not out.exists()


def test_a_global_kill_file_kills_every_order(tmp_path: Path) -> None:
    file = tmp_path / "kill"
    assert invoke("kill", file).exit_code == 0
    out = tmp_path / "run"
    result = invoke("execute", *FAST, "--out", out, "--kill-file", file)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_by"] == {"killed": 3}
    assert summary["child_orders"] == 0 and summary["fill_rate"] == 0.0
    assert len(pd.read_parquet(out / "trail" / "children.parquet")) == 0
    decisions = pd.read_parquet(out / "trail" / "decisions.parquet")
    assert (decisions["acting"] == "killed").all() and (decisions["child_qty"] == 0).all()
    assert invoke("audit", "check", out / "trail").exit_code == 0


def test_a_per_order_kill_stops_that_order_alone(tmp_path: Path) -> None:
    file = tmp_path / "kill"
    assert invoke("kill", file, "--order", "LOB-1#1").exit_code == 0
    out = tmp_path / "run"
    assert invoke("execute", *FAST, "--out", out, "--kill-file", file).exit_code == 0
    orders = pd.read_parquet(out / "trail" / "decisions.parquet").groupby("order_id")
    killed = {oid for oid, d in orders if (d["acting"] == "killed").all()}
    assert killed == {"LOB-1#1"}
    children = pd.read_parquet(out / "trail" / "children.parquet")
    assert "LOB-1#1" not in set(children["parent_id"]) and len(children) > 0


def test_rerun_of_an_order_beside_one_killed_at_the_start(tmp_path: Path) -> None:
    file = tmp_path / "kill"
    assert invoke("kill", file, "--order", "LOB-1#1").exit_code == 0
    out = tmp_path / "run"
    assert invoke("execute", *FAST, "--out", out, "--kill-file", file).exit_code == 0
    for order in ("LOB-1#2", "LOB-1#1"):  # beside the killed order, and the killed one
        result = invoke("audit", "rerun", out / "trail", "--order", order)
        assert result.exit_code == 0 and "identical" in result.output, result.output


def test_a_kill_file_in_the_config_is_read(tmp_path: Path) -> None:
    file = tmp_path / "kill"
    assert invoke("kill", file).exit_code == 0
    config = tmp_path / "exec.yaml"
    config.write_text(f"kill_file: {file}\n")
    out = tmp_path / "run"
    assert invoke("execute", *FAST, "--config", config, "--out", out).exit_code == 0
    assert json.loads((out / "summary.json").read_text())["finished_by"] == {"killed": 3}


# -- the YAML configuration -------------------------------------------------------------------
SEED_RISK = """\
risk:
  participation_cap: 0.10
  price_band_ticks: 5
  child_max: 15000
  fallback: "almgren_chiss"
"""


def test_the_seeds_risk_block_runs(tmp_path: Path) -> None:
    from execrl.executor.config import ExecutorConfig

    config = tmp_path / "exec.yaml"
    config.write_text(SEED_RISK)
    cfg = ExecutorConfig.load(config)
    assert cfg.fallback == "almgren_chriss"
    limits = cfg.risk_limits(tick_size=0.05, ref_price=50.0)
    assert limits.participation == 0.10 and limits.child_max == 15000
    assert limits.price_band_bps == pytest.approx(5 * 0.05 / 50.0 * 1e4)  # 5 ticks = 50 bps
    out = tmp_path / "run"
    result = invoke("execute", *FAST, "--config", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["breaches"] == 0


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "needles"), [
    ("policy:\n  type: twap\nfoo: 1\n", ("'foo'",)),
    ("policy: [\n", ("exec.yaml", "line")),
    ("risk:\n  child_max: -5\n", ("child_max", "-5", "exec.yaml")),
    ("risk:\n  chld_max: 5\n", ("chld_max",)),
    ("risk:\n  participation_cap: 1.5\n", ("participation", "1.5")),
    ("risk:\n  price_band_ticks: 5\n  price_band_bps: 3\n", ("price_band_ticks",
                                                          "price_band_bps")),
    ("risk:\n  price_band_ticks: -1\n", ("price_band_ticks", "-1")),
    ("risk: 5\n", ("'risk'", "5")),
    ("watchdog:\n  min_confidence: 2\n", ("min_confidence", "2", "exec.yaml")),
    ("watchdog:\n  min_confidnce: 0.5\n", ("min_confidnce",)),
    ("watchdog:\n  drift_scope: everyone\n", ("drift_scope", "everyone")),
    ("risk:\n  fallback: twap\nfallback: vwap\n", ("fallback", "once")),
    ("risk:\n  fallback: twap\nwatchdog:\n  fallback: vwap\n", ("fallback", "once")),
    ("fallback: vwapp\n", ("fallback", "vwapp")),
    ("policy:\n  type: twap\n  action_set: {size: [1, 2]}\n", ("action_set", "seed001")),
    ("policy:\n  type: twap\n  action_set: seed999\n", ("action_set", "seed999")),
    ("- 1\n", ("mapping",)),
    ("policy:\n  type: ppo\n", ("'policy.type'", "'ppo'", "policy.checkpoint")),
    ("policy:\n  type: ppo\n  checkpoint: no/such/run\n", ("no/such/run",)),
])
def test_config_mistakes_are_one_line(tmp_path: Path, text: str, needles: tuple[str, ...]
                                      ) -> None:
    out = tmp_path / "run"
    one_line_error(invoke("execute", *FAST, "--config", _yaml(tmp_path, text), "--out", out),
                   *needles)
    assert not out.exists()


def test_price_band_in_ticks_on_a_market_without_ticks(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke("execute", *FAST, "--env", "ac", "--config",
                    _yaml(tmp_path, "risk:\n  price_band_ticks: 5\n"), "--out", out)
    one_line_error(result, "price_band_ticks", "price_band_bps")
    assert not out.exists()


@pytest.mark.parametrize(("args", "needles"), [
    (("--venue", "nasdaq"), ("--venue", "nasdaq")),
    (("--policy", "twapp"), ("twapp",)),
    (("--policy", "pov:lots"), ("pov",)),
    (("--policy", ":0.1"), ("--policy", "label")),
    (("--env", "moon"), ("--env", "moon")),
    (("--config", "no-such.yaml"), ("no-such.yaml",)),
])
def test_option_mistakes_are_one_line(tmp_path: Path, args: tuple[str, ...],
                                      needles: tuple[str, ...]) -> None:
    out = tmp_path / "run"
    one_line_error(invoke("execute", *FAST, *args, "--out", out), *needles)
    assert not out.exists()


def test_trail_mistakes_are_one_line(executed: Path, tmp_path: Path) -> None:
    one_line_error(invoke("audit", "check", tmp_path), "not an audit trail")
    one_line_error(invoke("audit", "rerun", tmp_path, "--order", "X"), "not an audit trail")
    one_line_error(invoke("tca", tmp_path, "--out", tmp_path / "t"), "not an audit trail")
    assert not (tmp_path / "t").exists()
    one_line_error(invoke("audit", "rerun", executed / "trail", "--order", "NOPE-1"),
                   "'NOPE-1'")


def test_sql_url_mistakes_are_one_line(executed: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    one_line_error(invoke("execute", *FAST, "--sql-url", "nosuch://x", "--out", out),
                   "--sql-url", "nosuch")
    one_line_error(invoke("execute", *FAST, "--sql-url", "not a url", "--out", out),
                   "not a url")
    one_line_error(invoke("execute", *FAST, "--config",
                          _yaml(tmp_path, "audit:\n  sql_url: nosuch://x\n"), "--out", out),
                   "audit.sql_url", "nosuch")
    one_line_error(invoke("tca", executed / "trail", "--sql-url", "nosuch://x", "--out", out),
                   "nosuch")
    one_line_error(invoke("audit", "check", executed / "trail", "--sql-url", "nosuch://x"),
                   "nosuch")
    assert not out.exists()
    # a database that cannot be reached: one line too, exit 1 (not a mistake in the command)
    unreachable = f"sqlite:///{tmp_path}/no/such/folder/x.db"
    result = invoke("execute", *FAST, "--sql-url", unreachable, "--out", out)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --sql-url") and "cannot connect" in lines[0]
    assert not out.exists()


def test_config_sql_url_is_used(tmp_path: Path) -> None:
    db = tmp_path / "desk.sqlite"
    out = tmp_path / "run"
    config = _yaml(tmp_path, f"audit:\n  sql_url: sqlite:///{db}\n")
    assert invoke("execute", *FAST, "--config", config, "--out", out).exit_code == 0
    assert db.is_file() and not (out / "trail" / "trail.sqlite").exists()
    assert invoke("audit", "check", out / "trail", "--sql-url", f"sqlite:///{db}"
                  ).exit_code == 0


def test_tca_never_replaces_the_trail_it_reads(executed: Path) -> None:
    for out in (executed, executed / "trail"):
        one_line_error(invoke("tca", executed / "trail", "--out", out, "--force"),
                       "holds the trail")
    assert invoke("audit", "check", executed / "trail").exit_code == 0


def test_foreign_out_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    one_line_error(invoke("execute", *FAST, "--out", out), "--out", "notes.txt", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    one_line_error(invoke("tca", tmp_path, "--out", out), "not an audit trail")
    assert invoke("execute", *FAST, "--out", out, "--force").exit_code == 0
    assert not (out / "notes.txt").exists() and (out / "summary.json").is_file()


def test_rerunning_into_its_own_out_needs_no_force(executed: Path) -> None:
    """What execrl wrote there it may replace."""
    before = json.loads((executed / "summary.json").read_text())
    assert invoke("execute", *FAST, "--out", executed).exit_code == 0
    after = json.loads((executed / "summary.json").read_text())
    assert {k: v for k, v in after.items() if k != "run_id"} == {
        k: v for k, v in before.items() if k != "run_id"}  # same inputs, same run


# -- the docs stay true to the code -------------------------------------------------------------
def test_docs_name_every_limit_watchdog_field_trigger_and_state() -> None:
    from execrl.executor.config import ExecutorConfig, PolicyConfig
    from execrl.safety.guard import GUARD_REASONS, RiskLimits
    from execrl.safety.watchdog import STATES, TRIGGERS, WatchdogConfig

    text = DOCS.read_text(encoding="utf-8")
    names = [*RiskLimits.model_fields, *WatchdogConfig.model_fields, *TRIGGERS,
             *ExecutorConfig.model_fields, *PolicyConfig.model_fields]
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"docs/executor.md does not name {missing}"
    missing_states = [s for s in STATES if s.upper() not in text]
    assert not missing_states, missing_states
    missing_reasons = [r for r in GUARD_REASONS if r and r not in text]
    assert not missing_reasons, f"docs/executor.md does not list guard reasons {missing_reasons}"


def test_a_learned_policy_under_the_pooled_drift_watchdog_re_runs_identically(tmp_path: Path):
    """The drift trigger pools the policy's decisions over the whole batch: a re-run of one
    order must run the whole batch again (a re-run of the first orders alone diverged)."""
    agent = tmp_path / "q"
    trained = invoke("train", "--algo", "qtable", "--steps", "200000", "--out", agent)
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "run"
    ran = invoke("execute", "--env", "ac", "--policy", f"q:{agent}", "--orders", "50",
                 "--no-plots", "--out", out)
    assert ran.exit_code == 0, ran.output
    decisions = pd.read_parquet(out / "trail" / "decisions.parquet")
    assert (decisions["acting"] == "fallback").any()  # the watchdog took orders over
    for order in ("DEMO-1#3", "DEMO-1#49"):
        result = invoke("audit", "rerun", out / "trail", "--order", order)
        assert result.exit_code == 0 and "identical" in result.output, result.output
