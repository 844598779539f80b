"""The README's two commands are what CI runs, and what they name exists."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO


def _command(marker: str) -> str:
    out = subprocess.run(
        ["awk", "-v", f"marker=<!-- {marker} -->", "$0 == marker {getline; getline; print; exit}", "README.md"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out, f"README has no command under <!-- {marker} -->"
    return out


def test_ci_runs_the_readme_commands():
    ci = (REPO / ".ci" / "run").read_text()
    assert 'readme_command test-command' in ci and 'readme_command main-command' in ci
    tests = _command("test-command")
    assert "pytest" in tests and "pip install" in tests and ".[test" in tests
    assert "torch==2.13.0" in tests  # the CPU build from local disk, never a CUDA download
    # .ci/run spells both commands out and runs them as written (the main job in its own venv)
    assert f'TEST_COMMAND="{tests}"' in ci and f"\n{tests} </dev/null || exit 1" in ci
    main = _command("main-command")
    assert f'MAIN_COMMAND="{main}"' in ci and f"\n{main.replace('.venv', '.venv-main')} </dev/null || exit 1" in ci


def test_main_command_runs_a_shipped_scenario():
    main = _command("main-command")
    scenario = re.search(r"moesim run (\S+)", main).group(1)
    assert (REPO / scenario).is_file()
    assert "pip install ." in main


def test_every_file_the_readme_links_exists():
    """Images and relative links (``![..](path)``, ``[..](path)``) name files in the repository."""
    text = (REPO / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert any(t.endswith(".png") for t in targets)
    missing = [t for t in targets if not (REPO / t.split("#")[0]).exists()]
    assert not missing, missing
