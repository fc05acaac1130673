"""Run `textbook ...` in this process (fast: torch and transformers are imported once)."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def textbook(capsys, monkeypatch, *args: str) -> Result:
    from textbook.cli import main

    monkeypatch.setattr(sys, "argv", ["textbook", *args])
    monkeypatch.delenv("TEXTBOOK_DEBUG", raising=False)
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return Result(code, out.out, out.err)


def one_line_error(result: Result) -> str:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
