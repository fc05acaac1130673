"""`textbook --help` stays light: no command's help imports LangChain, LangGraph, DuckDB, torch, the media
tools or our pipeline. Each command imports what it runs, so start-up stays well under a second."""

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

# third-party packages that take tenths of a second to seconds to import, and our modules that pull them in
HEAVY = ("langchain_core", "langchain_openai", "langgraph", "torch", "duckdb", "faster_whisper", "ctranslate2",
         "cv2", "av", "transformers", "scipy", "numpy", "sentence_transformers", "pydantic_settings",
         "pipeline", "store", "train", "agents.graph", "agents.build", "agents.llm", "textbook.settings",
         "textbook.web")

# a fresh interpreter: the help of the app and of every command and subcommand, then what got imported
SCRIPT = """
import json, sys
import typer.main
from typer.testing import CliRunner
from textbook.cli import app

def paths(cmd, prefix):
    yield prefix
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from paths(sub, [*prefix, name])

runner = CliRunner()
helps = {}
for path in paths(typer.main.get_command(app), []):
    result = runner.invoke(app, [*path, "--help"])
    helps[" ".join(path)] = [result.exit_code, result.output[:2000]]
print(json.dumps({"helps": helps, "modules": sorted(sys.modules)}))
"""


def _help_run() -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_nothing_heavy():
    run = _help_run()
    helps = run["helps"]
    # every command shows its help (so the imports left out were not needed for it)
    for cmd in ("", "process", "build", "export", "stats", "runs", "trace", "batch", "doctor", "view", "review",
                "train", "eval", "llm", "llm serve", "estimate"):
        assert cmd in helps, sorted(helps)
        code, text = helps[cmd]
        assert code == 0, (cmd, text)
        assert "Usage:" in text, (cmd, text)
    assert "--db" in helps["process"][1] and "--goal" not in helps["process"][1]
    assert "--resume" in helps["build"][1]
    heavy = sorted(m for m in run["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == [], f"`textbook --help` imported {heavy}"
