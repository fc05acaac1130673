"""A scripted chat model for routing tests: answers by the tool (schema) it is asked to call.

``script`` maps a schema name (GoalSpec, Taxonomy, ...) to a function of the rendered user
message that returns the tool arguments (a dict), or a string to send as plain content
(to exercise validation retries). Every request is recorded for assertions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr


class ScriptedChatModel(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    script: dict[str, Callable[[str], Any]]
    tokens: tuple[int, int] = (100, 20)
    _requests: list = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    @property
    def requests(self) -> list[dict]:
        return self._requests

    def bind_tools(self, tools, tool_choice=None, **kwargs):
        name = tools[0].__name__ if hasattr(tools[0], "__name__") else tools[0]["function"]["name"]
        return self.bind(tool_name=name, **kwargs)

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, tool_name: str | None = None,
                  response_format: dict | None = None, **kwargs) -> ChatResult:
        user = [m for m in messages if m.type == "human"]
        text = str(user[0].content) if user else ""
        as_json = response_format is not None
        if as_json:  # the schema is named by response_format (json_schema) or its schema's title (llamacpp)
            tool_name = (response_format.get("json_schema") or {}).get("name") or \
                (response_format.get("schema") or {}).get("title")
        self._requests.append({"tool": tool_name, "messages": [(m.type, str(m.content)) for m in messages],
                               "response_format": response_format})
        fn = self.script.get(tool_name or "text")
        if fn is None:
            raise RuntimeError(f"no script for {tool_name}")
        out = fn(text) if len(messages) <= 2 else fn(text + "\n" + str(messages[-1].content))
        usage = {"input_tokens": self.tokens[0], "output_tokens": self.tokens[1],
                 "total_tokens": sum(self.tokens)}
        if isinstance(out, str):
            msg = AIMessage(content=out, usage_metadata=usage)
        elif as_json:
            msg = AIMessage(content=json.dumps(out), usage_metadata=usage)
        else:
            call = {"name": tool_name, "args": out, "id": f"call_{len(self._requests)}"}
            msg = AIMessage(content="", tool_calls=[call], usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=msg)])


def physics_script(**over) -> dict[str, Callable[[str], Any]]:
    """A plausible physics run over tests/data/lessons."""
    script = {
        "GoalSpec": lambda t: {"title": "Physics", "subjects": ["Physics"], "level": "middle school",
                               "language": "en"},
        "Taxonomy": lambda t: {"subjects": [{"name": "Physics", "courses": [{"name": "Mechanics", "subcourses": [
            {"name": "Forces", "points": [{"name": "Newton's laws of motion", "difficulty": 2},
                                          {"name": "Atoms and molecules", "difficulty": 3}]}]}]}]},
        "Queries": lambda t: {"queries": ["newton laws motion" if "Newton" in t else "atoms molecules chemistry"]},
        "MetadataVerdict": lambda t: {"verdict": "accept", "score": 8, "reasons": ["a lesson"]},
        "TranscriptVerdict": lambda t: {"relevance": 8, "density": 7, "quality": 8, "verdict": "accept",
                                        "reasons": ["teaches the point"]},
        "Polished": lambda t: {"text": _paragraph(t)},
        "ClipDecision": lambda t: {"decision": "keep", "reasons": ["slides match the speech"]},
    }
    script.update(over)
    return script


def _paragraph(prompt: str) -> str:
    """Echo the fenced paragraph back (a faithful 'polish')."""
    start = prompt.find('<untrusted name="paragraph">')
    end = prompt.find("</untrusted>", start)
    return prompt[start + len('<untrusted name="paragraph">'):end].strip() if start >= 0 else "text"


def models_for(model: ScriptedChatModel) -> dict:
    from agents.config import ROLES

    return dict.fromkeys(ROLES, model)


def dumps(x) -> str:
    return json.dumps(x)


_POINT = re.compile(r'(?:knowledge point:?|lesson video on)\s+"([^"]+)"', re.IGNORECASE)
_TINY = frozenset("and the for with from into".split())


def fenced(prompt: str, name: str) -> str | None:
    """The text of the ``<untrusted name=NAME>`` block of a rendered prompt, or None."""
    m = re.search(rf'<untrusted name="{re.escape(name)}">\n(.*?)\n</untrusted>', prompt, re.S)
    return m.group(1) if m else None


def point_of(prompt: str) -> str:
    """The knowledge point a rendered judge, polish or clip prompt is about."""
    m = _POINT.search(prompt)
    return m.group(1) if m else ""


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in _TINY}


def points(*names: str) -> list[dict]:
    """Knowledge points for a scripted taxonomy, difficulty rising in the order given."""
    return [{"name": n, "difficulty": min(5, i)} for i, n in enumerate(names, 1)]


def judge_by_title(prompt: str) -> dict:
    """A metadata judge that accepts a video only when its (fenced) title shares a word with the point."""
    title, point = fenced(prompt, "title") or "", point_of(prompt)
    shared = sorted(content_words(title) & content_words(point))
    if shared:
        return {"verdict": "accept", "score": 8, "reasons": [f"title shares {', '.join(shared)}"]}
    return {"verdict": "reject", "score": 2, "reasons": [f"title {title!r} is not about {point!r}"]}


def judge_values(title: str) -> dict:
    """The metadata judge prompt's values for a lesson titled ``title`` (the gateway tests' typical call)."""
    import prompts

    p = prompts.load("metadata_judge")
    return {**{v: "unknown" for v in p.variables()}, "point": "Newton's laws of motion",
            "path": "Physics > Mechanics", "level": "middle school", "language": "en", "title": title,
            "description": "A lesson.", "comments": "- great"}
