#!/usr/bin/env python3
"""Run every scenario in scenarios/ and compare its headline numbers with tests/golden/scenarios.json.

    python tools/regen_scenario_goldens.py            # show what changed (exit 1 if anything did)
    python tools/regen_scenario_goldens.py --write    # accept the new numbers

Golden numbers pin the simulator's behaviour; change them only when a semantic change is intended,
and say which in the commit message. Sweep scenarios (with a [sweep] table) are skipped here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "scenarios.json"
KEYS = (
    "num_steps", "decode_tokens", "prefill_tokens", "total_time_s", "decode_tokens_per_s", "demands", "hits",
    "misses", "late_prefetches", "h2d_bytes", "d2h_bytes", "ssd_bytes", "cpu_experts", "staged_experts",
)


def headline(summary: dict) -> dict:
    out = {key: summary[key] for key in KEYS}
    out["p99_step_latency_s"] = summary["decode_step_latency_s"]["p99"]
    out["prefetch_issued"] = summary["prefetch"]["issued"]
    out["prefetch_useful"] = summary["prefetch"]["useful"]
    out["prefetch_wasted"] = summary["prefetch"]["wasted"]
    out["stall_fetch_s"] = summary["time_breakdown_s"]["stall_fetch"]
    out["stall_cpu_s"] = summary["time_breakdown_s"]["stall_cpu"]
    return out


def scenario_files() -> list[Path]:
    import tomllib

    files = []
    for path in sorted((REPO / "scenarios").glob("*.toml")):
        if "sweep" not in tomllib.loads(path.read_text()) and not path.name.startswith("scaling-"):
            files.append(path)
    return files


def run_scenario(path: Path, engine: str | None = None) -> dict:
    from moesim.scenario import load_scenario, load_trace
    from moesim.sim import run

    scenario = load_scenario(path)
    return headline(run(load_trace(scenario), scenario, engine=engine).summary)


def same(a, b, rel: float = 1e-9) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-15)
    return a == b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the new numbers to the golden file")
    parser.add_argument("--engine", default=None, help="engine to run (default: each scenario's)")
    args = parser.parse_args()
    old = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    new = {}
    changed = False
    for path in scenario_files():
        new[path.stem] = run_scenario(path, args.engine)
        before = old.get(path.stem, {})
        for key, value in new[path.stem].items():
            if key not in before or not same(before[key], value):
                changed = True
                print(f"{path.stem}.{key}: {before.get(key, '(new)')} -> {value}")
    for name in sorted(set(old) - set(new)):
        changed = True
        print(f"{name}: removed")
    if args.write:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
        return 0
    if not changed:
        print("goldens unchanged")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
