#!/usr/bin/env python
"""Trace load time: Parquet and Arrow IPC via ``read_trace`` against ``numpy.load`` of the same ids.

    python tools/bench_trace_io.py [--tokens 104167] [--layers 24] [--top-k 4] [--experts 32] [--repeats 7]

Builds a random trace of tokens x layers x k expert ids (default 104,167 x 24 x 4 = 10,000,032
entries, 512-token sequences), writes it as .parquet, .arrow and the bare ``[T, L, k]`` int16 ids as
.npy in a temporary directory, reads every file once to warm the page cache, then times each way of
loading it (best and median of ``--repeats``). Every measurement ends with a checksum over all expert
ids (an XOR over the buffer viewed as uint64), so memory-mapped reads pay for touching their pages
and laziness cannot flatter them; all checksums must agree. Ratios are to ``numpy.load`` measured
in the same run. Goals: Arrow IPC within 1.5x, Parquet within 5x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from moesim import Trace, read_trace, write_trace


def make_trace(num_tokens: int, num_layers: int, top_k: int, num_experts: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    experts = np.empty((num_tokens, num_layers, top_k), dtype=np.int16)
    step = 8192  # argsort of [step, L, E] random keys per block keeps memory bounded
    for start in range(0, num_tokens, step):
        keys = rng.random((min(step, num_tokens - start), num_layers, num_experts), dtype=np.float32)
        experts[start : start + len(keys)] = np.argsort(keys, axis=-1)[..., :top_k]
    seq_ids = np.arange(num_tokens, dtype=np.int64) // 512
    return Trace.from_arrays(experts, num_experts=num_experts, seq_ids=seq_ids, model="bench", source="bench")


def checksum(experts: np.ndarray) -> int:
    """XOR of the ids' bytes as uint64 words (touches every byte; cheap next to any load)."""
    flat = experts.reshape(-1)
    whole = len(flat) - len(flat) % 4
    head = int(np.bitwise_xor.reduce(flat[:whole].view(np.uint64))) if whole else 0
    return head ^ int(np.bitwise_xor.reduce(flat[whole:].view(np.uint16), initial=0))


def arrow_experts(table: pa.Table) -> np.ndarray:
    """The experts column of a trace table as a flat numpy view (what read_trace reshapes)."""
    column = table.column("experts")
    chunk = column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)
    return chunk.flatten().flatten().to_numpy()


def _ipc_table(path: Path) -> pa.Table:
    return ipc.open_file(pa.memory_map(str(path))).read_all()


def measure(load: Callable[[], np.ndarray], repeats: int) -> tuple[float, float, int]:
    """(best seconds, median seconds, checksum) of ``checksum(load())``."""
    times, sums = [], set()
    for _ in range(repeats):
        start = time.perf_counter()
        sums.add(checksum(load()))
        times.append(time.perf_counter() - start)
    if len(sums) != 1:
        raise RuntimeError("checksums differ between repeats")
    return min(times), statistics.median(times), sums.pop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=104_167)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    args = parser.parse_args(argv)

    trace = make_trace(args.tokens, args.layers, args.top_k, args.experts, args.seed)
    entries = trace.experts.size
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        npy, parquet, arrow = directory / "t.npy", directory / "t.parquet", directory / "t.arrow"
        flat = directory / "flat.parquet"
        np.save(npy, trace.experts)
        write_trace(trace, parquet)
        write_trace(trace, arrow)
        pq.write_table(pa.table({"experts": trace.experts.reshape(-1)}), flat, compression="zstd")
        cases: list[tuple[str, Path, Callable[[], np.ndarray], float | None]] = [
            ("numpy.load .npy", npy, lambda: np.load(npy), None),
            ("numpy.load .npy mmap", npy, lambda: np.load(npy, mmap_mode="r"), None),
            ("read_trace .arrow", arrow, lambda: read_trace(arrow).experts, 1.5),
            ("read_trace .arrow validate=False", arrow, lambda: read_trace(arrow, validate=False).experts, 1.5),
            ("read_trace .parquet", parquet, lambda: read_trace(parquet).experts, 5.0),
            ("read_trace .parquet validate=False", parquet, lambda: read_trace(parquet, validate=False).experts, 5.0),
            # References: Arrow alone on the same files, and a flat int16 Parquet column (the
            # decode cost of the ids without the nested fixed-size-list levels).
            ("  Arrow IPC read_all (mmap)", arrow, lambda: arrow_experts(_ipc_table(arrow)), None),
            ("  pyarrow.parquet.read_table", parquet, lambda: arrow_experts(pq.read_table(parquet)), None),
            ("  flat int16 column .parquet", flat, lambda: pq.read_table(flat).column(0).to_numpy(), None),
        ]
        for _, _, load, _ in cases:  # warm the page cache (and any lazily loaded code)
            checksum(load())
        results = [
            (name, path.stat().st_size / 1e6, goal, *measure(load, args.repeats)) for name, path, load, goal in cases
        ]

    sums = {result[-1] for result in results}
    if len(sums) != 1:
        print("error: the loaders disagree on the data (checksums differ)", file=sys.stderr)
        return 1
    baseline = results[0][3]
    print(
        f"trace load time: {args.tokens} tokens x {args.layers} layers x k={args.top_k} = {entries:,} expert ids "
        f"(E={args.experts}), best of {args.repeats}, page cache warm, each run ends with a checksum over all ids"
    )
    print()
    header = f"{'method':36s} {'file MB':>8s} {'best ms':>8s} {'median ms':>10s} {'x numpy.load':>13s}  goal"
    print(header)
    print("-" * len(header))
    for name, size_mb, goal, best, median, _ in results:
        ratio = best / baseline
        verdict = "" if goal is None else (f"<= {goal:g}x " + ("ok" if ratio <= goal else "MISSED"))
        print(f"{name:36s} {size_mb:8.2f} {best * 1e3:8.2f} {median * 1e3:10.2f} {ratio:13.2f}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
