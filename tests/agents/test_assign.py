"""Which point each video serves and why a point stays short: the pure functions of agents/assign.py."""

from __future__ import annotations

import numpy as np
import pytest

from agents.assign import Hit, PointOutcome, assign, fit, point_text, shortfall


def placed(hits, need, min_fit=0.3) -> dict[str, str | None]:
    return {p.video_id: p.point_id for p in assign(hits, need, min_fit)}


def test_each_video_goes_to_the_point_it_fits_best():
    hits = [Hit("water", "p1", 0.8), Hit("water", "p2", 0.2), Hit("frac", "p1", 0.1), Hit("frac", "p2", 0.85)]
    assert placed(hits, {"p1": 1, "p2": 1}) == {"water": "p1", "frac": "p2"}


def test_the_first_point_does_not_take_every_video():
    # both videos fit p1 best; p2 needs one too: the one that costs the least fit moves there
    hits = [Hit("a", "p1", 0.9), Hit("a", "p2", 0.8), Hit("b", "p1", 0.85)]
    out = {p.video_id: p for p in assign(hits, {"p1": 1, "p2": 1}, 0.3)}
    assert (out["a"].point_id, out["a"].why) == ("p2", "needed")
    assert (out["b"].point_id, out["b"].why) == ("p1", "needed")
    # a greedy first-come choice would have left p2 empty
    hits = [Hit("a", "p1", 0.6), Hit("b", "p1", 0.5), Hit("b", "p2", 0.45)]
    assert placed(hits, {"p1": 1, "p2": 1}) == {"a": "p1", "b": "p2"}


def test_more_videos_than_needed_stay_as_spares_at_their_best_point():
    hits = [Hit("a", "p1", 0.9), Hit("b", "p1", 0.7), Hit("b", "p2", 0.6), Hit("c", "p1", 0.8)]
    out = {p.video_id: (p.point_id, p.why) for p in assign(hits, {"p1": 1, "p2": 1}, 0.3)}
    assert out == {"a": ("p1", "needed"), "b": ("p2", "needed"), "c": ("p1", "spare")}
    # a served point needs nothing more: videos that fit it go there only as spares
    out = {p.video_id: (p.point_id, p.why) for p in assign(hits, {"p1": 0, "p2": 1}, 0.3)}
    assert out == {"a": ("p1", "spare"), "b": ("p2", "needed"), "c": ("p1", "spare")}


def test_rejected_points_and_poor_fits_are_never_chosen():
    hits = [Hit("a", "p1", 0.9, verdict="reject"), Hit("a", "p2", 0.5)]
    assert placed(hits, {"p1": 1, "p2": 1}) == {"a": "p2"}
    out = assign([Hit("x", "p1", 0.1), Hit("x", "p2", 0.29)], {"p1": 1, "p2": 1}, 0.3)
    assert [(p.point_id, p.why) for p in out] == [(None, "no-point")]
    out = assign([Hit("y", "p1", 0.9, verdict="reject")], {"p1": 1}, 0.3)
    assert [(p.point_id, p.why) for p in out] == [(None, "no-point")]


def test_assignment_is_deterministic_and_fills_several_slots():
    hits = [Hit(v, p, f) for v, p, f in [("a", "p1", 0.7), ("b", "p1", 0.7), ("c", "p1", 0.7), ("c", "p2", 0.4)]]
    first = assign(hits, {"p1": 2, "p2": 1}, 0.3)
    assert first == assign(list(reversed(hits)), {"p1": 2, "p2": 1}, 0.3)
    assert {p.video_id: p.point_id for p in first} == {"a": "p1", "b": "p1", "c": "p2"}
    assert assign([], {"p1": 1}, 0.3) == []


def test_fit_is_shared_words_and_meaning():
    texts = ["Adding Fractions. mathematics", "The Water Cycle. earth science"]
    points = [point_text(["Mathematics", "Arithmetic", "Fractions", "adding fractions"]),
              point_text(["Earth Science", "Hydrology", "The Water Cycle", "evaporation"])]
    words_only = fit(texts, points)
    assert words_only.shape == (2, 2)
    assert words_only[0, 0] == 1.0 and words_only[1, 1] == 0.0 and words_only[0, 1] == 0.0

    def embed(items: list[str]) -> np.ndarray:  # water and evaporation mean the same here
        def vec(t: str):
            t = t.lower()
            v = np.array([("water" in t) + ("evaporation" in t), float("fraction" in t), 0.1])
            return v / np.linalg.norm(v)
        return np.array([vec(t) for t in items])

    both = fit(texts, points, embed)
    assert both[1, 1] > 0.45 and both[0, 0] > 0.9 and both[1, 0] < 0.1  # meaning alone gives half
    assert ((both >= 0) & (both <= 1)).all()
    # two points that both name the video's words: the one that means it wins
    adding = fit(["Adding Fractions. mathematics. adding fractions"],
                 ["Mathematics > Fractions > what are fractions", "Mathematics > Fractions > how to add fractions"])
    assert adding[0, 1] == 1.0 and adding[0, 0] == 1.0  # "adding" counts as "add"


def outcome(**kw) -> PointOutcome:
    base = dict(point_id="p1", wanted=1, accepted=0, hits=0, queries=1, failed_queries=0, assigned=0,
                judged_out=0, download_failed=0, waiting=0)
    return PointOutcome(**{**base, **kw})


@pytest.mark.parametrize("kw, stop, starts", [
    (dict(accepted=1), None, None),
    (dict(hits=0), None, "nothing found"),
    (dict(queries=2, failed_queries=2), None, "search failed"),
    (dict(hits=2, assigned=0), None, "assigned elsewhere"),
    (dict(hits=2, assigned=2, judged_out=2), None, "all judged out"),
    (dict(hits=1, assigned=1, failed=1), None, "failed"),  # a fault is never reported as a judgment
    (dict(hits=2, assigned=2, judged_out=1, failed=1), None, "failed"),
    (dict(hits=1, assigned=1, download_failed=1), None, "download failed"),
    (dict(hits=1, assigned=1, waiting=1), "videos", "budget"),
    (dict(queries=0), "llm_tokens", "budget"),
    # every source a closed library (local, urls): a point that found too little is not searched again
    (dict(hits=0, closed_library=True), None, "library exhausted"),
    (dict(hits=2, assigned=0, closed_library=True), None, "assigned elsewhere"),
    (dict(hits=1, assigned=1, closed_library=True), None, "library exhausted"),
    (dict(hits=2, assigned=2, judged_out=2, closed_library=True), None, "all judged out"),
    (dict(queries=2, failed_queries=2, closed_library=True), None, "search failed"),
    (dict(hits=1, assigned=1), None, "not enough videos"),
])
def test_shortfall_says_why(kw, stop, starts):
    why = shortfall(outcome(**kw), stop)
    if starts is None:
        assert why is None
    else:
        assert why.startswith(starts + ":"), why
        assert "0 of 1 videos" in why
        assert ("the library has no other" in why) == (starts == "assigned elsewhere" and kw.get("closed_library",
                                                                                                   False))


def test_a_local_library_gets_points_for_the_videos_no_point_covers():
    from agents import schemas
    from agents.assign import ground_in_library
    from tools.search import Candidate

    tax = schemas.Taxonomy.model_validate({"subjects": [
        {"name": "Earth Science", "courses": [{"name": "Geology", "subcourses": [
            {"name": "Rock Types", "points": [{"name": "igneous rocks", "difficulty": 2},
                                              {"name": "sedimentary rocks", "difficulty": 3}]}]}]},
        {"name": "Mathematics", "courses": [{"name": "Algebra", "subcourses": [
            {"name": "Linear Equations", "points": [{"name": "solving linear equations", "difficulty": 3}]}]}]}]})
    library = [
        Candidate("w", "local", "w.mp4", title="The Water Cycle",
                  extra={"subject": "earth science", "knowledge_point": "the water cycle"}),
        Candidate("f", "local", "f.mp4", title="Adding Fractions", extra={"subject": "mathematics"}),
        Candidate("r", "local", "r.mp4", title="Igneous Rocks", extra={"subject": "earth science"}),  # covered
        Candidate("n", "local", "n.mp4", title="Newton's Laws of Motion", extra={"subject": "physics"}),  # off-goal
    ]
    grounded, added = ground_in_library(tax, library)
    paths = [(n["name"], n["level"]) for n in grounded.nodes()]
    assert ("The Water Cycle", "subcourse") in paths and ("the water cycle", "point") in paths
    assert ("Adding Fractions", "subcourse") in paths and ("Adding Fractions", "point") in paths
    assert not any("Newton" in name for name, _ in paths)
    assert len(added) == 2 and added[0].startswith("added Earth Science > Geology > The Water Cycle > ")
    by_name = {n["name"]: n for n in grounded.nodes()}
    assert by_name["the water cycle"]["node_id"].startswith("s1.")
    assert by_name["Adding Fractions"]["node_id"].startswith("s2.")
    assert by_name["the water cycle"]["difficulty"] == 3  # the median of its subject's points
    assert ground_in_library(grounded, library)[1] == []  # nothing left uncovered


def _whole_matrix(hits, need, min_fit):
    """The assignment as one matching over every video and every slot (the method before it was split into
    parts): how many slots it fills and the total fit, to compare against."""
    from scipy.optimize import linear_sum_assignment

    options: dict[str, dict[str, float]] = {}
    for h in hits:
        options.setdefault(h.video_id, {})
        if h.verdict != "reject" and h.fit >= min_fit:
            options[h.video_id][h.point_id] = max(h.fit, options[h.video_id].get(h.point_id, -1.0))
    videos, slots = sorted(options), [p for p in sorted(need) for _ in range(need[p])]
    w = np.array([[10.0 + options[v][p] if p in options[v] else 0.0 for p in slots] for v in videos])
    rows, cols = linear_sum_assignment(w, maximize=True)
    chosen = [(i, j) for i, j in zip(rows, cols, strict=True) if w[i, j] > 0]
    return len(chosen), round(sum(w[i, j] - 10.0 for i, j in chosen), 4)


@pytest.mark.parametrize("seed", range(6))
def test_the_parts_solved_apart_fill_as_many_slots_with_as_much_fit_as_one_whole_matching(seed):
    rng = np.random.default_rng(seed)
    points = [f"p{k}" for k in range(6)]
    hits = []
    for v in range(40):  # most videos found by one point, some by two or three (they link the parts)
        for p in rng.choice(points, size=int(rng.choice([1, 1, 1, 2, 3])), replace=False):
            hits.append(Hit(f"v{v:02d}", str(p), float(rng.integers(0, 100)) / 100,
                            "reject" if rng.random() < 0.1 else None))
    need = {p: int(rng.integers(0, 6)) for p in points}
    out = assign(hits, need, 0.3)
    fits = {(h.video_id, h.point_id): h.fit for h in hits}
    needed = [p for p in out if p.why == "needed"]
    assert (len(needed), round(sum(fits[p.video_id, p.point_id] for p in needed), 4)) == \
        _whole_matrix(hits, need, 0.3)
    assert all(sum(p.point_id == q for p in needed) <= need[q] for q in points)


def test_twenty_thousand_videos_of_one_point_take_no_matrix():
    """One point that found 20,000 videos (bench_scale build): the point takes its best fits, ties by id,
    at once and in little memory (a whole matching would be a 20,000 x 20,000 matrix, 3.2 GB)."""
    hits = [Hit(f"v{i:05d}", "p1", round((i * 7919 % 1000) / 1000, 3)) for i in range(20000)]
    out = assign(hits, {"p1": 50}, 0.3)
    needed = sorted((p for p in out if p.why == "needed"), key=lambda p: p.video_id)
    best = sorted((h for h in hits if h.fit >= 0.3), key=lambda h: (-h.fit, h.video_id))[:50]
    assert [p.video_id for p in needed] == sorted(h.video_id for h in best)
    assert sum(p.why == "spare" for p in out) == sum(h.fit >= 0.3 for h in hits) - 50
    assert sum(p.why == "no-point" for p in out) == sum(h.fit < 0.3 for h in hits)
