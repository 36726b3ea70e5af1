"""Tests for execrl.evaluate.report: files written, valid PNGs, and a faithful report.md."""

from __future__ import annotations

import stat
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from execrl.evaluate.report import BOX_FLIERS, box_stats, remaining_fraction, write_report
from execrl.evaluate.stats import format_pvalue, is_summary, paired_comparison

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
POLICIES = ("twap", "ac", "ppo")
N_ORDERS, N_STEPS = 50, 5


def _synthetic() -> tuple[dict, pd.DataFrame, dict[str, np.ndarray]]:
    """Three policies on 50 shared market paths, results built with the real stats code."""
    rng = np.random.default_rng(0)
    market = rng.normal(8.0, 5.0, N_ORDERS)
    is_by_policy = {
        "twap": market + rng.normal(0.0, 1.0, N_ORDERS),
        "ac": market - 0.5 + rng.normal(0.0, 1.0, N_ORDERS),
        "ppo": market - 1.5 + rng.normal(0.0, 1.0, N_ORDERS),
    }
    episodes = pd.concat(
        [
            pd.DataFrame({"order_idx": np.arange(N_ORDERS), "policy": p, "is_bps": v})
            for p, v in is_by_policy.items()
        ],
        ignore_index=True,
    )
    results = {
        "env": "ac",
        "orders": N_ORDERS,
        "seed": 7,
        "side": "sell",
        "policies": {
            p: {"is_bps": is_summary(v), "fill_rate": 1.0, "child_orders": N_STEPS}
            for p, v in is_by_policy.items()
        },
        "comparisons": [
            paired_comparison(
                p, is_by_policy[p], "twap", is_by_policy["twap"], n_boot=500
            ).to_dict()
            for p in ("ppo", "ac")
        ],
        "theory": {"ac": {"expected_is_bps": 7.25, "std_is_bps": 4.5}},
        "market": {"model": "almgren_chriss", "X": 100_000, "sigma": 0.95, "side": "sell"},
    }
    schedules = {
        "twap": np.full((3, N_STEPS), 20_000.0),
        "ac": np.tile([40_000.0, 25_000.0, 17_000.0, 11_000.0, 7_000.0], (3, 1)),
        "ppo": rng.integers(0, 30_000, (3, N_STEPS)).astype(float),
    }
    return results, episodes, schedules


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 1000, f"{path} is suspiciously small ({len(data)} bytes)"
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    results, episodes, schedules = _synthetic()
    open_before = plt.get_fignums()
    report = write_report(tmp_path, results, episodes, schedules)

    assert report == tmp_path / "report.md"
    for name in ("is_boxplot.png", "schedules.png", "paired_diff.png"):
        _assert_png(tmp_path / name)
    # nothing half-written left behind, no figures leaked into pyplot, file readable by others
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "is_boxplot.png", "paired_diff.png", "report.md", "schedules.png",
    ]  # fmt: skip
    assert plt.get_fignums() == open_before
    assert report.stat().st_mode & stat.S_IROTH


def test_report_markdown_content(tmp_path: Path) -> None:
    results, episodes, schedules = _synthetic()
    text = write_report(tmp_path, results, episodes, schedules).read_text(encoding="utf-8")

    assert "**env**: ac" in text and "**orders**: 50" in text and "**side**: sell" in text
    for p in POLICIES:
        assert f"| {p} |" in text
    for c in results["comparisons"]:
        assert f"| {c['policy']} | {c['baseline']} |" in text
        lo, hi = c["ci95"]
        assert f"[{lo:.2f}, {hi:.2f}]" in text
        assert format_pvalue(c["t_pvalue"]) in text
        assert format_pvalue(c["wilcoxon_pvalue"]) in text
        assert f"{c['improvement_pct']:.2f}" in text

    ppo = results["policies"]["ppo"]["is_bps"]
    row = next(line for line in text.splitlines() if line.startswith("| ppo | "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected = [f"{ppo[k]:.2f}" for k in ("mean", "std", "p50", "p95", "p99", "cvar95")]
    assert cells == ["ppo", *expected, "1.000", "5"]

    assert "## Theory" in text
    theory_row = next(line for line in text.splitlines() if line.startswith("| ac | 7.25 |"))
    assert f"{results['policies']['ac']['is_bps']['mean']:.2f}" in theory_row
    assert "## Market" in text and "| model | almgren_chriss |" in text and "| X | 100000 |" in text
    for name in ("is_boxplot.png", "schedules.png", "paired_diff.png"):
        assert f"]({name})" in text


def test_no_comparisons_skips_paired_plot(tmp_path: Path) -> None:
    results, episodes, schedules = _synthetic()
    results["comparisons"] = []
    del results["theory"], results["market"]
    (tmp_path / "paired_diff.png").write_bytes(b"stale from an earlier run")

    text = write_report(tmp_path, results, episodes, schedules).read_text(encoding="utf-8")

    _assert_png(tmp_path / "is_boxplot.png")
    _assert_png(tmp_path / "schedules.png")
    assert not (tmp_path / "paired_diff.png").exists()
    assert "paired_diff.png" not in text
    assert "## Paired comparisons" not in text
    assert "## Theory" not in text and "## Market" not in text
    for p in POLICIES:
        assert f"| {p} |" in text


def test_remaining_fraction() -> None:
    frac = remaining_fraction(np.array([[50.0, 30.0, 20.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(frac, [[1.0, 0.5, 0.2, 0.0], [1.0, 1.0, 1.0, 1.0]])


def test_missing_policy_in_episodes_names_it(tmp_path: Path) -> None:
    results, episodes, schedules = _synthetic()
    episodes = episodes[episodes["policy"] != "ac"]
    with pytest.raises(ValueError, match="'ac'"):
        write_report(tmp_path, results, episodes, schedules)
    assert not (tmp_path / "report.md").exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_missing_columns_and_bad_schedule_shape(tmp_path: Path) -> None:
    results, episodes, schedules = _synthetic()
    with pytest.raises(ValueError, match="is_bps"):
        write_report(tmp_path, results, episodes.drop(columns="is_bps"), schedules)
    schedules["ppo"] = np.ones(N_STEPS)
    with pytest.raises(ValueError, match=r"schedules\['ppo'\].*\(5,\)"):
        write_report(tmp_path, results, episodes, schedules)


def test_no_plots_writes_the_report_alone_without_matplotlib(tmp_path: Path) -> None:
    """``plots=False``: report.md only (stale plots of an earlier run removed), saying the
    plots were not drawn; matplotlib is not imported for it (a fresh interpreter checks)."""
    import subprocess
    import sys

    results, episodes, schedules = _synthetic()
    write_report(tmp_path, results, episodes, schedules)  # an earlier run with plots
    text = write_report(tmp_path, results, episodes, schedules, plots=False).read_text("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]
    assert "Not drawn (`--no-plots`)" in text and "![" not in text
    assert "## Paired comparisons" in text
    code = (
        "import sys, pandas as pd, numpy as np\n"
        "from pathlib import Path\n"
        "from execrl.evaluate.report import write_report\n"
        "res = {'policies': {'a': {'is_bps': {'mean': 1.0}}}}\n"
        "ep = pd.DataFrame({'order_idx': [0, 1], 'policy': 'a', 'is_bps': [1.0, 2.0]})\n"
        f"write_report(Path({str(tmp_path)!r}), res, ep, {{}}, plots=False)\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_box_stats_are_matplotlibs_with_the_extreme_fliers_only() -> None:
    """The precomputed box is matplotlib's own (``cbook.boxplot_stats``: quartiles, Tukey
    whiskers, mean); of its fliers, the ``BOX_FLIERS`` furthest on each side are kept."""
    from matplotlib import cbook

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.standard_t(3, 20_000), [40.0, -35.0]])
    got = box_stats(values, "twap")
    want = cbook.boxplot_stats(values, labels=["twap"])[0]
    for key in ("q1", "med", "q3", "whislo", "whishi", "mean"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    fliers = np.sort(want["fliers"])
    assert fliers.size > 2 * BOX_FLIERS  # the thinning matters here
    low, high = fliers[fliers < got["whislo"]], fliers[fliers > got["whishi"]]
    np.testing.assert_array_equal(np.sort(got["fliers"]),
                                  np.concatenate([low[:BOX_FLIERS], high[-BOX_FLIERS:]]))
    assert 40.0 in got["fliers"] and -35.0 in got["fliers"]
