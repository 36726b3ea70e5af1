"""``execrl registry`` end to end on SQLite: users and tokens, register, promote, request, two
approvals, flag, review, rollback, show and log; every refusal one ``error:`` line, exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import registry_helpers
from execrl.agents.export import NumpyPolicy
from execrl.cli import app
from registry_helpers import cheap_tokens

checkpoints = registry_helpers.checkpoints  # the fixture
runner = CliRunner()


@pytest.fixture
def cli(tmp_path, monkeypatch):
    cheap_tokens(monkeypatch)
    db = f"sqlite:///{tmp_path / 'registry.sqlite'}"

    def run(*args: str, token: str | None = None, code: int = 0) -> str:
        argv = ["registry", *args, "--db", db]
        if token is not None:
            argv += ["--token", token]
        done = runner.invoke(app, argv)
        assert done.exit_code == code, (argv, done.output)
        if code == 2:
            lines = done.output.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), done.output
            assert "Traceback" not in done.output
        return done.output

    return run


def _tokens(cli) -> dict[str, str]:
    tokens = {"ada": cli("users", "add", "ada", "--role", "admin").strip().splitlines()[-1]}
    for name, role in [("pam", "pm"), ("rita", "risk_officer"), ("quinn", "quant"),
                       ("tina", "trader")]:
        out = cli("users", "add", name, "--role", role, token=tokens["ada"])
        tokens[name] = out.strip().splitlines()[-1]
    return tokens


def test_a_policy_goes_live_with_two_approvals_and_out_by_flag_and_review(
    cli, checkpoints, tmp_path
):
    t = _tokens(cli)
    digest = NumpyPolicy.load(checkpoints[0]).policy_hash()
    short = digest[:10]
    assert "as candidate" in cli("register", str(checkpoints[0]), token=t["quinn"])
    assert "candidate" in cli("list")
    assert "shadow" in cli("promote", short, token=t["quinn"])
    assert "canary" in cli("promote", short, token=t["quinn"])
    cli("promote", short, token=t["quinn"], code=2)  # live: request + approvals
    assert "request 1" in cli("request", short, "--reason", "canary ok", token=t["quinn"])
    out = cli("approve", short, token=t["quinn"], code=2)
    assert "(quant) may not approve" in out
    out = cli("approve", short, token=t["tina"], code=2)
    assert "(trader) may not approve" in out
    assert "one more approver" in cli("approve", short, token=t["pam"])
    assert "already" in cli("approve", short, token=t["pam"], code=2)
    assert "is live" in cli("approve", short, token=t["rita"])
    # runbook step 1 by the trader; only a PM / risk officer hands the flow back
    cli("flag", short, token=t["tina"], code=2)  # no reason
    assert "fallback" in cli("flag", short, "--reason", "spread blew out", token=t["tina"])
    assert "FLAG" in cli("list")
    cli("flag", short, "--off", "--reason", "x", token=t["tina"], code=2)
    cli("flag", short, "--off", "--reason", "calm again", token=t["rita"])
    assert "every policy" in cli("flag", "--all", "--reason", "halt", token=t["pam"])
    cli("flag", short, "--all", "--reason", "x", token=t["pam"], code=2)
    cli("flag", "--all", "--off", "--reason", "open", token=t["pam"])
    # the daily review
    days = [{"day": f"2026-11-0{i}", "diff_bps_mean": 2.0, "ci95": [0.5, 3.5]}
            for i in range(1, 6)]
    (tmp_path / "days.json").write_text(json.dumps(days[:4]))
    assert "stays live" in cli("review", short, str(tmp_path / "days.json"), token=t["rita"])
    (tmp_path / "days.json").write_text(json.dumps(days))
    cli("review", short, str(tmp_path / "days.json"), token=t["tina"], code=2)
    assert "quarantined" in cli("review", short, str(tmp_path / "days.json"), token=t["rita"])
    assert "no green version" in cli("rollback", "--reason", "x", token=t["rita"], code=2)
    shown = json.loads(cli("show", short))
    assert shown["state"] == "quarantined" and shown["fallback"] is True
    assert shown["requests"][0]["approvers"] == ["pam", "rita"]
    events = [json.loads(line) for line in cli("log", short).splitlines()]
    assert [e["action"] for e in events] == [
        "register", "promote", "promote", "request", "approve", "approve", "promote", "flag",
        "unflag", "quarantine"]
    assert events[-1]["actor"] == "system" and events[7]["actor"] == "tina"
    assert cli("users", "list").splitlines()[0] == "ada\tadmin\tactive"


def test_refusals_are_one_line(cli, checkpoints, tmp_path):
    cli("users", "add", "ada", "--role", "pm", code=2)  # the first user is an admin
    cli("users", "add", "ada", "--role", "admin")
    cli("users", "add", "bob", "--role", "pm", code=2)  # users exist: needs a token
    cli("register", str(checkpoints[0]), code=2)  # no token
    cli("register", str(checkpoints[0]), token="abc.def", code=2)
    cli("register", str(tmp_path / "nowhere"), token="abc.def", code=2)
    cli("show", "abcdef", code=2)
    cli("show", "xyz", code=2)
    cli("list", "--state", "gone", code=2)
    done = runner.invoke(app, ["registry", "list", "--db", "nonsense://"])
    assert done.exit_code == 2 and done.output.startswith("error: ")
