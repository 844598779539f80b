#!/usr/bin/env python
"""Convert GPT-OSS expert-fingerprinting prompt files into the trace shipped in traces/.

    python tools/convert_gptoss.py RAW_DIR OUT_DIR

RAW_DIR is a checkout (or partial copy) of
https://github.com/AmanPriyanshu/GPT-OSS-MoE-ExpertFingerprinting, or its ``data/`` directory;
every ``*.json`` below ``data/`` becomes one sequence (sorted path order). With
``--select-from TRACE`` only the files an existing trace was made from are taken (so a full
checkout, 703 files, reproduces the shipped 33-prompt trace). Writes
``OUT_DIR/gpt-oss-20b-fingerprinting.parquet`` atomically and prints a Markdown table of the
sequences for traces/README.md. The output is byte-for-byte reproducible from the same inputs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from moesim import read_trace, write_trace
from moesim.errors import MoesimError, one_line
from moesim.trace.importers import import_trace
from moesim.trace.importers.gptoss import LICENSE, REPOSITORY

COMMIT = "72b368f60045221f21eeb65debb27d58de92e565"
OUTPUT_NAME = "gpt-oss-20b-fingerprinting.parquet"


def convert(
    raw_dir: Path,
    out_dir: Path,
    *,
    commit: str = COMMIT,
    model: str = "openai/gpt-oss-20b",
    select: list[str] | None = None,
) -> Path:
    """Import the prompt files under ``raw_dir`` (its ``data/`` if present) and write the trace.

    ``select`` lists paths relative to the repository root (``data/...``) to take instead of all.
    """
    data_dir = raw_dir / "data" if (raw_dir / "data").is_dir() else raw_dir
    if select is None:
        trace = import_trace(data_dir, "gptoss-json", model=model)
    else:
        with tempfile.TemporaryDirectory() as staging:
            for relative in select:
                inside = Path(relative).relative_to("data")
                target = Path(staging) / inside
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data_dir / inside, target)
            trace = import_trace(Path(staging), "gptoss-json", model=model)
    # Paths relative to the repository root, so each sequence names its file at that commit.
    sequences = [{**record, "file": f"data/{record['file']}"} for record in trace.metadata["sequences"]]
    trace = trace.with_metadata(
        source={"format": "gptoss-json", "file": "data"},
        license=LICENSE,
        repository=REPOSITORY,
        commit=commit,
        sequences=sequences,
        description=(
            "Decode-phase routing of openai/gpt-oss-20b (greedy, batch 1, HF transformers) on "
            f"{trace.num_sequences} benchmark prompts; see traces/README.md"
        ),
    )
    return write_trace(trace, out_dir / OUTPUT_NAME)


def markdown_table(path: Path) -> str:
    """The per-sequence table of traces/README.md."""
    trace = read_trace(path)
    lines = [
        "| seq | file under `data/` (benchmark/category/...) | finished | prompt tokens | decode tokens |",
        "|---:|---|---|---:|---:|",
    ]
    for record in trace.metadata["sequences"]:
        lines.append(
            f"| {record['seq_id']} | {Path(record['file']).relative_to('data').as_posix()} | "
            f"{'yes' if record['finished_successfully'] else 'no (512-token cap)'} | {record['prompt_tokens']} | "
            f"{record['decode_tokens']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw_dir", type=Path, help="repository checkout or its data/ directory")
    parser.add_argument("out_dir", type=Path, help="where to write the trace (e.g. traces/)")
    parser.add_argument("--commit", default=COMMIT, help=f"commit the files come from (default {COMMIT})")
    parser.add_argument(
        "--select-from",
        type=Path,
        metavar="TRACE",
        help="take only the files TRACE was made from (e.g. traces/gpt-oss-20b-fingerprinting.parquet)",
    )
    args = parser.parse_args(argv)
    try:
        select = None
        if args.select_from is not None:
            select = [record["file"] for record in read_trace(args.select_from).metadata["sequences"]]
        path = convert(args.raw_dir, args.out_dir, commit=args.commit, select=select)
    except MoesimError as exc:
        print(f"convert_gptoss: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    print(markdown_table(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
