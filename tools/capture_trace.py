#!/usr/bin/env python
"""Capture routing traces of a large MoE model on a GPU machine (a driver over ``moesim.capture``).

Differences from ``moesim trace capture``: the model is spread over every visible GPU (and CPU
RAM if needed) with ``device_map="auto"`` (needs ``accelerate``); prompts are batched by length
by default; the run is always resumable (rerun the same command after a crash, a pre-emption or
Ctrl-C and it continues after the last durable prompt); progress goes to stderr as log lines
(throughput, ETA, peak GPU memory) that survive in batch-job logs.

Example (8x H100, 1k prompts)::

    pip install 'moesim[capture]' accelerate
    python tools/capture_trace.py --model deepseek-ai/DeepSeek-V2-Lite --prompts prompts.jsonl \\
        --out traces/dsv2-lite.parquet --max-new-tokens 256 --batch-size 16 --speculative

Then ``moesim trace info traces/dsv2-lite.parquet``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from moesim.errors import MoesimError, one_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="Hub model id or local directory")
    parser.add_argument("--prompts", required=True, help=".txt (one per line) or .jsonl prompts")
    parser.add_argument("--out", required=True, help="output trace (.parquet, or .arrow for very large traces)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="auto (checkpoint dtype), bfloat16, float16, float32")
    parser.add_argument("--revision", help="Hub branch, tag or commit (recorded; pin it for reproducible traces)")
    parser.add_argument(
        "--device-map",
        default="auto",
        help="from_pretrained device_map: auto (all GPUs, then CPU), balanced, sequential, or 'none' "
        "to put the whole model on --device",
    )
    parser.add_argument("--device", default="auto", help="device when --device-map none (default: cuda if available)")
    parser.add_argument("--attn-implementation", help="e.g. sdpa, eager, flash_attention_2")
    parser.add_argument("--chat-template", action="store_true", help="wrap text prompts in the chat template")
    parser.add_argument("--logits", action="store_true", help="also store router logits (float16)")
    parser.add_argument("--speculative", action="store_true", help="also store speculative next-layer guesses")
    parser.add_argument("--ignore-eos", action="store_true", help="always decode --max-new-tokens tokens")
    parser.add_argument("--file-order", action="store_true", help="batch prompts in file order, not by length")
    parser.add_argument(
        "--overwrite", action="store_true", help="discard an interrupted capture of --out instead of resuming it"
    )
    parser.add_argument("--log-every-s", type=float, default=30.0, help="seconds between progress lines")
    return parser.parse_args(argv)


class ProgressLog:
    """One progress line at most every ``every_s`` seconds, plus the last one."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self._last = -float("inf")
        self._first_done: int | None = None

    def __call__(self, progress: Any) -> None:
        if self._first_done is None:
            self._first_done = progress.prompts_done - 1
        now = time.perf_counter()
        finished = progress.prompts_done == progress.prompts_total
        if now - self._last < self.every_s and not finished:
            return
        self._last = now
        done_here = progress.prompts_done - self._first_done
        rate_prompts = done_here / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        left = progress.prompts_total - progress.prompts_done
        eta_s = left / rate_prompts if rate_prompts > 0 else float("nan")
        tokens_per_s = progress.tokens_captured / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        print(
            f"[capture] {progress.prompts_done}/{progress.prompts_total} prompts, "
            f"{progress.tokens_captured} tokens in {progress.elapsed_s:.0f} s ({tokens_per_s:.0f} tok/s), "
            f"ETA {eta_s / 60:.1f} min{_gpu_memory()}",
            file=sys.stderr,
            flush=True,
        )


def _gpu_memory() -> str:
    import torch

    if not torch.cuda.is_available():
        return ""
    peaks = [torch.cuda.max_memory_allocated(i) / 2**30 for i in range(torch.cuda.device_count())]
    return ", peak GPU memory " + "/".join(f"{p:.1f}" for p in peaks) + " GiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from moesim.capture import CaptureOptions, _deps, run_capture

        _deps.require()
        args.sort_by_length = not args.file_order
        options = CaptureOptions.from_attributes(args)
        device_map = None if args.device_map.lower() == "none" else args.device_map
        print(f"[capture] {args.model} (device_map={device_map}, dtype={args.dtype})", file=sys.stderr, flush=True)
        result = run_capture(
            args.model,
            args.prompts,
            args.out,
            options=options,
            device=args.device,
            dtype=args.dtype,
            revision=args.revision,
            device_map=device_map,
            attn_implementation=args.attn_implementation,
            resume=not args.overwrite,
            overwrite=args.overwrite,
            progress=ProgressLog(args.log_every_s),
        )
    except MoesimError as exc:
        print(f"capture_trace: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("capture_trace: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
    print(
        f"wrote {result.path}: {result.num_prompts} prompts ({result.prompts_resumed} from earlier runs), "
        f"{result.tokens_captured} tokens captured in {result.elapsed_s:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
