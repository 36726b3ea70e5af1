"""Checkpoints and `execrl train` with bad and extreme input: no user file lost, every corrupt
checkpoint refused in one line, options that do nothing refused, runs that cannot fit or
cannot mean anything said so before they start."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from execrl.agents import qtable
from execrl.agents.budget import check_budget
from execrl.agents.checkpoint import TrainOutput, check_checkpoint_out, write_checkpoint
from execrl.agents.export import NumpyPolicy
from execrl.agents.train import TrainRequest
from execrl.cli import app
from execrl.domain import ConfigError, outputs
from execrl.domain.limits import memory_limit_bytes
from execrl.env.factory import DEFAULT_ORDER, EnvConfig
from execrl.evaluate.backtest import run_policies
from execrl.evaluate.decisions import DecisionRecorder, write_decisions
from execrl.presets import preset_market

runner = CliRunner()
QUICK = ["--steps", "64", "--n-envs", "16"]  # four batched steps of tabular Q: well under 1 s


def one_error_line(result) -> str:
    """The run failed as a user mistake: exit 2, one `error:` line, no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and len(lines) == 1, result.output
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def mlp_policy() -> NumpyPolicy:
    rng = np.random.default_rng(0)
    return NumpyPolicy(
        name="ppo", observations=("remaining_ratio", "elapsed_ratio", "price_drift",
                                  "volatility"),
        action_set="seed004", head="argmax", activation="relu",
        weights=[rng.normal(size=(4, 8)), rng.normal(size=8), rng.normal(size=(8, 5)),
                 rng.normal(size=5)],
    )


def qtable_policy() -> NumpyPolicy:
    return NumpyPolicy(
        name="qtable", observations=("remaining_ratio", "elapsed_ratio"), action_set="seed004",
        head="qtable", bin_edges=[np.array([0.5]), np.array([0.25, 0.75])],
        q_table=np.arange(30, dtype=float).reshape(6, 5),
    )


def make_checkpoint(folder: Path, policy: NumpyPolicy, market=None, order=DEFAULT_ORDER) -> Path:
    """A real checkpoint folder (write_checkpoint) around ``policy``, with no training."""
    config = EnvConfig(market=market or preset_market("ac"), reward="risk_adjusted")
    write_checkpoint(
        folder, algo=policy.name, env_name="ac", env_config=config, order=order, seed=0,
        steps=1, hyperparams={}, wall_time_s=0.0,
        output=TrainOutput(policy=policy, curve=pd.DataFrame()),
    )
    return folder


def train(out: Path, *args: str):
    return runner.invoke(app, ["train", "--algo", "qtable", "--out", str(out), *QUICK, *args])


def evaluate(tmp_path: Path, policies: str, *args: str):
    return runner.invoke(app, ["evaluate", "--out", str(tmp_path / "ev"), "--orders", "12",
                               "--policies", policies, *args])


# -- train --out never loses a user's files ----------------------------------------------------
def test_a_foreign_folder_survives_train_out(tmp_path: Path) -> None:
    out = tmp_path / "work"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes\n")
    (out / "sub" / "data.bin").write_bytes(bytes(range(256)))
    before = snapshot(out)
    line = one_error_line(train(out))
    assert "holds files that are not an execrl checkpoint" in line and "'notes.txt'" in line
    assert "--force" in line
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # no temporary folder left


def test_a_checkpoint_with_a_users_file_in_it_is_not_replaced(tmp_path: Path) -> None:
    out = make_checkpoint(tmp_path / "ck", qtable_policy())
    (out / "notes.txt").write_text("keep me")
    before = snapshot(out)
    assert "'notes.txt'" in one_error_line(train(out))
    assert snapshot(out) == before


@pytest.mark.parametrize("force", [False, True])
def test_the_current_folder_and_its_parents_are_refused_even_with_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool
) -> None:
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    (here / "keep.txt").write_text("x")
    monkeypatch.chdir(here)
    before = snapshot(tmp_path)
    for out in (".", "..", str(here), str(tmp_path), "./"):
        line = one_error_line(train(Path(out), *(["--force"] if force else [])))
        assert "current folder" in line, line
    assert snapshot(tmp_path) == before


def test_force_replaces_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "work"
    out.mkdir()
    (out / "notes.txt").write_text("old")
    result = train(out, "--force")
    assert result.exit_code == 0, result.output
    assert not (out / "notes.txt").exists() and (out / "policy.json").is_file()
    NumpyPolicy.load(out, checkpoint=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_an_existing_checkpoint_and_an_empty_folder_are_replaced(tmp_path: Path) -> None:
    out = tmp_path / "ck"
    out.mkdir()
    assert train(out, "--seed", "1").exit_code == 0
    first = json.loads((out / "config.json").read_text())
    result = train(out, "--seed", "2")
    assert result.exit_code == 0, result.output
    second = json.loads((out / "config.json").read_text())
    assert (first["seed"], second["seed"]) == (1, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # the old one deleted


@pytest.mark.parametrize("case", ["file", "under_a_file", "read_only"])
def test_bad_out_paths_are_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(qtable, "train", never)
    blocker = tmp_path / "results.txt"
    blocker.write_text("x")
    out = {"file": blocker, "under_a_file": blocker / "ck" / "deeper",
           "read_only": tmp_path / "locked" / "ck"}[case]
    if case == "read_only":
        (tmp_path / "locked").mkdir()
        real_mkdtemp = outputs.tempfile.mkdtemp
        locked = str(tmp_path / "locked")

        def mkdtemp(*args, dir=None, **kwargs):  # as root a chmod-ed folder stays writable
            if str(dir) == locked:
                raise PermissionError(13, "Permission denied")
            return real_mkdtemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(outputs.tempfile, "mkdtemp", mkdtemp)
    before = snapshot(tmp_path)
    line = one_error_line(train(out))
    assert {"file": "is a file", "under_a_file": "which is a file",
            "read_only": "cannot be written"}[case] in line
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "locked" / "ck").exists()


def test_the_old_checkpoint_stays_if_the_new_one_cannot_be_renamed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = make_checkpoint(tmp_path / "ck", qtable_policy())
    before = snapshot(out)

    real_replace = os.replace

    def refuse(src, dst):  # the old checkpoint moves aside, then the new one cannot move in
        if "execrl-staging" in str(src):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", refuse)
    with pytest.raises(OSError):
        make_checkpoint(out, mlp_policy())
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_check_checkpoint_out_accepts_new_empty_and_checkpoint_folders(tmp_path: Path) -> None:
    check_checkpoint_out(tmp_path / "new" / "ck")
    (tmp_path / "empty").mkdir()
    check_checkpoint_out(tmp_path / "empty")
    check_checkpoint_out(make_checkpoint(tmp_path / "ck", qtable_policy()))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not an execrl checkpoint"):
        check_checkpoint_out(tmp_path / "other")


# -- a corrupt checkpoint is one line, never a traceback ----------------------------------------
def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_arrays(path: Path, edit) -> None:
    arrays = dict(np.load(path))
    edit(arrays)
    np.savez(path, **arrays)


CORRUPTIONS = {
    "npz_not_an_archive": (lambda d: (d / "policy.npz").write_text("hello"), "policy.npz"),
    "npz_single_array": (lambda d: np.save(d / "policy.npz.npy", np.ones(3))
                         or (d / "policy.npz.npy").rename(d / "policy.npz"), "policy.npz"),
    "npz_truncated": (lambda d: (d / "policy.npz").write_bytes(
        (d / "policy.npz").read_bytes()[:200]), "policy.npz"),
    "npz_missing": (lambda d: (d / "policy.npz").unlink(), "policy.npz"),
    "json_not_json": (lambda d: (d / "policy.json").write_text("{broken"), "policy.json"),
    "json_not_utf8": (lambda d: (d / "policy.json").write_bytes(b"\xff\xfe{}"), "policy.json"),
    "json_a_list": (lambda d: (d / "policy.json").write_text("[1, 2]"), "policy.json"),
    "json_missing": (lambda d: (d / "policy.json").unlink(), "policy.json"),
    "json_lacks_head": (lambda d: _edit_json(d / "policy.json", lambda s: s.pop("head")),
                        "'head' is missing"),
    "json_lacks_n_weights": (lambda d: _edit_json(d / "policy.json",
                                                  lambda s: s.pop("n_weights")), "'n_weights'"),
    "json_n_weights_text": (lambda d: _edit_json(d / "policy.json",
                                                 lambda s: s.update(n_weights="4")), "'n_weights'"),
    "json_head_unknown": (lambda d: _edit_json(d / "policy.json",
                                               lambda s: s.update(head="softmax")), "'softmax'"),
    "array_missing": (lambda d: _edit_arrays(d / "policy.npz", lambda a: a.pop("w2")), "w2"),
    "array_wrong_shape": (lambda d: _edit_arrays(d / "policy.npz", lambda a: a.update(
        w0=np.ones((3, 8)))), "shape"),
    "array_nan": (lambda d: _edit_arrays(d / "policy.npz", lambda a: a["w1"].__setitem__(
        0, np.nan)), "non-finite"),
    "array_text": (lambda d: _edit_arrays(d / "policy.npz", lambda a: a.update(
        w1=np.array(["a"] * 8))), "not numbers"),
    "hash_key_deleted": (lambda d: _edit_json(d / "policy.json",
                                              lambda s: s.pop("policy_hash")), "no 'policy_hash'"),
    "hash_mismatch": (lambda d: _edit_arrays(d / "policy.npz", lambda a: a.update(
        w1=a["w1"] + 1.0)), "does not match its recorded hash"),
    "hash_file_missing": (lambda d: (d / "policy_hash").unlink(), "policy_hash file"),
    "hash_file_differs": (lambda d: (d / "policy_hash").write_text("0" * 64 + "\n"),
                          "policy_hash"),
    "config_missing": (lambda d: (d / "config.json").unlink(), "config.json"),
    "config_not_json": (lambda d: (d / "config.json").write_text("nope"), "config.json"),
    "config_hash_differs": (lambda d: _edit_json(d / "config.json",
                                                 lambda c: c.update(policy_hash="ab" * 32)),
                            "config.json"),
    "wrong_action_count": (lambda d: _resave(d, NumpyPolicy(
        name="ppo", observations=("remaining_ratio",), action_set="seed004", head="argmax",
        weights=[np.ones((1, 3)), np.ones(3)])), "does not fit action set"),
}


def _resave(folder: Path, policy: NumpyPolicy) -> None:
    """Replace the policy with a self-consistent one (hash, policy_hash, config.json agree)."""
    digest = policy.save(folder)
    (folder / "policy_hash").write_text(digest + "\n")
    _edit_json(folder / "config.json", lambda c: c.update(policy_hash=digest))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("good") / "ppo", mlp_policy())


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_refused_in_one_line(
    case: str, good_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "ppo"
    shutil.copytree(good_checkpoint, folder)
    corrupt, needle = CORRUPTIONS[case]
    corrupt(folder)
    line = one_error_line(evaluate(tmp_path, f"twap,mine:{folder}"))
    assert needle in line, line
    assert not (tmp_path / "ev").exists()


def test_a_good_checkpoint_loads_with_its_provenance(good_checkpoint: Path, tmp_path) -> None:
    policy = NumpyPolicy.load(good_checkpoint, name="mine", checkpoint=True)
    config = json.loads((good_checkpoint / "config.json").read_text())
    assert policy.provenance == {
        "path": str(good_checkpoint), "policy_hash": config["policy_hash"], "algo": "ppo",
        "trained_with_execrl": config["execrl_version"],
    }
    assert policy.policy_hash() == (good_checkpoint / "policy_hash").read_text().strip()
    result = evaluate(tmp_path, f"twap,mine:{good_checkpoint}")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # trained on this very market and order


# -- labels and mismatches -----------------------------------------------------------------------
@pytest.mark.parametrize("label", ["ac", "twap", "pov", "signal_aware", ""])
def test_a_label_may_not_shadow_a_baseline(label: str, good_checkpoint: Path, tmp_path) -> None:
    line = one_error_line(evaluate(tmp_path, f"vwap,{label}:{good_checkpoint}"))
    assert (f"label {label!r} is a baseline's name" if label else "has no label") in line


def test_a_checkpoint_from_another_market_or_order_runs_with_a_warning(
    good_checkpoint: Path, tmp_path: Path
) -> None:
    market = tmp_path / "market.json"
    market.write_text(json.dumps({"sigma": 1.2}))
    result = evaluate(tmp_path, f"twap,mine:{good_checkpoint}", "--market", str(market))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: checkpoint {good_checkpoint} was trained on market "
                        f"sigma=0.95, evaluating on market sigma=1.2"]
    order = tmp_path / "order.json"
    order.write_text(json.dumps({**DEFAULT_ORDER.to_wire(), "qty": 5000, "side": "buy"}))
    result = evaluate(tmp_path, f"twap,mine:{good_checkpoint}", "--order", str(order))
    assert result.exit_code == 0, result.output
    assert (f"warning: checkpoint {good_checkpoint} was trained on order qty=1000000, "
            "side=sell, evaluating on order qty=5000, side=buy") in result.stderr


# -- train options that do nothing, runs that cannot fit or mean anything -----------------------
@pytest.fixture(scope="module")
def decision_log(tmp_path_factory) -> Path:
    runs = run_policies(["twap", "ac"], EnvConfig(), DEFAULT_ORDER, 10, 3,
                        recorder=DecisionRecorder())
    return write_decisions(tmp_path_factory.mktemp("log"), runs)


@pytest.mark.parametrize("algo", ["qtable", "dqn", "qrdqn", "ppo", "maskable-ppo"])
def test_data_with_an_online_algorithm_is_refused(algo, decision_log: Path, tmp_path) -> None:
    result = runner.invoke(app, ["train", "--algo", algo, "--out", str(tmp_path / "ck"),
                                 "--data", str(decision_log)])
    assert "--data does not apply to " + algo in one_error_line(result)
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("algo", ["bc", "cql"])
def test_offline_without_data_or_with_n_envs_is_refused(algo: str, decision_log, tmp_path) -> None:
    out = str(tmp_path / "ck")
    assert "--data is required" in one_error_line(
        runner.invoke(app, ["train", "--algo", algo, "--out", out]))
    assert "--n-envs does not apply" in one_error_line(runner.invoke(
        app, ["train", "--algo", algo, "--out", out, "--data", str(decision_log),
              "--n-envs", "8"]))
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("reward_risk_adjusted", np.nan, "column 'reward_risk_adjusted' has a non-finite value"),
        ("remaining_ratio", np.inf, "column 'remaining_ratio' has a non-finite value inf"),
        ("order_idx", np.nan, "column 'order_idx' must hold whole numbers"),
        ("step", 0.5, "column 'step' must hold whole numbers"),
        ("fraction", "0.5", "column 'fraction' holds"),
        ("done", "yes", "column 'done' holds"),
        ("policy", None, "column 'policy' is empty"),
    ],
)
def test_bad_offline_data_is_refused_by_column(
    column: str, value, needle: str, decision_log: Path, tmp_path: Path
) -> None:
    log = pd.read_parquet(decision_log)
    if isinstance(value, str) or value is None:
        log[column] = log[column].astype(object)
    elif column in ("order_idx", "step"):
        log[column] = log[column].astype(float)
    log.loc[log.index[3], column] = value
    if isinstance(value, str):
        log[column] = log[column].astype(str)
    bad = tmp_path / "bad.parquet"
    log.to_parquet(bad)
    result = runner.invoke(app, ["train", "--algo", "bc", "--out", str(tmp_path / "ck"),
                                 "--steps", "5", "--data", str(bad)])
    assert needle in one_error_line(result)
    assert not (tmp_path / "ck").exists()


def test_huge_n_envs_is_refused_fast(tmp_path: Path) -> None:
    started = time.perf_counter()
    for algo in ("qtable", "ppo"):
        result = runner.invoke(app, ["train", "--algo", algo, "--out", str(tmp_path / "ck"),
                                     "--n-envs", "1000000000"])
        line = one_error_line(result)
        assert "--n-envs = 1000000000" in line and "TiB" in line and "4.0 GiB" in line, line
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(
    ("algo", "hyper", "needle"),
    [
        ("dqn", {"buffer_size": 10**12}, "buffer_size = 1000000000000"),
        ("qrdqn", {"net_arch": [100_000, 100_000]}, "net_arch = [100000, 100000]"),
        ("ppo", {"n_steps": 10**7}, "n_steps = 10000000"),
        ("cql", {"hidden_units": [60_000, 60_000]}, "hidden_units = [60000, 60000]"),
    ],
)
def test_hyper_parameters_that_would_not_fit_are_refused(
    algo, hyper, needle, decision_log: Path, tmp_path: Path
) -> None:
    config = tmp_path / "hyper.json"
    config.write_text(json.dumps(hyper))
    data = ["--data", str(decision_log)] if algo == "cql" else []
    result = runner.invoke(app, ["train", "--algo", algo, "--out", str(tmp_path / "ck"),
                                 "--config", str(config), *data])
    line = one_error_line(result)
    assert needle in line and "more than the limit" in line, line


def test_check_budget_names_the_largest_part() -> None:
    check_budget([("a", "--x = 1", memory_limit_bytes())])
    with pytest.raises(ConfigError, match=r"^--y = 2: .*about 5\.0 GiB \(b 4\.0 GiB\)"):
        check_budget([("a", "--x = 1", 2**30), ("b", "--y = 2", 4 * 2**30)])


@pytest.mark.parametrize("seed", ["-1", "4294967296", str(2**70)])
def test_seeds_numpy_refuses_are_refused_by_name(seed: str, tmp_path: Path) -> None:
    result = train(tmp_path / "ck", f"--seed={seed}")
    assert f"--seed = {seed} must be a whole number in [0, 4294967295]" in one_error_line(result)


@pytest.mark.parametrize("algo", ["qtable", "dqn", "qrdqn", "ppo", "maskable-ppo", "bc", "cql"])
def test_steps_1_trains_with_a_warning_and_no_traceback(
    algo: str, decision_log: Path, tmp_path: Path
) -> None:
    args = ["--n-envs", "4"]
    if algo in ("bc", "cql"):  # 1 x 8 samples of the log's 200 transitions
        (tmp_path / "small.json").write_text(json.dumps({"batch_size": 8, "eval_orders": 5}))
        args = ["--data", str(decision_log), "--config", str(tmp_path / "small.json")]
    result = runner.invoke(app, ["train", "--algo", algo, "--out", str(tmp_path / "ck"),
                                 "--steps", "1", *args])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "Warning:" not in result.output, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and all("--steps 1 " in w or "learning_starts" in w or "update_frequency"
                            in w for w in warnings), result.stderr
    NumpyPolicy.load(tmp_path / "ck", checkpoint=True)


def test_a_rollout_sb3_cannot_use_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "hyper.json"
    for hyper, n_envs, needle in [({"n_steps": 1}, "1", "cannot normalise advantages"),
                                  ({"batch_size": 1000}, "4", "batch_size = 1000 is more than")]:
        config.write_text(json.dumps(hyper))
        result = runner.invoke(app, ["train", "--algo", "ppo", "--out", str(tmp_path / "ck"),
                                     "--n-envs", n_envs, "--config", str(config)])
        assert needle in one_error_line(result)


@pytest.mark.parametrize(
    ("algo", "text", "suffix", "needle"),
    [
        ("qtable", b"\xff\xfe[rl_execution]", ".toml", "is not UTF-8 text"),
        ("qtable", b"[rl_execution.q_learning]\nalpha = nan\n", ".toml", "q_learning.alpha' = nan"),
        ("ppo", b'{"learning_rate": -0.1}', ".json", "'learning_rate' = -0.1"),
        ("dqn", b'{"gamma": NaN}', ".json", "'gamma' = NaN"),
        ("ppo", b'{"n_stepz": 8}', ".json", "'n_stepz' is unknown"),
        ("bc", b'{"batch_size": "256"}', ".json", "'batch_size' = '256'"),
        ("cql", b'{"temperature": NaN}', ".json", "'temperature' = NaN"),
    ],
)
def test_bad_hyper_parameters_are_refused_by_key(
    algo, text: bytes, suffix: str, needle: str, decision_log: Path, tmp_path: Path
) -> None:
    config = tmp_path / f"hyper{suffix}"
    config.write_bytes(text)
    data = ["--data", str(decision_log)] if algo in ("bc", "cql") else []
    result = runner.invoke(app, ["train", "--algo", algo, "--out", str(tmp_path / "ck"),
                                 "--steps", "1", "--config", str(config), *data])
    assert needle in one_error_line(result)
    assert not (tmp_path / "ck").exists()


def test_train_request_refuses_what_the_cli_refuses(decision_log: Path) -> None:
    base = dict(algo="qtable", env_name="ac", env_config=EnvConfig(), order=DEFAULT_ORDER,
                steps=10, seed=0)
    with pytest.raises(ConfigError, match="--seed"):
        TrainRequest(**{**base, "seed": -1})
    with pytest.raises(ConfigError, match="--data does not apply"):
        TrainRequest(**base, data=decision_log)
    with pytest.raises(ConfigError, match="--data is required"):
        TrainRequest(**{**base, "algo": "bc"})
    TrainRequest(**{**base, "seed": np.int64(3)})  # numpy's integers are whole numbers too


@pytest.mark.parametrize(
    ("algo", "hyper", "needle"),
    [
        ("ppo", {"vf_coef": 1e300}, "ppo training diverged: the network's outputs became NaN"),
        ("maskable-ppo", {"vf_coef": 1e300}, "maskable-ppo training diverged"),
        ("dqn", {"learning_rate": 1e30, "max_grad_norm": 1e300, "learning_starts": 0},
         "dqn training diverged: the trained policy has non-finite weights"),
    ],
)
def test_a_diverging_run_is_one_line_and_writes_nothing(algo, hyper, needle, tmp_path) -> None:
    config = tmp_path / "hyper.json"
    config.write_text(json.dumps(hyper))
    result = runner.invoke(app, ["train", "--algo", algo, "--out", str(tmp_path / "ck"),
                                 "--steps", "600", "--n-envs", "16", "--config", str(config)])
    assert needle in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hyper.json"]


def test_a_train_freq_longer_than_the_run_is_refused(tmp_path: Path) -> None:
    """SB3 collects a whole train_freq cycle before it looks at --steps: 10⁹ batched steps
    for a run of 100 would never end."""
    config = tmp_path / "hyper.json"
    config.write_text(json.dumps({"train_freq": 10**9}))
    result = runner.invoke(app, ["train", "--algo", "qrdqn", "--out", str(tmp_path / "ck"),
                                 "--steps", "100", "--n-envs", "4", "--config", str(config)])
    assert "train_freq = 1000000000 batched steps" in one_error_line(result)


# -- the feature schema a checkpoint carries ---------------------------------------------------
def test_a_checkpoint_records_its_features_and_refuses_a_redefined_one(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck", mlp_policy())
    schema = json.loads((folder / "features.json").read_text())
    assert schema["names"] == list(mlp_policy().observations)
    lo, hi = np.array(schema["domain_min"]), np.array(schema["domain_max"])
    assert lo[0] >= 0.0 and hi[0] == 1.0  # remaining_ratio starts at 1 and only falls
    assert (lo <= hi).all()
    loaded = NumpyPolicy.load(folder, checkpoint=True)
    assert loaded.feature_schema.names == mlp_policy().observations
    # the policy hash does not cover features.json: a definition that no longer matches the
    # one trained on is refused by name
    schema["definitions"][2] = "something else"
    (folder / "features.json").write_text(json.dumps(schema))
    with pytest.raises(ConfigError, match="feature 'price_drift' is defined as"):
        NumpyPolicy.load(folder, checkpoint=True)


def test_evaluate_reports_decisions_outside_the_training_domain(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "ck", mlp_policy())
    schema = json.loads((folder / "features.json").read_text())
    result = evaluate(tmp_path, f"mine:{folder},twap")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "results.json").read_text())
    inside = report["policies"]["mine"]["behaviour"]["out_of_training_domain_share"]
    assert inside == 0.0  # same market and order as its training: nothing outside
    schema["domain_max"][2] = schema["domain_min"][2] = 0.0  # price drift pinned at 0
    (folder / "features.json").write_text(json.dumps(schema))
    result = evaluate(tmp_path, f"mine:{folder},twap", "--force")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert report["policies"]["mine"]["behaviour"]["out_of_training_domain_share"] > 0.5
