"""Structured outputs of the agent's LLM calls: pydantic models with field descriptions.

The gateway validates every answer against one of these (with retries that feed the
validation error back); a node acts only on a validated value, never on free text. Every
list and short string has a bound (``maxItems``, ``maxLength`` <= 120 in the JSON schema), so an
endpoint that decodes under the schema (llama.cpp grammars, vLLM guided decoding, OpenAI strict
schemas) cannot run away (the polished paragraph is bounded by max_tokens); ``sized_taxonomy``
bounds the tree to the configured size.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

NAME_CHARS = 80     # a subject, course, sub-course or knowledge point name
REASON_CHARS = 100  # one reason of a judge
MAX_REASONS = 2


def _clean(name: str) -> str:
    return " ".join(str(name).split())


_GENERIC = re.compile(r"^(?:an? |the )?(?:introduction to|intro to|basics of|overview of|fundamentals of|"
                      r"principles of|basic) +|(?: +(?:basics|fundamentals|overview|introduction))$", re.I)


def topic_name(name: str) -> str:
    """A taxonomy name as its topic: "Introduction to Variables" -> "Variables", "Programming Basics" ->
    "Programming" (kept as is when nothing would be left)."""
    name = _clean(name)
    bare = _GENERIC.sub("", name).strip()
    return bare[:1].upper() + bare[1:] if sum(ch.isalpha() for ch in bare) >= 3 and bare != name else name


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


Reasons = list[str]


def _reasons_field(what: str) -> object:
    return Field(min_length=1, max_length=MAX_REASONS, description=what,
                 json_schema_extra={"items": {"type": "string", "maxLength": REASON_CHARS}})


class GoalSpec(BaseModel):
    """What the researcher asked for."""

    title: str = Field(max_length=NAME_CHARS, description="a short title for the textbook")
    subjects: list[str] = Field(min_length=1, max_length=6, description="school subjects, e.g. physics",
                                json_schema_extra={"items": {"type": "string", "maxLength": 40}})
    level: str = Field(max_length=30, description="school level, e.g. middle school")
    language: str = Field("en", max_length=5, description="ISO 639-1 code of the videos' language")

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


class KnowledgePoint(BaseModel):
    """One teachable idea, with how hard it is within the textbook's level."""

    name: str = Field(max_length=NAME_CHARS, description="the idea, e.g. definition of irrational numbers")
    difficulty: int = Field(ge=1, le=5, description="1 = easiest .. 5 = hardest, for this level")

    @field_validator("name")
    @classmethod
    def _topic(cls, v: str) -> str:
        return topic_name(v)


class SubCourse(BaseModel):
    """A sub-course of the taxonomy: a name and 1-10 distinct knowledge points."""

    name: str = Field(max_length=NAME_CHARS, description="sub-course name")
    points: list[KnowledgePoint] = Field(min_length=1, max_length=10, description="knowledge points")

    @field_validator("name")
    @classmethod
    def _topic(cls, v: str) -> str:
        return topic_name(v)

    @model_validator(mode="after")
    def _points(self) -> SubCourse:
        _distinct([p.name for p in self.points], f"knowledge points of {self.name}")
        for p in self.points:
            p.name = _clean(p.name)
        # easy to difficult within the sub-course (the paper's curriculum order); stable for ties
        self.points = sorted(self.points, key=lambda p: p.difficulty)
        return self


class Course(BaseModel):
    """A course of the taxonomy: a name and 1-10 distinct sub-courses."""

    name: str = Field(max_length=NAME_CHARS, description="course name")
    subcourses: list[SubCourse] = Field(min_length=1, max_length=10)

    @field_validator("name")
    @classmethod
    def _topic(cls, v: str) -> str:
        return topic_name(v)

    @model_validator(mode="after")
    def _subs(self) -> Course:
        _distinct([s.name for s in self.subcourses], f"sub-courses of {self.name}")
        return self


class Subject(BaseModel):
    """A subject of the taxonomy (physics, chemistry, ...): a name and 1-12 distinct courses."""

    name: str = Field(max_length=NAME_CHARS, description="subject name")
    courses: list[Course] = Field(min_length=1, max_length=12)

    @model_validator(mode="after")
    def _courses(self) -> Subject:
        _distinct([c.name for c in self.courses], f"courses of {self.name}")
        return self


class Taxonomy(BaseModel):
    """Subject > Course > Sub-course > Knowledge point (each point with a difficulty)."""

    subjects: list[Subject] = Field(min_length=1, max_length=6)

    @model_validator(mode="after")
    def _unique(self) -> Taxonomy:
        _distinct([s.name for s in self.subjects], "subjects")
        points = [p.name for s in self.subjects for c in s.courses for u in c.subcourses for p in u.points]
        _distinct(points, "knowledge points of the taxonomy")
        return self

    def nodes(self) -> list[dict]:
        """Flatten to rows with stable ids: s1, s1.c1, s1.c1.u1, s1.c1.u1.p1 (points easy to difficult);
        ``difficulty`` is set on points only (1 = easiest)."""
        out: list[dict] = []

        def add(node_id: str, parent: str | None, level: str, name: str, difficulty: int | None = None) -> None:
            out.append({"node_id": node_id, "parent_id": parent, "level": level, "name": _clean(name),
                        "position": len(out), "difficulty": difficulty})

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
                        add(f"{uid}.p{m}", uid, "point", p.name, p.difficulty)
        return out


def _bounded(n: int, **kw) -> object:
    """A list of 1 to ``n`` items whose JSON schema asks for exactly ``n`` (minItems = maxItems): a decoder
    under the schema writes the asked-for size, a model that writes fewer still validates."""
    return Field(min_length=1, max_length=n, json_schema_extra={"minItems": n}, **kw)


def sized_taxonomy(subjects: int, courses: int, subcourses: int, points: int) -> type[Taxonomy]:
    """A Taxonomy bounded to the configured size at every level (schema: exactly that size), so a
    schema-constrained decoder writes the configured tree and nothing more. Validates like Taxonomy."""
    sub = create_model("SubCourse", __base__=SubCourse, points=(list[KnowledgePoint], _bounded(
        points, description="knowledge points, each one teachable idea")))
    course = create_model("Course", __base__=Course, subcourses=(list[sub], _bounded(subcourses)))
    subject = create_model("Subject", __base__=Subject, courses=(list[course], _bounded(courses)))
    return create_model("Taxonomy", __base__=Taxonomy, subjects=(list[subject], _bounded(subjects)))


class Queries(BaseModel):
    """The queries prompt's answer: 1-8 search queries for one knowledge point, whitespace folded, distinct, each at
    most 200 characters; an empty one is a validation error."""

    queries: list[str] = Field(min_length=1, max_length=8, description="what a student would type into video search",
                               json_schema_extra={"items": {"type": "string", "maxLength": NAME_CHARS}})

    @field_validator("queries")
    @classmethod
    def _q(cls, v: list[str]) -> list[str]:
        v = [_clean(q)[:200] for q in v]
        if any(not q for q in v):
            raise ValueError("a query is empty")
        return list(dict.fromkeys(v))


def sized_queries(n: int) -> type[Queries]:
    """Queries bounded to ``n`` (schema: exactly ``n``)."""
    return create_model("Queries", __base__=Queries, queries=(list[str], Field(
        min_length=1, max_length=n, description="what a student would type into video search",
        json_schema_extra={"items": {"type": "string", "maxLength": NAME_CHARS}, "minItems": n})))


class MetadataVerdict(BaseModel):
    """The metadata judge's answer on one candidate (title, description, channel, length): accept or reject, a
    0-10 score and at most two short reasons (PAPER.md section 1, the metadata filter)."""

    reasons: Reasons = _reasons_field("short reasons, first: what the video is about")
    verdict: Literal["accept", "reject"]
    score: int = Field(ge=0, le=10, description="0 useless .. 10 an ideal lesson for the knowledge point")


class TranscriptVerdict(BaseModel):
    """The transcript judge's answer on one ASR transcript: relevance, knowledge density and transcript quality
    (0-10 each), a verdict and at most two short reasons (PAPER.md section 2, the LLM filter on the raw
    transcript)."""

    reasons: Reasons = _reasons_field("short reasons, first: what the transcript teaches")
    relevance: int = Field(ge=0, le=10, description="0 another topic .. 10 teaches the knowledge point")
    density: int = Field(ge=0, le=10, description="0 filler only .. 10 dense teaching")
    quality: int = Field(ge=0, le=10, description="0 unreadable .. 10 clean sentences")
    verdict: Literal["accept", "reject"]


class Polished(BaseModel):
    """The polisher's answer: one rewritten paragraph of ASR text (bounded by the call's max_tokens, not the schema)."""

    # no maxLength: llama.cpp expands {0,N} into N nested rules, and a few thousand crash its grammar
    # compiler (segfault); the answer is bounded by max_tokens instead
    text: str = Field(min_length=1, description="the rewritten paragraph")


class ClipDecision(BaseModel):
    """The clip judge's answer on one clip's paragraph and keyframes' OCR: keep it, keep its text without the
    keyframes (``drop_frames``), or drop it; with at most two short reasons."""

    reasons: Reasons = _reasons_field("short reasons")
    decision: Literal["keep", "drop_frames", "drop"]
