"""Structured outputs of the agent's LLM calls: pydantic models with field descriptions.

The gateway validates every answer against one of these (with retries that feed the
validation error back); a node acts only on a validated value, never on free text.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator


def _clean(name: str) -> str:
    return " ".join(str(name).split())


def _distinct(names: list[str], what: str) -> list[str]:
    names = [_clean(n) for n in names]
    for n in names:
        if sum(ch.isalpha() for ch in n) < 3:
            raise ValueError(f"{what}: {n!r} is not a name (empty, or fewer than 3 letters)")
        if len(n) > 100 or any(ch in n for ch in "{}[]<>&\"\n"):
            raise ValueError(f"{what}: {n[:40]!r}… is not a short plain name")
    seen: set[str] = set()
    for n in names:
        if n.lower() in seen:
            raise ValueError(f"{what}: duplicate name {n!r}")
        seen.add(n.lower())
    return names


class GoalSpec(BaseModel):
    """What the researcher asked for."""

    title: str = Field(description="a short title for the textbook")
    subjects: list[str] = Field(min_length=1, description="school subjects, e.g. physics")
    level: str = Field(description="school level, e.g. middle school")
    language: str = Field("en", description="ISO 639-1 code of the videos' language")

    @field_validator("subjects")
    @classmethod
    def _subjects(cls, v: list[str]) -> list[str]:
        return _distinct(v, "subjects")

    @field_validator("language")
    @classmethod
    def _lang(cls, v: str) -> str:
        m = re.match(r"\s*([a-zA-Z]{2})(?![a-zA-Z])", v)
        if not m:
            raise ValueError("language must be a two-letter ISO 639-1 code")
        return m.group(1).lower()


class SubCourse(BaseModel):
    name: str = Field(description="sub-course name")
    points: list[str] = Field(min_length=1, description="knowledge points: one teachable idea each")

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[str]) -> list[str]:
        return _distinct(v, "knowledge points")


class Course(BaseModel):
    name: str = Field(description="course name")
    subcourses: list[SubCourse] = Field(min_length=1)

    @model_validator(mode="after")
    def _subs(self) -> Course:
        _distinct([s.name for s in self.subcourses], f"sub-courses of {self.name}")
        return self


class Subject(BaseModel):
    name: str = Field(description="subject name")
    courses: list[Course] = Field(min_length=1)

    @model_validator(mode="after")
    def _courses(self) -> Subject:
        _distinct([c.name for c in self.courses], f"courses of {self.name}")
        return self


class Taxonomy(BaseModel):
    """Subject > Course > Sub-course > Knowledge point."""

    subjects: list[Subject] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Taxonomy:
        _distinct([s.name for s in self.subjects], "subjects")
        points = [p for s in self.subjects for c in s.courses for u in c.subcourses for p in u.points]
        _distinct(points, "knowledge points of the taxonomy")
        return self

    def nodes(self) -> list[dict]:
        """Flatten to rows with stable ids: s1, s1.c1, s1.c1.u1, s1.c1.u1.p1."""
        out: list[dict] = []

        def add(node_id: str, parent: str | None, level: str, name: str) -> None:
            out.append({"node_id": node_id, "parent_id": parent, "level": level, "name": _clean(name),
                        "position": len(out)})

        for i, s in enumerate(self.subjects, 1):
            sid = f"s{i}"
            add(sid, None, "subject", s.name)
            for j, c in enumerate(s.courses, 1):
                cid = f"{sid}.c{j}"
                add(cid, sid, "course", c.name)
                for k, u in enumerate(c.subcourses, 1):
                    uid = f"{cid}.u{k}"
                    add(uid, cid, "subcourse", u.name)
                    for m, p in enumerate(u.points, 1):
                        add(f"{uid}.p{m}", uid, "point", p)
        return out


class Queries(BaseModel):
    queries: list[str] = Field(min_length=1, description="search queries, a few words each")

    @field_validator("queries")
    @classmethod
    def _q(cls, v: list[str]) -> list[str]:
        v = [_clean(q)[:200] for q in v]
        if any(not q for q in v):
            raise ValueError("a query is empty")
        return list(dict.fromkeys(v))


class MetadataVerdict(BaseModel):
    verdict: Literal["accept", "reject"]
    score: int = Field(ge=0, le=10, description="0 useless .. 10 an ideal lesson")
    reasons: list[str] = Field(min_length=1, description="short reasons for the verdict")


class TranscriptVerdict(BaseModel):
    relevance: int = Field(ge=0, le=10)
    density: int = Field(ge=0, le=10)
    quality: int = Field(ge=0, le=10)
    verdict: Literal["accept", "reject"]
    reasons: list[str] = Field(min_length=1)


class Polished(BaseModel):
    text: str = Field(min_length=1, description="the rewritten paragraph")


class ClipDecision(BaseModel):
    decision: Literal["keep", "drop_frames", "drop"]
    reasons: list[str] = Field(min_length=1)
