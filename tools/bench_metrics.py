"""Benchmark the cache hit-curve kernels against libCacheSim and their plain-Python twins.

    python tools/bench_metrics.py                      # 10M requests over 768 keys + GPT-OSS-20B
    python tools/bench_metrics.py --requests 2000000   # quicker

Every number in the table is measured in this run, on this machine: throughput in requests per
second (best of ``--repeat`` runs after a warm-up that compiles the kernels), and the ratio of
ours to the baseline on the same stream. Baselines: libCacheSim (C, fed an oracleGeneral binary
trace through its own reader, unit-size objects, cache size in objects), and the plain-Python
twins of tests/naive/cache.py on a shorter stream, their rate extrapolated (a curve twin
simulates every size, so its rate is the one-size rate divided by the number of sizes).

Goals: single-size LRU >= 5x libCacheSim's LRU; one-pass LRU and Belady curves (every size) >=
1x libCacheSim's single-size LRU and Belady.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moesim.cli._common import format_table  # noqa: E402
from moesim.kernels import cache_common as codes  # noqa: E402
from moesim.kernels.cache_sim import cache_hit_flags, fifo_hit_counts  # noqa: E402
from moesim.kernels.cache_stack import lru_hit_counts, stack_hit_counts  # noqa: E402
from moesim.metrics.hit_curve import RequestStream  # noqa: E402

GPT_OSS = REPO / "traces" / "gpt-oss-20b-fingerprinting.parquet"


def locality_stream(num_requests: int, num_keys: int, seed: int, *, reuse: float = 0.6, window: int = 96,
                    zipf: float = 0.8) -> np.ndarray:
    """int32 keys with MoE-like locality: with probability ``reuse`` a request repeats the key of
    one of the last ``window`` requests, otherwise it draws from a Zipf(``zipf``) popularity."""
    rng = np.random.default_rng(seed)
    popularity = np.arange(1, num_keys + 1, dtype=np.float64) ** -zipf
    fresh = rng.permutation(num_keys)[rng.choice(num_keys, size=num_requests, p=popularity / popularity.sum())]
    source = np.arange(num_requests, dtype=np.int64)
    back = source - rng.integers(1, window + 1, num_requests)
    source = np.where((rng.random(num_requests) < reuse) & (back >= 0), back, source)
    while True:  # pointer doubling resolves chains of repeats in O(log N) passes
        followed = source[source]
        if np.array_equal(followed, source):
            break
        source = followed
    return fresh[source].astype(np.int32)


def request_stream(keys: np.ndarray, num_keys: int) -> RequestStream:
    """k = 1: every request its own group and token, one sequence."""
    count = len(keys)
    return RequestStream(
        keys=keys,
        group_offsets=np.arange(count + 1, dtype=np.int64),
        group_token=np.arange(count, dtype=np.int64),
        seq_group_offsets=np.array([0, count], dtype=np.int64),
        num_keys=num_keys,
    )


def args_of(stream: RequestStream):
    return stream.keys, stream.group_offsets, stream.group_token, stream.seq_group_offsets, stream.num_keys


def best_time(run, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def write_oracle_general(path: Path, keys: np.ndarray) -> None:
    """libCacheSim's oracleGeneral records: clock u32, obj_id u64, size u32, next access i64."""
    count = len(keys)
    record = np.dtype([("clock", "<u4"), ("obj_id", "<u8"), ("obj_size", "<u4"), ("next_access", "<i8")])
    rows = np.zeros(count, dtype=record)
    order = np.lexsort((np.arange(count), keys))  # by key, then time
    next_access = np.full(count, -1, dtype=np.int64)
    same = keys[order[1:]] == keys[order[:-1]]
    next_access[order[:-1][same]] = order[1:][same]
    rows["clock"] = np.arange(count, dtype=np.uint32)
    rows["obj_id"] = keys.astype(np.uint64) + 1
    rows["obj_size"] = 1
    rows["next_access"] = next_access
    rows.tofile(path)


def libcachesim_rate(lcs, policy: str, trace_path: Path, capacity: int, count: int, repeat: int):
    """(requests/s, misses) of libCacheSim's ``policy`` at one size, reading the binary trace."""
    classes = {"lru": lcs.LRU, "belady": lcs.Belady, "fifo": lcs.FIFO}
    if policy not in classes:
        return None, None
    result = {}

    def run():
        reader = lcs.TraceReader(str(trace_path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam())
        # hashpower 12 (4096 buckets) suits a few thousand objects; the default 24 allocates 128 MB.
        miss_ratio, _ = classes[policy](capacity, hashpower=12).process_trace(reader)
        result["misses"] = round(miss_ratio * count)

    seconds = best_time(run, repeat)
    return count / seconds, result["misses"]


def naive_rate(stream: RequestStream, policy: int, capacity: int, num_sizes: int) -> float:
    """Requests/s of the plain-Python twin (per-request accounting), for ``num_sizes`` sizes:
    the twins simulate one size at a time, so a curve's rate is the one-size rate / sizes."""
    from tests import naive

    start = time.perf_counter()
    naive.cache_hit_flags(*args_of(stream), capacity, policy, codes.REQUEST, False, 16)
    return len(stream.keys) / (time.perf_counter() - start) / num_sizes


class Table:
    """Rows of (case, ours, libCacheSim, naive, goal) in requests/s; ratios are ours / baseline."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(self, case: str, ours: float, lcs: float | None = None, naive: float | None = None,
            goal: str = "") -> None:
        def rate(value):
            return "" if value is None else f"{value / 1e6:.3g}"

        def ratio(value):
            return "" if value is None else f"{ours / value:,.1f}x"

        self.rows.append([case, rate(ours), rate(lcs), ratio(lcs), rate(naive), ratio(naive), goal])

    def render(self) -> str:
        headers = ["case", "ours Mreq/s", "libCacheSim", "vs libCacheSim", "naive twin", "vs naive", "goal"]
        return format_table(headers, self.rows, align="lrrrrrl")


def synthetic_rows(table: Table, lcs, args) -> None:
    """k = 1 groups, per-request accounting, cold misses: what libCacheSim computes."""
    num_keys = args.keys
    keys = locality_stream(args.requests, num_keys, args.seed)
    count = len(keys)
    stream = request_stream(keys, num_keys)
    small = request_stream(keys[: args.naive_requests], num_keys)
    capacity = num_keys // 4  # rho = 2 at GPT-OSS-20B model level (k * L = 96)
    mode = codes.REQUEST

    warm = request_stream(keys[:2000], num_keys)  # compile (or load) every kernel untimed
    for policy in range(5):
        cache_hit_flags(*args_of(warm), 8, policy, mode, False, 16)
    lru_hit_counts(warm.keys, warm.group_offsets, warm.seq_group_offsets, num_keys, num_keys, mode, False)
    fifo_hit_counts(warm.keys, warm.group_offsets, warm.seq_group_offsets, num_keys, 8, mode, False)
    for policy in (codes.LFU, codes.BELADY, codes.SCH):
        stack_hit_counts(*args_of(warm), num_keys, policy, mode, False, 16)

    lcs_rate: dict[str, float] = {}
    if lcs is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "stream.oracleGeneral"
            write_oracle_general(path, keys)
            for name in ("lru", "belady", "fifo"):
                lcs_rate[name], misses = libcachesim_rate(lcs, name, path, capacity, count, args.repeat)
                flags = cache_hit_flags(*args_of(stream), capacity, codes.POLICY_CODES[name], mode, False, 1)
                assert int((flags == 0).sum()) == misses, f"{name}: miss counts differ from libCacheSim"

    label = f"{count / 1e6:g}M requests over {num_keys} keys, k=1"
    for name, goal in [("lru", ">= 5x libCacheSim"), ("belady", ""), ("lfu", ""), ("sch", ""), ("fifo", "")]:
        policy = codes.POLICY_CODES[name]
        seconds = best_time(lambda: cache_hit_flags(*args_of(stream), capacity, policy, mode, False, 16),
                            args.repeat)
        case = f"{name}{' m=16' if name == 'sch' else ''}, one size c={capacity} [{label}]"
        table.add(case, count / seconds, lcs_rate.get(name), naive_rate(small, policy, capacity, 1), goal)
        label = "same stream"

    def curve(policy):
        if policy == codes.LRU:
            return lambda: lru_hit_counts(keys, stream.group_offsets, stream.seq_group_offsets, num_keys, num_keys,
                                          mode, False)
        return lambda: stack_hit_counts(*args_of(stream), num_keys, policy, mode, False, 16)

    for name, goal in [("lru", ">= 1x libCacheSim"), ("belady", ">= 1x libCacheSim"), ("lfu", ""), ("sch", "")]:
        policy = codes.POLICY_CODES[name]
        seconds = best_time(curve(policy), args.repeat if policy == codes.LRU else 1)
        case = f"{name}{' m=16' if name == 'sch' else ''} curve, all {num_keys} sizes in one pass"
        table.add(case, count / seconds, lcs_rate.get(name), naive_rate(small, policy, capacity, num_keys), goal)
    prefix = keys[: args.fifo_requests]
    seconds = best_time(lambda: fifo_hit_counts(prefix, stream.group_offsets[: len(prefix) + 1],
                                                np.array([0, len(prefix)], dtype=np.int64), num_keys, num_keys,
                                                mode, False), 1)
    table.add(f"fifo curve, all {num_keys} sizes, one simulation each [first {len(prefix) / 1e6:g}M requests]",
              len(prefix) / seconds, lcs_rate.get("fifo"), naive_rate(small, codes.FIFO, capacity, num_keys))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000_000, help="synthetic stream length")
    parser.add_argument("--keys", type=int, default=768, help="distinct keys (768 = GPT-OSS-20B E*L)")
    parser.add_argument("--naive-requests", type=int, default=10_000, help="stream length for the twins")
    parser.add_argument("--fifo-requests", type=int, default=1_000_000, help="stream length for the FIFO curve")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many timed runs (fast cases)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import libcachesim as lcs
    except ImportError:
        lcs = None
        print("libcachesim is not installed (pip install 'moesim[test]'): its columns stay empty", file=sys.stderr)
    table = Table()
    synthetic_rows(table, lcs, args)
    gpt_oss_rows(table, lcs, args.repeat)
    step_form_rows(table, args.seed)
    print(table.render())
    return 0


def gpt_oss_rows(table: Table, lcs, repeat: int) -> None:
    """Model-level curves of the shipped GPT-OSS-20B trace (768 keys, 96 requests per token);
    libCacheSim runs its sequences back to back in one cache at one size (rho = 2)."""
    if not GPT_OSS.exists():
        print(f"{GPT_OSS} is missing: GPT-OSS-20B rows left out", file=sys.stderr)
        return
    from moesim import read_trace
    from moesim.metrics.hit_curve import hit_curve

    trace = read_trace(GPT_OSS)
    count = trace.num_tokens * trace.num_layers * trace.top_k
    base: dict[str, float] = {}
    if lcs is not None:
        stream = RequestStream.from_trace(trace, level="model", grouping="layer")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "gpt-oss.oracleGeneral"
            write_oracle_general(path, np.asarray(stream.keys))
            for policy in ("lru", "belady", "fifo"):
                base[policy], _ = libcachesim_rate(lcs, policy, path, 192, count, repeat)
    label = f" [GPT-OSS-20B model level, {count / 1e6:.2f}M requests, {trace.num_sequences} sequences]"
    for policy, segment in [("lru", None), ("belady", None), ("lfu", None), ("sch", 16), ("fifo", None)]:
        for accounting in ("reference", "request", "pinned"):
            seconds = best_time(lambda: hit_curve(trace, policy, level="model", segment=segment,
                                                  accounting=accounting), 1)
            name = policy if segment is None else f"{policy} m={segment}"
            table.add(f"hit_curve {name}, {accounting}{label}", count / seconds, base.get(policy))
            label = ""


def step_form_rows(table: Table, seed: int) -> None:
    """The pure-Python step form (ExpertCache) the simulator drives: pinned groups of 4 (one MoE
    layer's lookup), 50k requests over 768 keys, 192 slots."""
    from moesim.policies.eviction import ExpertCache

    keys = locality_stream(200_000, 768, seed + 1)
    groups = [list(dict.fromkeys(keys[i : i + 4].tolist())) for i in range(0, 50_000, 4)]
    flat = np.array([k for g in groups for k in g], dtype=np.int32)
    offsets = np.zeros(len(groups) + 1, dtype=np.int64)
    np.cumsum([len(g) for g in groups], out=offsets[1:])
    future = RequestStream(flat, offsets, np.arange(len(groups), dtype=np.int64),
                           np.array([0, len(groups)], dtype=np.int64), 768)
    for policy in ("lru", "fifo", "lfu", "belady", "sch"):
        cache = ExpertCache(192, policy, params={"segment": 16} if policy == "sch" else None, future=future)
        start = time.perf_counter()
        for group in groups:
            cache.request_group(group)
        table.add(f"step form ExpertCache.request_group, {policy}, groups of <= 4",
                  len(flat) / (time.perf_counter() - start))


if __name__ == "__main__":
    sys.exit(main())
