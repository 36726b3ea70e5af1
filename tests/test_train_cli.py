"""`execrl train` as a user meets it: an algorithm whose optional extra is missing is one line
naming the extra and its install command; the hint printed after training is the evaluate
command that runs the agent where it was trained."""

from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from execrl.agents import train as train_module
from execrl.agents.train import ALGO_EXTRAS, ALGOS, EXTRAS, check_extra, import_algorithm
from execrl.cli import app
from execrl.domain import ConfigError

runner = CliRunner()
QUICK = ["--steps", "640", "--n-envs", "64"]


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


# -- a missing optional extra --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("algo", "blocked", "extra"),
    [("ppo", "stable_baselines3", "rl"), ("maskable-ppo", "sb3_contrib", "rl"),
     ("dqn", "torch", "rl"), ("qrdqn", "sb3_contrib", "rl"), ("cql", "d3rlpy", "offline"),
     ("bc", "d3rlpy", "offline")],
)
def test_an_algorithm_without_its_extra_is_one_line_naming_it(
    algo: str, blocked: str, extra: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # `import blocked` now fails, as if absent
    args = ["train", "--algo", algo, "--out", str(tmp_path / "ckpt")]
    if algo in ("bc", "cql"):
        (tmp_path / "log.parquet").write_bytes(b"")
        args += ["--data", str(tmp_path / "log.parquet")]
    line = one_error_line(runner.invoke(app, args))
    assert f"--algo {algo} needs the '{extra}' extra" in line
    assert f"no module '{blocked}'" in line
    assert f"pip install 'execrl[{extra}]'" in line
    assert not (tmp_path / "ckpt").exists()


def test_every_algorithm_names_its_extra_or_needs_none() -> None:
    assert set(ALGO_EXTRAS) == set(ALGOS) - {"qtable"}
    assert set(ALGO_EXTRAS.values()) <= set(EXTRAS)
    # the extras are the package's own (pyproject's optional dependencies)
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    for extra in EXTRAS:
        assert f"\n{extra} = [" in text


def test_the_tabular_agent_needs_no_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("torch", "stable_baselines3", "sb3_contrib", "d3rlpy"):
        monkeypatch.setitem(sys.modules, module, None)
    check_extra("qtable")
    result = runner.invoke(app, ["train", "--algo", "qtable", "--out", str(tmp_path / "q"),
                                 *QUICK])
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match=r"needs the 'rl' extra"):
        check_extra("ppo")


def test_a_package_that_fails_to_import_is_the_same_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the check but failing on import (a half-installed extra): one line, while a
    missing module that is no part of the extra stays a bug (re-raised)."""
    real = importlib.import_module

    def failing(missing: str):
        def fake(module: str, *args, **kwargs):
            if module.startswith("execrl.agents."):
                raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
            return real(module, *args, **kwargs)
        return fake

    monkeypatch.setattr(train_module.importlib, "import_module",
                        failing("sb3_contrib.common"))
    with pytest.raises(ConfigError, match=r"--algo ppo needs the 'rl' extra.*'sb3_contrib'"):
        import_algorithm("ppo")
    monkeypatch.setattr(train_module.importlib, "import_module", failing("not_an_extra"))
    with pytest.raises(ModuleNotFoundError):
        import_algorithm("ppo")


# -- the evaluate hint --------------------------------------------------------------------------
def _hint(output: str) -> list[str]:
    prefix = "evaluate it where it was trained: "
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output
    args = shlex.split(lines[0][len(prefix):])
    assert args[:2] == ["execrl", "evaluate"]
    return args[2:]


def test_the_hint_evaluates_the_agent_where_it_was_trained(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    Path("my market.json").write_text(json.dumps({"sigma": 1.2, "eta": 3e-6}))
    Path("order.json").write_text(json.dumps({
        "order_id": "B-1", "symbol": "X", "side": "buy", "qty": 400_000, "arrival_px": 20.0,
        "start_ts": 0, "horizon_s": 2 * 23_400.0}))
    trained = runner.invoke(app, [
        "train", "--algo", "qtable", "--env", "ac-signal", "--market", "my market.json",
        "--order", "order.json", "--observations", "signal", "--actions", "seed003",
        "--reward", "is_bps", "--out", "runs/q 1", *QUICK])
    assert trained.exit_code == 0, trained.output
    args = _hint(trained.output)
    assert args[args.index("--env") + 1] == "ac-signal"
    assert args[args.index("--market") + 1] == "my market.json"
    assert args[args.index("--order") + 1] == "order.json"
    assert "qtable:runs/q 1" in args[args.index("--policies") + 1].split(",")
    assert "signal_aware" in args[args.index("--policies") + 1].split(",")
    assert "observations (signal)" in trained.output and "actions (seed003)" in trained.output
    assert "training reward (is_bps)" in trained.output

    followed = runner.invoke(app, ["evaluate", *args, "--orders", "40"])
    assert followed.exit_code == 0, followed.output
    assert "was trained on" not in followed.output  # the checkpoint's own market and order
    out = Path(args[args.index("--out") + 1])
    results = json.loads((out / "results.json").read_text())
    assert "qtable" in results["policies"]
    assert results["side"] == "buy" and results["market"]["sigma"] == 1.2
    # the bare command of the old hint (no --market, no --order) evaluates elsewhere
    bare = runner.invoke(app, ["evaluate", "--env", "ac-signal", "--policies",
                               "twap,qtable:runs/q 1", "--orders", "40", "--out", "elsewhere"])
    assert bare.exit_code == 0, bare.output
    assert "was trained on" in bare.output


def test_the_hint_for_the_default_market_has_no_files(tmp_path: Path) -> None:
    trained = runner.invoke(app, ["train", "--algo", "qtable", "--out", str(tmp_path / "q"),
                                  *QUICK])
    assert trained.exit_code == 0, trained.output
    args = _hint(trained.output)
    assert "--market" not in args and "--order" not in args
    assert args[args.index("--policies") + 1] == f"twap,ac,qtable:{tmp_path / 'q'}"
