"""Which knowledge point each found video serves, and why a point stays short.

Pure functions over small typed records (no store, no graph), so they can move with the
stages that call them:

- ``fit(video_texts, point_texts, embed)``: how well each video fits each point, 0..1: the share of
  the point's name words found in the video's text, averaged with the cosine similarity of their
  embeddings (all-MiniLM-L6-v2 in the build) when there is an embedder, so two points that both
  name the video's words are told apart by meaning. On the sample lessons a lesson and its own
  point score 0.8-0.9, a lesson and another subject's point at most 0.2.
- ``assign(hits, need, min_fit)``: a video found by several points goes to the point it fits best,
  except where that would leave another point empty: points are first filled up to what they
  still need (a maximum-weight matching, scipy's ``linear_sum_assignment``: as many points served
  as possible, then the best total fit), and every other video goes to its best-fitting point
  as a spare. A video is never sent back to a point whose metadata judge already rejected it,
  and never to a point it fits below ``min_fit``.
- ``shortfall(...)``: why a point ended with fewer accepted videos than wanted: nothing found (or, when
  every source is a closed library, library exhausted: it was not searched again), searches failed, its
  videos fit other points better, failed (a fault of a step), all judged out, downloads failed, budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np

from tools.search import lexical_relevance

NEVER = -1.0


@dataclass(frozen=True)
class Hit:
    """A knowledge point's search found a video; ``verdict`` is the metadata judge's for that point
    (None: not judged for it yet)."""

    video_id: str
    point_id: str
    fit: float
    verdict: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where ``assign`` put a video: ``point_id`` (None: no point it may go to), and ``why``."""

    video_id: str
    point_id: str | None
    fit: float
    why: str  # needed | spare | no-point


@cache
def shared_embedder():
    """One all-MiniLM-L6-v2 for the whole process (loading it takes seconds)."""
    from tools.embed import TextEmbedder

    return TextEmbedder()


def embed_texts(texts: list[str]) -> np.ndarray:
    """Unit-length embeddings of ``texts`` with the shared embedder, shape (n, 384)."""
    return shared_embedder().encode(list(texts))


def point_text(chain: list[str]) -> str:
    """A point as the embedder and the judges see it: Subject > Course > Sub-course > Point."""
    return " > ".join(chain)


def fit(video_texts: list[str], point_texts: list[str], embed: Callable[[list[str]], np.ndarray] | None = None,
        point_names: list[str] | None = None) -> np.ndarray:
    """Fit of each video to each point, shape (videos, points), 0..1: the lexical share of the point's name
    words in the video's text, averaged with the embeddings' cosine similarity (negative as 0) when
    ``embed`` is given. ``point_names`` (default: the last ``>`` part of each point text) are what the
    lexical share is taken of."""
    names = point_names or [t.split(" > ")[-1] for t in point_texts]
    out = np.array([[lexical_relevance(n, v) for n in names] for v in video_texts], dtype=np.float64)
    out = out.reshape(len(video_texts), len(point_texts))
    if embed is not None and video_texts and point_texts:
        vectors = embed([*video_texts, *point_texts])
        cos = vectors[: len(video_texts)] @ vectors[len(video_texts):].T
        out = (out + np.clip(cos, 0.0, 1.0)) / 2
    return np.clip(out, 0.0, 1.0).round(4)


def assign(hits: Iterable[Hit], need: dict[str, int], min_fit: float) -> list[Placement]:
    """Place each video of ``hits`` at one point. ``need``: how many more videos each point wants (points
    already served are absent or 0). Deterministic: ties go to the smaller ids."""
    options: dict[str, dict[str, float]] = {}
    for h in hits:
        allowed = h.verdict != "reject" and h.fit >= min_fit
        options.setdefault(h.video_id, {})
        if allowed:
            options[h.video_id][h.point_id] = max(h.fit, options[h.video_id].get(h.point_id, NEVER))
    videos = sorted(options)
    placed: dict[str, tuple[str, str]] = {}
    for group, points in _components(videos, options, need):
        if len(points) == 1:  # no video of it is wanted elsewhere: the point takes its best fits
            p = points[0]
            ranked = sorted(group, key=lambda v: (-options[v][p], v))
            placed.update((v, (p, "needed")) for v in ranked[:need[p]])
        else:
            placed.update(_matching(group, points, options, need))
    out = []
    for v in videos:
        if v in placed:
            p, why = placed[v]
            out.append(Placement(v, p, options[v][p], why))
        elif options[v]:
            p = min(options[v], key=lambda k: (-options[v][k], k))
            out.append(Placement(v, p, options[v][p], "spare"))
        else:
            out.append(Placement(v, None, 0.0, "no-point"))
    return out


def _components(videos: list[str], options: dict[str, dict[str, float]],
                need: dict[str, int]) -> list[tuple[list[str], list[str]]]:
    """The videos that may fill a slot, split where no video links two points: (videos, points) per part,
    points that need something only. The matching of ``assign`` is the best of each part on its own, so
    each is solved apart: a part of one point needs no matching at all (a build of 20,000 candidates
    found by one point was a 20,000 x 20,000 matrix)."""
    parent: dict[str, str] = {}

    def root(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    wanted = [(v, [p for p in options[v] if need.get(p, 0) > 0]) for v in videos]
    for _, ps in wanted:
        for p in ps:
            parent.setdefault(p, p)
        for p in ps[1:]:
            parent[root(p)] = root(ps[0])
    parts: dict[str, tuple[list[str], set[str]]] = {}
    for v, ps in wanted:
        if ps:
            group, points = parts.setdefault(root(ps[0]), ([], set()))
            group.append(v)
            points.update(ps)
    return [(group, sorted(points)) for group, points in parts.values()]


def _matching(videos: list[str], points: list[str], options: dict[str, dict[str, float]],
              need: dict[str, int]) -> dict[str, tuple[str, str]]:
    """The maximum-weight matching of ``videos`` to the slots of ``points`` (scipy's
    ``linear_sum_assignment``): as many slots filled as possible, then the best total fit; a point has
    at most as many slots as videos that may fill them."""
    from scipy.optimize import linear_sum_assignment

    takers = {p: sum(1 for v in videos if p in options[v]) for p in points}
    slots = [p for p in points for _ in range(min(need[p], takers[p]))]
    big = 10.0  # one more point served outweighs any difference in fit
    weight = np.zeros((len(videos), len(slots)))
    for i, v in enumerate(videos):
        for j, p in enumerate(slots):
            f = options[v].get(p)
            if f is not None:
                weight[i, j] = big + f - j * 1e-9  # earlier slots of a point first
    rows, cols = linear_sum_assignment(weight, maximize=True)
    return {videos[i]: (slots[j], "needed") for i, j in zip(rows, cols, strict=True) if weight[i, j] > 0}


@dataclass(frozen=True)
class PointOutcome:
    """What became of one knowledge point's candidates, for ``shortfall``."""

    point_id: str
    wanted: int
    accepted: int
    hits: int                 # videos its searches found (relevant to its queries)
    queries: int              # searches made for it
    failed_queries: int       # of them, failed (network, quota, ...)
    assigned: int             # videos that were placed at it
    judged_out: int           # its videos rejected by the metadata judge, the rules, the transcript judges or clips
    download_failed: int
    waiting: int              # its videos accepted by the metadata judge but never downloaded
    closed_library: bool = False  # every source of the run is a closed library (local, urls): not re-queried
    failed: int = 0           # its videos whose step failed (status error: a fault, not a judgment)


def _videos(n: int, owner: str = "") -> str:
    """``its 1 video``, ``its 3 videos``: a count of videos in words, for the reasons below."""
    return f"{owner + ' ' if owner else ''}{n} video{'' if n == 1 else 's'}"


def shortfall(o: PointOutcome, stop: str | None) -> str | None:
    """Why ``o`` has fewer accepted videos than wanted (None when it has enough): a short sentence that
    starts with a reason keyword: nothing found | library exhausted | search failed | assigned elsewhere |
    failed | all judged out | download failed | budget. With a closed library (``o.closed_library``) a point
    whose searches found too little is ``library exhausted`` (its catalogue was scored against the point's
    searches; new phrasings would find nothing new), and one whose videos went to other points says the
    library has no other."""
    if o.accepted >= o.wanted:
        return None
    short = f"{o.accepted} of {o.wanted} videos"
    if o.queries and o.failed_queries == o.queries:
        return f"search failed: all {o.queries} searches failed ({short})"
    if stop and (o.waiting or not o.queries or
                 o.assigned > o.judged_out + o.download_failed + o.failed + o.accepted):
        return f"budget: the run stopped ({stop}) before this point was served ({short})"
    searches = f"{o.queries} search{'' if o.queries == 1 else 'es'}"
    if o.hits == 0 and o.closed_library:
        return (f"library exhausted: no video in the library is relevant to it ({searches}; a closed library "
                f"is not searched again) ({short})")
    if o.hits == 0:
        return f"nothing found: no relevant video in {searches} ({short})"
    if o.assigned == 0:
        other = "; the library has no other relevant video" if o.closed_library else ""
        return (f"assigned elsewhere: {_videos(o.hits, 'its')} fit{'s' if o.hits == 1 else ''} other knowledge "
                f"points better{other} ({short})")
    if o.failed:
        return (f"failed: {o.failed} of {o.assigned} videos failed (a fault, not a judgment; the same command "
                f"retries them) ({short})")
    if o.download_failed and o.download_failed + o.judged_out >= o.assigned:
        return (f"download failed: {o.download_failed} of {o.assigned} videos could not be downloaded"
                f"{f', {o.judged_out} judged out' if o.judged_out else ''} ({short})")
    if o.judged_out:
        return f"all judged out: {o.judged_out} of {o.assigned} videos rejected ({short})"
    if stop:
        return f"budget: the run stopped ({stop}) ({short})"
    if o.closed_library:
        return f"library exhausted: the library has only {o.assigned} videos for it ({short})"
    return f"not enough videos: {o.assigned} found for it ({short})"


def ground_in_library(tax, items: list, embed: Callable[[list[str]], np.ndarray] | None = None,
                      min_fit: float = 0.5) -> tuple:
    """Hold a taxonomy to the videos at hand (a local folder or URL list): each item (a Candidate) whose
    topic no knowledge point covers (fit < ``min_fit``) but whose subject is one of the taxonomy's gets a
    sub-course and a knowledge point of its own, named after its topic, under the course of that subject
    it fits best. Returns (a new Taxonomy, one line per addition). Small planners list the videos at
    hand and then ignore them; this keeps a local build from searching for topics it cannot find."""
    from agents import schemas

    data = tax.model_dump()
    added: list[str] = []
    for item in items:
        text = ". ".join(x for x in (item.title, str(item.extra.get("knowledge_point") or "")) if x)
        points = [(s, c, u, p) for s in data["subjects"] for c in s["courses"] for u in c["subcourses"]
                  for p in u["points"]]
        paths = [point_text([s["name"], c["name"], u["name"], p["name"]]) for s, c, u, p in points]
        if paths and fit([text], paths, embed, [p["name"] for *_, p in points]).max() >= min_fit:
            continue  # a point covers it
        subject_hint = str(item.extra.get("subject") or "")
        names = [s["name"] for s in data["subjects"]]
        scores = fit([f"{subject_hint}. {text}" if subject_hint else text], names, embed, names)[0]
        if subject_hint:
            scores = np.maximum(scores, [lexical_relevance(subject_hint, n) for n in names])
        best = int(np.argmax(scores))
        if scores[best] < min_fit:
            continue  # not a subject of this textbook
        subject = data["subjects"][best]
        courses = [c["name"] for c in subject["courses"]]
        course = subject["courses"][int(np.argmax(fit([text], courses, embed, courses)[0]))]
        topic = schemas.topic_name(item.title)[: schemas.NAME_CHARS]
        point = schemas.topic_name(str(item.extra.get("knowledge_point") or item.title))[: schemas.NAME_CHARS]
        taken = {p["name"].lower() for *_, p in points}
        if point.lower() in taken:
            continue
        levels = sorted(p["difficulty"] for s, *_, p in points if s is subject) or [2]
        difficulty = levels[len(levels) // 2]
        subs = {u["name"].lower(): u for u in course["subcourses"]}
        if topic.lower() in subs:
            subs[topic.lower()]["points"].append({"name": point, "difficulty": difficulty})
        else:
            course["subcourses"].append({"name": topic, "points": [{"name": point, "difficulty": difficulty}]})
        added.append(f"added {subject['name']} > {course['name']} > {topic} > {point} for the video "
                     f"{item.title!r} (no knowledge point covered it)")
    return schemas.Taxonomy.model_validate(data), added
