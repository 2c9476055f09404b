"""A virtual environment of its own for each peer benchmark (the peers are not
dependencies of Agent Ledger): made on first use under the user's cache directory,
reused while its requirements are unchanged. Standard library only, so any python runs it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def venv_dir(name: str) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "agent-ledger-bench" / name


def prepare(name: str, requirements: list[str]) -> Path:
    """The python of the venv `name` with `requirements` installed, made if need be."""
    root = venv_dir(name)
    python = root / "bin" / "python"
    stamp = root / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"making the {name} venv in {root}: {' '.join(requirements)}", file=sys.stderr)
    # base_prefix: the interpreter under any venv this runs in, not that venv
    base = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base), "-m", "venv", str(root)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def run_in_venv(name: str, requirements: list[str]) -> None:
    """Re-execute the running script under its venv's python, unless already there."""
    root = venv_dir(name)
    if Path(sys.prefix).resolve() == root.resolve():
        return
    python = prepare(name, requirements)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [str(python), *sys.argv])
