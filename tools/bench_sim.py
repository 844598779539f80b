"""Benchmark the simulator's Numba fast path against the SimPy engine on the shipped trace.

    python tools/bench_sim.py                    # quickstart variants on the whole GPT-OSS-20B trace
    python tools/bench_sim.py --sequences 8      # the first 8 sequences (quicker, mostly the DES)
    python tools/bench_sim.py --des-repeat 0     # fast path only

Every number is measured in this run, on this machine. A rate is simulated expert accesses
(demands: one MoE layer's expert looked up for one step) per second of wall time for
``run(inputs)`` of each engine, excluding input building (the batch schedule, costs and memory
plan of ``build_inputs``, reported in its own column because both engines share it) and numba
compilation (the fast path runs once before it is timed). The fast path is the best of
``--repeat`` runs, the DES of ``--des-repeat``. ``same`` says whether the two engines' summaries
agree to 1e-9 (the test suite holds every column to that).

Scenarios: scenarios/quickstart.toml (GPT-OSS-20B with bf16 experts on an RTX 4090: an LRU pool
over PCIe 4.0), the same with Belady, with oracle prefetch one MoE layer ahead, and with misses
run wherever they finish first ('best', which on this machine is the CPU for every miss); then
the shipped prefetch-oracle (H100, FIFO, 128 slots, two layers ahead) and cpu-fallback (RTX 3060,
static popular experts, 'best') scenarios.

Goal: fast path >= 10M accesses/s and >= 100x the SimPy engine.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moesim.cli._common import format_table  # noqa: E402

SCENARIOS = {  # name: (scenario file, overrides)
    "quickstart (lru)": ("quickstart", []),
    "quickstart + belady": ("quickstart", [("cache.eviction", "belady")]),
    "quickstart + oracle prefetch": ("quickstart", [("prefetch.predictor", "oracle")]),
    "quickstart + cpu best": ("quickstart", [("offload.miss", "best")]),
    "prefetch-oracle": ("prefetch-oracle", []),
    "cpu-fallback": ("cpu-fallback", []),
}


def _best_seconds(run, repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _flat(summary: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif key != "engine":
            out[prefix + key] = value
    return out


def _same(a: dict, b: dict) -> bool:
    for key, x in _flat(a).items():
        y = _flat(b)[key]
        if isinstance(x, float) and (math.isnan(x) or math.isnan(y)):
            if not (math.isnan(x) and math.isnan(y)):
                return False
        elif not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12):
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=None,
                        help="replay only the trace's first N sequences (default: what each scenario says)")
    parser.add_argument("--repeat", type=int, default=5, help="timed fast-path runs (best is kept)")
    parser.add_argument("--des-repeat", type=int, default=1, help="timed DES runs (0: skip the DES)")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only these scenarios")
    args = parser.parse_args(argv)

    from moesim.scenario import load_scenario
    from moesim.sim.build import build_inputs
    from moesim.sim.des import run_des
    from moesim.sim.fast import run_fast, unsupported
    from moesim.trace.io import read_trace

    traces = {}
    rows = []
    for name in args.only or SCENARIOS:
        file, overrides = SCENARIOS[name]
        if args.sequences is not None:
            overrides = [*overrides, ("trace.max_sequences", args.sequences)]
        scenario = load_scenario(REPO / "scenarios" / f"{file}.toml", overrides)
        path = scenario.trace.path
        if path not in traces:
            traces[path] = read_trace(path)
        build_inputs(traces[path], scenario)  # the planner's kernels load (or compile) on first use
        start = time.perf_counter()
        inputs, _ = build_inputs(traces[path], scenario)
        build_s = time.perf_counter() - start
        reason = unsupported(inputs)
        if reason is not None:
            print(f"{name}: the fast path does not support it ({reason}); skipped", file=sys.stderr)
            continue
        demands = inputs.num_demands
        fast = run_fast(inputs)  # compiles on first use (or loads numba's on-disk cache)
        fast_s = _best_seconds(lambda: run_fast(inputs), args.repeat)
        des_rate = ratio = same = None
        if args.des_repeat > 0:
            des_s = math.inf
            for _ in range(args.des_repeat):
                start = time.perf_counter()
                des = run_des(inputs)
                des_s = min(des_s, time.perf_counter() - start)
            des_rate = demands / des_s
            ratio = des_s / fast_s
            same = "yes" if _same(fast.summary, des.summary) else "NO"
        rows.append([name, demands, f"{fast.summary['hit_rate']:.3f}", f"{build_s:.3f}", f"{fast_s * 1e3:.1f}",
                     f"{demands / fast_s / 1e6:.1f}", None if des_rate is None else f"{des_rate / 1e3:.1f}",
                     None if ratio is None else f"{ratio:.0f}x", same])
    headers = ["scenario", "demands", "hit rate", "build s", "fast ms", "fast M/s", "des k/s", "fast/des", "same"]
    print(format_table(headers, rows, align="lrrrrrrrl"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
