"""The README's "Your own data" and "Your own space" walkthroughs run as written.

examples/walkthrough.sh holds their commands; the README shows the same lines (checked here), and
the script runs in an empty folder with the installed `spacec` on PATH, exactly as a new user
would type it (one torch thread through OMP_NUM_THREADS: this machine's cores are shared).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "examples" / "walkthrough.sh"
README = ROOT / "README.md"


def walkthrough_lines() -> list[str]:
    """The script's commands and file contents: every line but comments, blanks and `set`."""
    lines = []
    for line in SCRIPT.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("set -"):
            continue
        lines.append(line.rstrip())
    return lines


def test_the_readme_shows_the_walkthrough_line_for_line():
    readme = README.read_text(encoding="utf-8").splitlines()
    position = 0
    for line in walkthrough_lines():
        while position < len(readme) and readme[position].rstrip() != line:
            position += 1
        assert position < len(readme), f"README.md lacks (in this order): {line}"
        position += 1


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # The data's three classes, recorded and used at the space's or the asked-for size.
    assert "classes=3 (--set)" in done.stderr and "32x32 resized" in done.stderr
    assert "classes=3 (search run darts_cnn-" in done.stderr
    assert "C=4 (space file), layers=4 (space file), classes=3 (space file)" in done.stderr
    assert "64x64 as stored" in done.stderr
    predictions = [line for line in done.stdout.splitlines() if line.startswith("data/test/")]
    assert len(predictions) == 2
    assert all(line.split("\t")[1].split()[0] in ("cat", "dog", "owl") for line in predictions)
    assert (tmp_path / "my_cells.pt").is_file()
    table = done.stdout[done.stdout.index("run  "):].splitlines()
    assert len(table) == 5 and all("finished" in row for row in table[1:])
