"""Calibration figures: GOOG 2012-06-21 against the calibrated order-book simulator, as JSON.

    python bench/bench_calibration.py [--lobster ZIP] [--ticks-per-level 5] [--json-out PATH]

Runs ``execrl.calibrate.run.calibrate`` (what ``execrl calibrate`` runs) into a temporary
folder and prints one JSON object: the real-vs-simulated table (GOOG on the simulator's grid
and the simulated day, same statistic code), the estimator's round trip through the simulator
(z-scores of the re-estimated tables), the (θ, θ_reinit) grid with each pair's 1-second and
5-minute volatility, the Hawkes fit and its simulated variant, the metaorder impact curve with
its power-law fit, and the wall time of each step. Needs the LOBSTER sample (default:
/work/shared/data/lobster/); 3-8 minutes on the shared 2-vCPU VM (the grid of nine simulated
days is most of it).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

DEFAULT = Path("/work/shared/data/lobster/LOBSTER_SampleFile_GOOG_2012-06-21_10.zip")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lobster", type=Path, default=DEFAULT)
    ap.add_argument("--ticks-per-level", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    if not args.lobster.exists():
        sys.exit(f"error: {args.lobster} not found (the LOBSTER sample files)")
    from execrl.calibrate.run import calibrate

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        r = calibrate(args.lobster, Path(tmp), ["bench/bench_calibration.py", *sys.argv[1:]],
                      ticks_per_level=args.ticks_per_level, seed=args.seed)
        wall = time.perf_counter() - started
    out = {
        "source": r["source"],
        "aggregation": {k: r["aggregation"][k] for k in ("ticks_per_level", "n_levels")},
        "aes": r["fit"]["aes"], "n_buckets": r["fit"]["n_buckets"],
        "real_vs_simulated": [{"statistic": a, "real": b, "simulated": c}
                              for a, b, c in r["comparison"]],
        "round_trip": r["round_trip"],
        "theta_reinit_fit": r["theta_fit"], "theta": r["market"]["theta"],
        "reinit_prob": r["market"]["reinit_prob"],
        "hawkes": {k: r["hawkes"][k] for k in ("alpha_self", "alpha_cross", "beta",
                                               "branching_ratio", "ks_hawkes", "ks_poisson")},
        "hawkes_simulated": r["hawkes_simulated"],
        "thinning_rate": r["thinning_rate"],
        "impact": {k: r["impact"][k] for k in ("q", "q_over_v", "impact_bps", "impact_bps_se",
                                               "unpaired_se_bps", "impact_over_sigma",
                                               "power_law")},
        "square_root_law": r["square_root_law"],
        "timings_s": r["provenance"]["timings_s"], "wall_time_s": wall,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    text = json.dumps(out, indent=1)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
