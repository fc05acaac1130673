"""Prompt templates as files, one per task, loaded by name.

A file holds a small front matter (name, version, which variables are untrusted) and two
sections, ``## system`` and ``## user``. ``{var}`` placeholders are filled in one pass, so
text inserted for one variable is never expanded again. Untrusted variables (titles,
descriptions, comments, transcripts) are fenced in ``<untrusted>`` blocks, and any fence
marker inside them is neutralised, so the data cannot close its fence and speak as the prompt.
Each call records the prompt's name, version and the sha256 of the file and preamble.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_VAR = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_FENCE = re.compile(r"<\s*/?\s*untrusted", re.IGNORECASE)


class PromptError(Exception):
    pass


def fence(name: str, text: str) -> str:
    """Wrap untrusted text as data; a fence marker inside it cannot close the block."""
    clean = _FENCE.sub(lambda m: m.group(0).replace("<", "&lt;"), str(text))
    return f'<untrusted name="{name}">\n{clean}\n</untrusted>'


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    sha256: str
    untrusted: tuple[str, ...]
    system: str
    user: str

    def variables(self) -> set[str]:
        return set(_VAR.findall(self.system + self.user)) - {"preamble"}

    def render(self, values: dict[str, object]) -> list[dict[str, str]]:
        """The chat messages, with every placeholder filled and untrusted values fenced."""
        missing = self.variables() - set(values)
        if missing:
            raise PromptError(f"prompt {self.name} needs {', '.join(sorted(missing))}")
        filled = {k: fence(k, v) if k in self.untrusted else str(v) for k, v in values.items()}
        filled["preamble"] = _preamble()

        def sub(text: str) -> str:
            return _VAR.sub(lambda m: filled.get(m.group(1), m.group(0)), text).strip()

        return [{"role": "system", "content": sub(self.system)}, {"role": "user", "content": sub(self.user)}]


@cache
def _preamble() -> str:
    return resources.files(__package__).joinpath("_preamble.txt").read_text().strip()


@cache
def load(name: str) -> Prompt:
    """Load prompts/NAME.md."""
    try:
        text = resources.files(__package__).joinpath(f"{name}.md").read_text()
    except FileNotFoundError as exc:
        raise PromptError(f"no prompt named {name!r}") from exc
    m = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    if not m:
        raise PromptError(f"prompt {name}: missing front matter")
    meta = dict(line.split(":", 1) for line in m.group(1).splitlines() if ":" in line)
    meta = {k.strip(): v.strip() for k, v in meta.items()}
    untrusted = tuple(x.strip() for x in meta.get("untrusted", "[]").strip("[]").split(",") if x.strip())
    parts = re.split(r"^## (system|user)\s*$", m.group(2), flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    if set(sections) != {"system", "user"}:
        raise PromptError(f"prompt {name}: needs a '## system' and a '## user' section")
    sha = hashlib.sha256((text + _preamble()).encode()).hexdigest()
    return Prompt(name=meta.get("name", name), version=int(meta.get("version", 1)), sha256=sha,
                  untrusted=untrusted, system=sections["system"], user=sections["user"])


NAMES = ("goal", "taxonomy", "queries", "metadata_judge", "transcript_judge", "polish", "clip_judge", "caption")
