"""Regenerate the cache golden counts (tests/golden/cache_gpt_oss_20b.json) and print the diff.

    python tests/golden/regenerate_cache.py            # compare only; exit 1 if anything changed
    python tests/golden/regenerate_cache.py --write    # also write the new values (atomically)

Goldens pin behaviour: change them only when a semantic change is intended, and say why in the
commit. The cases and how they are computed live in tests/test_hit_curve.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from moesim import read_trace  # noqa: E402
from moesim.trace.io import atomic_write_text  # noqa: E402
from tests.test_hit_curve import GOLDEN_PATH, GOLDEN_TRACE, golden_cases, golden_key, golden_values  # noqa: E402


def _diff(key: str, old: dict | None, new: dict) -> list[str]:
    if old is None:
        return [f"+ {key}: new case"]
    if old.get("requests") != new["requests"]:
        return [f"~ {key}: requests {old.get('requests')} -> {new['requests']}"]
    if old.get("sizes") != new["sizes"]:
        return [f"~ {key}: sizes {old.get('sizes')} -> {new['sizes']}"]
    return [
        f"~ {key}: c={size}: {a} -> {b} ({b - a:+d})"
        for size, a, b in zip(new["sizes"], old["hits"], new["hits"])
        if a != b
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the regenerated file")
    args = parser.parse_args(argv)
    trace = read_trace(GOLDEN_TRACE)
    old = json.loads(GOLDEN_PATH.read_text())["cases"] if GOLDEN_PATH.exists() else {}
    new = {}
    for case in golden_cases():
        key = golden_key(case)
        new[key] = golden_values(trace, case)
    lines = [line for key in new for line in _diff(key, old.get(key), new[key])]
    lines += [f"- {key}: case removed" for key in old if key not in new]
    print("\n".join(lines) if lines else f"no change in {len(new)} cases")
    if args.write:
        header = {
            "trace": str(GOLDEN_TRACE.relative_to(GOLDEN_PATH.parents[2])),
            "what": "total hits over all sequences at each size; -1 = not applicable (pinned below k)",
        }
        rows = ",\n".join(f"  {json.dumps(key)}: {json.dumps(new[key])}" for key in sorted(new))
        head = json.dumps(header, indent=1)[:-2]  # one case per line keeps diffs readable
        atomic_write_text(GOLDEN_PATH, f'{head},\n "cases": {{\n{rows}\n }}\n}}\n')
        print(f"wrote {GOLDEN_PATH}")
    return 1 if lines and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
