"""``moesim trace capture``: record a routing trace from a Hugging Face MoE model (extra: capture)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from moesim.cli._common import print_json


def register(subparsers) -> None:
    from moesim.capture.architectures import ARCHITECTURES

    labels = ", ".join(spec.label for _, spec in ARCHITECTURES.items())
    parser = subparsers.add_parser(
        "capture",
        help="record a routing trace from a Hugging Face MoE model (prefill + greedy decode)",
        description=(
            f"Run a transformers MoE model ({labels}) on prompts with greedy decoding and record, for every "
            "prompt token (prefill) and every generated token fed back (decode), each MoE layer's routed "
            "experts in router order with their gate weights. Each finished prompt is appended durably; "
            "after a crash rerun with --resume. Needs `pip install 'moesim[capture]'`."
        ),
    )
    parser.add_argument("--model", required=True, metavar="ID_OR_PATH", help="Hub model id or local directory")
    parser.add_argument(
        "--prompts",
        required=True,
        type=Path,
        metavar="FILE",
        help='.txt (one prompt per line) or .jsonl ({"prompt": ...}, {"messages": [...]} or {"input_ids": [...]})',
    )
    parser.add_argument("--out", required=True, type=Path, metavar="TRACE", help="output trace (.parquet or .arrow)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, metavar="N", help="tokens to generate per prompt (default 64)"
    )
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (default: cuda if available)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (the checkpoint's), bfloat16, float16 or float32 (default auto)"
    )
    parser.add_argument("--revision", help="Hub branch, tag or commit to load")
    parser.add_argument(
        "--chat-template", action="store_true", help="wrap text prompts as a user message in the chat template"
    )
    parser.add_argument("--batch-size", type=int, default=1, metavar="B", help="prompts per generate call (default 1)")
    parser.add_argument("--logits", action="store_true", help="also store full router logits (float16)")
    parser.add_argument(
        "--speculative",
        action="store_true",
        help="also store each layer's router applied to the previous MoE layer's input (predicted_experts)",
    )
    parser.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens tokens")
    parser.add_argument(
        "--sort-by-length", action="store_true", help="batch prompts of similar length together (less padding)"
    )
    journal = parser.add_mutually_exclusive_group()
    journal.add_argument("--resume", action="store_true", help="continue an interrupted capture of the same settings")
    journal.add_argument(
        "--overwrite", action="store_true", help="discard an interrupted capture of --out and start over"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from moesim.capture import _deps

    _deps.require()
    from moesim.capture import CaptureOptions, run_capture

    options = CaptureOptions.from_attributes(args)
    with ProgressBar() as bar:
        result = run_capture(
            args.model,
            args.prompts,
            args.out,
            options=options,
            device=args.device,
            dtype=args.dtype,
            revision=args.revision,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=bar.update,
        )
    summary = result_summary(result)
    if args.json:
        print_json(summary)
    elif result.prompts_captured == 0 and result.prompts_resumed == result.num_prompts:
        print(f"{summary['path']} is already complete ({summary['num_prompts']} prompts); nothing to do")
    else:
        print(
            f"wrote {summary['path']}: {summary['num_prompts']} prompts ({summary['prompts_resumed']} from an "
            f"earlier run), {summary['tokens_captured']} tokens captured in {summary['elapsed_s']:.1f} s"
        )
    return 0


def result_summary(result: Any) -> dict[str, Any]:
    """A :class:`~moesim.capture.CaptureResult` as JSON-ready data, with throughput."""
    elapsed_s = float(result.elapsed_s)
    return {
        "path": str(result.path),
        "num_prompts": result.num_prompts,
        "prompts_captured": result.prompts_captured,
        "prompts_resumed": result.prompts_resumed,
        "tokens_captured": result.tokens_captured,
        "elapsed_s": elapsed_s,
        "tokens_per_s": result.tokens_captured / elapsed_s if elapsed_s > 0 else None,
    }


class ProgressBar:
    """Prompt progress on stderr when it is a terminal (tqdm if installed), else silent."""

    def __init__(self, *, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, progress: Any) -> None:
        if not self.enabled:
            return
        rate = progress.tokens_captured / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        if self._bar is None:
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                total = progress.prompts_total
                self._bar = tqdm(total=total, desc="capture", unit="prompt", file=sys.stderr, leave=False)
        if self._bar is not None:
            self._bar.n = progress.prompts_done
            self._bar.set_postfix_str(f"{rate:.0f} tok/s", refresh=True)
        else:
            sys.stderr.write(f"\rcapture {progress.prompts_done}/{progress.prompts_total} ({rate:.0f} tok/s)")
            sys.stderr.flush()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            sys.stderr.write("\n")
