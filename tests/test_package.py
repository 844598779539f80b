"""Import-time promises: `import moesim` and the CLI's start-up compile nothing and load no heavy extras."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("numba", "torch", "transformers", "matplotlib", "ray")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_moesim_loads_no_heavy_module():
    assert _loaded_after("import moesim") == set()


def test_lazy_public_api_resolves_without_compiling():
    loaded = _loaded_after(
        "import moesim\n"
        "moesim.hit_curve, moesim.srp, moesim.get_model, moesim.get_hardware, moesim.load_scenario, moesim.sim"
    )
    assert loaded == set()


def test_cli_start_up_loads_no_heavy_module():
    assert _loaded_after("from moesim.cli import build_parser\nbuild_parser()") == set()


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "moesim", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("moesim ")
    helped = subprocess.run([sys.executable, "-m", "moesim", "--help"], capture_output=True, text=True, check=True)
    for command in ("trace", "metrics", "run", "models", "hardware", "sweep", "report", "scaling"):
        assert command in helped.stdout
