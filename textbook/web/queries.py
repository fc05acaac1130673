"""Every read of the viewer: SQL over an object with ``rows(sql, params) -> list[dict]``.

``store.db.Store`` has that method, and so does anything the build serves reads through (issue 10),
so the pages never touch a connection themselves and the SQL lives here, in one place, for the
schema changes to come. Functions return typed records (``Page``) or the rows as DuckDB gives them,
with JSON text columns decoded. Nothing here writes.

Search ranks with Okapi BM25 (k1 = 1.2, b = 0.75, the DuckDB ``fts`` extension's defaults) written in
plain SQL: the ``fts`` extension does not load offline (no build of it for this DuckDB is installable
from PyPI; extensions are locked to their DuckDB version). Tokens are lowercased letters and digits;
a trailing plural ``s`` is folded (``atoms`` finds ``atom``); no other stemming.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

PER_PAGE = 50
T = TypeVar("T")

# candidates.status after the metadata judge accepted and the video reached the download step
_NOT_DOWNLOADED = ("found", "judged_out", "accepted_meta", "download_failed", "review_meta")


class Rows(Protocol):
    """What every read here needs: ``store.db.Store``, ``store.serve.RemoteStore`` and ``StatsReader`` all have it."""

    def rows(self, sql: str, params: list | None = None) -> list[dict[str, Any]]:
        """The result of ``sql`` (``?`` or ``$n`` placeholders bound from ``params``) as one dict per row."""


@dataclass
class Page(Generic[T]):
    """One page of a longer list: ``items`` of ``total``, ``page`` counted from 1 of ``pages``."""

    items: list[T]
    total: int
    page: int
    per_page: int = PER_PAGE

    @property
    def pages(self) -> int:
        """The number of pages, at least 1 (an empty list is one empty page)."""
        return max(1, math.ceil(self.total / self.per_page))


@dataclass
class Funnel:
    """Videos that reached each step of a build, overall and per knowledge point."""

    steps: list[str]
    overall: dict[str, int]
    per_point: list[dict[str, Any]] = field(default_factory=list)


FUNNEL_STEPS = ["found", "judged", "downloaded", "transcribed", "transcript_judged", "visuals", "accepted"]


def _json(value: Any, default: Any = None) -> Any:
    if value is None or value == "":
        return default
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _offset(page: int) -> int:
    return (max(1, page) - 1) * PER_PAGE


# -- runs ------------------------------------------------------------------------------------------
def runs(db: Rows, page: int = 1) -> Page[dict]:
    """The runs, newest first, with what each produced and spent."""
    total = db.rows("SELECT count(*) AS n FROM runs")[0]["n"]
    items = db.rows(
        "WITH r AS (SELECT * FROM runs ORDER BY created_at DESC, run_id LIMIT $1 OFFSET $2), "
        "c AS (SELECT run_id, count(*) AS accepted FROM candidates WHERE status = 'accepted' "
        "      AND run_id IN (SELECT run_id FROM r) GROUP BY run_id), "
        "k AS (SELECT rv.run_id, count(*) AS kept FROM run_videos rv JOIN videos v USING (video_id) "
        "      WHERE v.status = 'kept' AND rv.run_id IN (SELECT run_id FROM r) GROUP BY rv.run_id), "
        "s AS (SELECT run_id, count(*) AS samples FROM samples WHERE run_id IN (SELECT run_id FROM r) "
        "      GROUP BY run_id), "
        "l AS (SELECT run_id, count(*) AS llm_calls, "
        "      sum(input_tokens + output_tokens) FILTER (WHERE NOT cached) AS llm_tokens, sum(cost_usd) AS cost_usd "
        "      FROM llm_calls WHERE run_id IN (SELECT run_id FROM r) GROUP BY run_id), "
        "u AS (SELECT run_id, sum(units) AS search_units FROM queries WHERE run_id IN (SELECT run_id FROM r) "
        "      GROUP BY run_id) "
        "SELECT r.run_id, r.command, r.status, r.inputs, r.created_at, r.updated_at, r.attempts, r.summary, "
        "date_diff('millisecond', r.created_at, r.updated_at) / 1000.0 AS seconds, "
        "coalesce(c.accepted, 0) AS accepted, coalesce(k.kept, 0) AS kept, coalesce(s.samples, 0) AS samples, "
        "coalesce(l.llm_calls, 0) AS llm_calls, coalesce(l.llm_tokens, 0) AS llm_tokens, "
        "coalesce(l.cost_usd, 0) AS cost_usd, coalesce(u.search_units, 0) AS search_units "
        "FROM r LEFT JOIN c USING (run_id) LEFT JOIN k USING (run_id) LEFT JOIN s USING (run_id) "
        "LEFT JOIN l USING (run_id) LEFT JOIN u USING (run_id) ORDER BY r.created_at DESC, r.run_id",
        [PER_PAGE, _offset(page)])
    for r in items:
        r["inputs"] = _json(r["inputs"], [])
        r["summary"] = _json(r["summary"])
        r["videos"] = r["accepted"] if r["command"] == "build" else r["kept"]
    return Page(items, total, page)


def any_running(db: Rows) -> bool:
    """Whether some run in the store is still ``running`` (the runs page then reloads itself)."""
    return db.rows("SELECT count(*) AS n FROM runs WHERE status = 'running'")[0]["n"] > 0


def run(db: Rows, run_id: str) -> dict | None:
    """One run's row with ``inputs``, ``config`` and ``summary`` decoded and its length in ``seconds``; None if
    unknown."""
    found = db.rows("SELECT *, date_diff('millisecond', created_at, updated_at) / 1000.0 AS seconds "
                    "FROM runs WHERE run_id = ?", [run_id])
    if not found:
        return None
    r = found[0]
    r["inputs"] = _json(r["inputs"], [])
    r["config"] = _json(r["config"], {})
    r["summary"] = _json(r["summary"])
    return r


def node_counts(db: Rows, run_id: str) -> dict[str, dict[str, int]]:
    """Per node: its runs (events with an input summary) and its decisions (events per item)."""
    out: dict[str, dict[str, int]] = {}
    for r in db.rows("SELECT node, count(*) FILTER (WHERE input IS NOT NULL) AS runs, "
                     "count(*) FILTER (WHERE decision IS NOT NULL) AS decisions, "
                     "count(*) FILTER (WHERE error IS NOT NULL) AS errors "
                     "FROM events WHERE run_id = ? GROUP BY node", [run_id]):
        out[r["node"]] = {"runs": r["runs"], "decisions": r["decisions"], "errors": r["errors"]}
    return out


def funnel(db: Rows, run_id: str) -> Funnel:
    """found -> judged -> downloaded -> transcribed -> transcript-judged -> visuals -> accepted."""
    rows = db.rows(
        "WITH c AS (SELECT point_id, video_id, status FROM candidates WHERE run_id = $1), "
        "j AS (SELECT video_id, bool_or(kind = 'metadata') AS meta, bool_or(kind = 'transcript_a') AS tr "
        "      FROM judgments WHERE run_id = $1 GROUP BY video_id), "
        "st AS (SELECT video_id, bool_or(stage = 'asr' AND status = 'done') AS asr, "
        "       bool_or(stage = 'ocr' AND status = 'done') AS ocr FROM stage_status "
        "       WHERE video_id IN (SELECT video_id FROM c) GROUP BY video_id), "
        "x AS (SELECT c.point_id, c.status, coalesce(j.meta, false) AS judged, coalesce(j.tr, false) AS tj, "
        "      c.status NOT IN (" + ", ".join(f"'{s}'" for s in _NOT_DOWNLOADED) + ") AS dl, "
        "      coalesce(st.asr, false) AS asr, coalesce(st.ocr, false) AS ocr "
        "      FROM c LEFT JOIN j USING (video_id) LEFT JOIN st USING (video_id)) "
        "SELECT point_id, count(*) AS found, count(*) FILTER (WHERE judged) AS judged, "
        "count(*) FILTER (WHERE dl) AS downloaded, count(*) FILTER (WHERE dl AND asr) AS transcribed, "
        "count(*) FILTER (WHERE tj) AS transcript_judged, count(*) FILTER (WHERE dl AND ocr) AS visuals, "
        "count(*) FILTER (WHERE status = 'accepted') AS accepted FROM x GROUP BY point_id ORDER BY point_id",
        [run_id])
    names = {n["node_id"]: n["name"] for n in taxonomy(db, run_id)}
    overall = {s: sum(r[s] for r in rows) for s in FUNNEL_STEPS}
    for r in rows:
        r["name"] = names.get(r["point_id"], r["point_id"])
    return Funnel(FUNNEL_STEPS, overall, rows)


def taxonomy(db: Rows, run_id: str) -> list[dict]:
    """The run's taxonomy rows in order (with ``difficulty`` when the schema has it)."""
    return db.rows("SELECT * FROM taxonomy WHERE run_id = ? ORDER BY position", [run_id])


def taxonomy_tree(db: Rows, run_id: str, shown: int = 5) -> list[dict]:
    """Subjects with nested ``children``; each point carries its count of accepted videos
    (``accepted``) and the first ``shown`` of them (``videos``)."""
    nodes = taxonomy(db, run_id)
    accepted: dict[str, list[dict]] = {}
    counts: dict[str, int] = {}
    for c in db.rows("SELECT point_id, video_id, json_extract_string(metadata, '$.title') AS title, n FROM "
                     "(SELECT *, row_number() OVER (PARTITION BY point_id ORDER BY video_id) AS k, "
                     " count(*) OVER (PARTITION BY point_id) AS n FROM candidates "
                     " WHERE run_id = ? AND status = 'accepted') WHERE k <= ? ORDER BY point_id, video_id",
                     [run_id, shown]):
        accepted.setdefault(c["point_id"], []).append({"video_id": c["video_id"], "title": c["title"] or c["video_id"]})
        counts[c["point_id"]] = c["n"]
    by_id = {n["node_id"]: {**n, "children": [], "videos": accepted.get(n["node_id"], []),
                            "accepted": counts.get(n["node_id"], 0)} for n in nodes}
    roots = []
    for n in by_id.values():
        parent = by_id.get(n["parent_id"]) if n["parent_id"] else None
        (parent["children"] if parent else roots).append(n)
    return roots


def budgets(db: Rows, run_id: str, config: dict, seconds: float) -> list[dict]:
    """Each budget of the run's config against what the run spent."""
    limits = (config.get("agent") or {}).get("budgets") or {}
    if not limits:
        return []
    spent = db.rows(
        "SELECT (SELECT count(*) FROM candidates WHERE run_id = $1 AND status = 'accepted') AS videos, "
        "(SELECT coalesce(sum(units), 0) FROM queries WHERE run_id = $1) AS units, "
        "(SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM llm_calls WHERE run_id = $1 AND NOT cached) "
        "  AS tokens, (SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = $1) AS usd", [run_id])[0]
    out = []
    for name, key, value in (("accepted videos", "max_videos", spent["videos"]),
                             ("search units", "max_search_units", spent["units"]),
                             ("LLM tokens (paid)", "max_llm_tokens", spent["tokens"]),
                             ("USD", "max_usd", float(spent["usd"])), ("wall seconds", "max_wall_s", seconds)):
        limit = limits.get(key)
        out.append({"name": name, "spent": value, "limit": limit,
                    "share": min(1.0, value / limit) if limit else None})
    return out


def timeline(db: Rows, run_id: str, limit: int = 400) -> list[dict]:
    """Node runs (not per-item decisions) with their start offset and length in seconds."""
    return db.rows(
        "WITH e AS (SELECT * FROM events WHERE run_id = $1 AND input IS NOT NULL), "
        "t0 AS (SELECT min(started_at) AS t FROM e) "
        "SELECT node, error, date_diff('millisecond', t0.t, started_at) / 1000.0 AS start_s, "
        "coalesce(seconds, date_diff('millisecond', started_at, now()::TIMESTAMP) / 1000.0) AS seconds, "
        "ended_at IS NULL AS open FROM e, t0 ORDER BY event_id LIMIT $2", [run_id, limit])


def failures(db: Rows, run_id: str) -> list[dict]:
    """What failed in the run, grouped by where and kind, with one example message each."""
    return db.rows(
        "WITH vids AS (SELECT video_id FROM candidates WHERE run_id = $1 "
        "              UNION SELECT video_id FROM run_videos WHERE run_id = $1) "
        "SELECT 'stage ' || stage AS place, kind, count(*) AS n, any_value(message) AS example FROM errors "
        "WHERE video_id IN (SELECT video_id FROM vids) GROUP BY ALL "
        "UNION ALL SELECT 'candidate ' || status, coalesce(reason, '?'), count(*), any_value(video_id) "
        "FROM candidates WHERE run_id = $1 AND status IN ('download_failed', 'rejected') GROUP BY ALL "
        "UNION ALL SELECT 'node ' || node, split_part(error, ':', 1), count(*), any_value(error) FROM events "
        "WHERE run_id = $1 AND error IS NOT NULL GROUP BY ALL "
        "UNION ALL SELECT 'llm ' || role, 'invalid answer', count(*), any_value(error) FROM llm_calls "
        "WHERE run_id = $1 AND error IS NOT NULL GROUP BY ALL ORDER BY n DESC, place, kind", [run_id])


def run_videos(db: Rows, run_id: str, command: str, page: int = 1, status: str | None = None) -> Page[dict]:
    """A build's candidates (best judged first) or a process run's videos (in input order), 50 a page."""
    if command != "build":
        count = db.rows("SELECT count(*) AS n FROM run_videos WHERE run_id = ?", [run_id])[0]["n"]
        items = db.rows(
            "SELECT v.video_id, v.title, v.status, v.reason, v.source, v.subject, v.knowledge_point AS point, "
            "NULL AS verdict, NULL AS score FROM run_videos r JOIN videos v USING (video_id) WHERE r.run_id = ? "
            "ORDER BY r.position LIMIT ? OFFSET ?", [run_id, PER_PAGE, _offset(page)])
        return Page(items, count, page)
    where, params = "c.run_id = $1", [run_id]
    if status:
        where, params = where + " AND c.status = $2", [run_id, status]
    count = db.rows(f"SELECT count(*) AS n FROM candidates c WHERE {where}", params)[0]["n"]
    n = len(params)
    items = db.rows(
        "SELECT c.video_id, c.point_id, c.status, c.reason, c.source, "
        "json_extract_string(c.metadata, '$.title') AS title, t.name AS point, j.verdict, j.score "
        "FROM candidates c LEFT JOIN taxonomy t ON t.run_id = c.run_id AND t.node_id = c.point_id "
        "LEFT JOIN judgments j ON j.run_id = c.run_id AND j.video_id = c.video_id AND j.kind = 'metadata' "
        f"WHERE {where} ORDER BY c.status = 'accepted' DESC, j.score DESC NULLS LAST, c.video_id "
        f"LIMIT ${n + 1} OFFSET ${n + 2}", [*params, PER_PAGE, _offset(page)])
    for r in items:
        r["title"] = r["title"] or r["video_id"]
    return Page(items, count, page)


def process_funnel(db: Rows, run_id: str) -> list[dict]:
    """For a `process` run: videos per status and reason."""
    return db.rows("SELECT v.status, coalesce(v.reason, '') AS reason, count(*) AS n FROM run_videos r "
                   "JOIN videos v USING (video_id) WHERE r.run_id = ? GROUP BY ALL ORDER BY n DESC", [run_id])


def pending_reviews(db: Rows, run_id: str) -> list[dict]:
    """Reviews the run's graph waits on: 'waiting' review events with no answer after them."""
    waiting = db.rows("SELECT event_id, output FROM events WHERE run_id = ? AND node = 'review' "
                      "AND decision = 'waiting' ORDER BY event_id", [run_id])
    answered = {(_json(r["output"], {}) or {}).get("key") for r in db.rows(
        "SELECT output FROM events WHERE run_id = ? AND node = 'review' AND decision = 'answered'", [run_id])}
    out = []
    for w in waiting:
        payload = _json(w["output"], {}) or {}
        if payload.get("key") not in answered:
            out.append(payload)
    return out


# -- a video -------------------------------------------------------------------------------------------
def video(db: Rows, video_id: str, run_id: str | None) -> dict | None:
    """A video's ``videos`` row (its ``metadata`` decoded), with the run's candidate row under ``candidate`` and its
    knowledge point's name under ``point_name`` when ``run_id`` names a build that found it; None if neither
    exists."""
    rows = db.rows("SELECT * FROM videos WHERE video_id = ?", [video_id])
    cand = db.rows("SELECT * FROM candidates WHERE run_id = ? AND video_id = ?", [run_id, video_id]) if run_id else []
    if not rows and not cand:
        return None
    v = rows[0] if rows else {"video_id": video_id}
    v["metadata"] = _json(v.get("metadata"), {}) or {}
    if cand:
        c = cand[0]
        c["metadata"] = _json(c["metadata"], {}) or {}
        v["candidate"] = c
        names = db.rows("SELECT name FROM taxonomy WHERE run_id = ? AND node_id = ?", [run_id, c["point_id"]])
        v["point_name"] = names[0]["name"] if names else None
        v.setdefault("title", None)
        v["title"] = v.get("title") or c["metadata"].get("title")
    return v


def video_runs(db: Rows, video_id: str) -> list[str]:
    """The ids of the runs that saw the video (as a build's candidate or a process input), newest first."""
    return [r["run_id"] for r in db.rows(
        "SELECT run_id FROM (SELECT run_id FROM candidates WHERE video_id = $1 "
        "UNION SELECT run_id FROM run_videos WHERE video_id = $1) JOIN runs USING (run_id) "
        "ORDER BY created_at DESC", [video_id])]


def decisions(db: Rows, run_id: str, video_id: str) -> list[dict]:
    """The run's trace events about one video in order (node, decision, decoded ``reasons`` and ``output``, error)."""
    rows = db.rows("SELECT event_id, node, decision, reasons, output, error, started_at FROM events "
                   "WHERE run_id = ? AND video_id = ? ORDER BY event_id", [run_id, video_id])
    for r in rows:
        r["reasons"] = _json(r["reasons"], []) or []
        r["output"] = _json(r["output"])
    return rows


def judgments(db: Rows, run_id: str, video_id: str) -> list[dict]:
    """The run's LLM judgments of one video (metadata, transcript, clips) in order, ``reasons`` and ``detail``
    decoded."""
    rows = db.rows("SELECT * FROM judgments WHERE run_id = ? AND video_id = ? ORDER BY created_at, kind",
                   [run_id, video_id])
    for r in rows:
        r["reasons"] = _json(r["reasons"], []) or []
        r["detail"] = _json(r["detail"])
    return rows


def llm_calls(db: Rows, run_id: str, video_id: str) -> list[dict]:
    """The run's LLM calls about one video in order, with the ``messages`` sent and the ``response`` decoded."""
    rows = db.rows("SELECT * FROM llm_calls WHERE run_id = ? AND video_id = ? ORDER BY created_at",
                   [run_id, video_id])
    for r in rows:
        r["messages"] = _json(r["messages"], []) or []
        r["response"] = _json(r["response"])
    return rows


def _latest(db: Rows, table: str, stage: str, video_id: str) -> str | None:
    """The config hash of the video's most recent output in ``table`` (outputs are kept per config hash)."""
    found = db.rows(f"SELECT o.config_hash FROM (SELECT DISTINCT config_hash FROM {table} WHERE video_id = ?) o "
                    "LEFT JOIN stage_status s ON s.video_id = ? AND s.stage = ? AND s.config_hash = o.config_hash "
                    "ORDER BY s.finished_at DESC NULLS LAST LIMIT 1", [video_id, video_id, stage])
    return found[0]["config_hash"] if found else None


def transcript(db: Rows, video_id: str) -> dict | None:
    """The video's latest transcript row (by config hash) with its ASR ``segments`` (idx, start_s, end_s, text); None
    if it has none."""
    h = _latest(db, "transcripts", "asr", video_id)
    rows = db.rows("SELECT * FROM transcripts WHERE video_id = ? AND config_hash = ?", [video_id, h])
    if not rows:
        return None
    tr = rows[0]
    tr["segments"] = db.rows("SELECT idx, start_s, end_s, text FROM segments WHERE video_id = ? AND config_hash = ? "
                             "ORDER BY idx", [video_id, h])
    return tr


def keyframes(db: Rows, video_id: str) -> list[dict]:
    """The video's latest keyframes in order, each with the OCR text of its latest OCR run (``ocr_text``,
    ``ocr_kept``,
    ``ocr_drop_reason``; None where OCR did not run)."""
    return db.rows("SELECT k.*, o.text AS ocr_text, o.kept AS ocr_kept, o.drop_reason AS ocr_drop_reason "
                   "FROM keyframes k LEFT JOIN ocr o ON o.video_id = k.video_id AND o.idx = k.idx "
                   "AND o.config_hash = ? WHERE k.video_id = ? AND k.config_hash = ? ORDER BY k.idx",
                   [_latest(db, "ocr", "ocr", video_id), video_id, _latest(db, "keyframes", "keyframes", video_id)])


def clips(db: Rows, video_id: str) -> list[dict]:
    """The video's latest clips in order, ``keyframes``, ``signals`` and ``rewrite`` decoded."""
    rows = db.rows("SELECT * FROM clips WHERE video_id = ? AND config_hash = ? ORDER BY idx",
                   [video_id, _latest(db, "clips", "clips", video_id)])
    for r in rows:
        r["keyframes"] = _json(r["keyframes"], []) or []
        r["signals"] = _json(r.get("signals"))
        r["rewrite"] = _json(r.get("rewrite"))
    return rows


def errors(db: Rows, video_id: str) -> list[dict]:
    """The errors stored for a video (stage, kind, message), oldest first."""
    return db.rows("SELECT * FROM errors WHERE video_id = ? ORDER BY occurred_at", [video_id])


def video_file(db: Rows, run_id: str, video_id: str) -> str | None:
    """The local file a run recorded for a video: its download, else the input file of a `process` run."""
    cand = db.rows("SELECT path FROM candidates WHERE run_id = ? AND video_id = ? AND path IS NOT NULL",
                   [run_id, video_id])
    if cand:
        return cand[0]["path"]
    rows = db.rows("SELECT v.source, r.inputs FROM run_videos rv JOIN videos v USING (video_id) "
                   "JOIN runs r ON r.run_id = rv.run_id WHERE rv.run_id = ? AND rv.video_id = ?", [run_id, video_id])
    if rows and rows[0]["source"] in (_json(rows[0]["inputs"], []) or []):
        return rows[0]["source"]
    return None


# -- samples -------------------------------------------------------------------------------------------
def sample_filters(db: Rows, run_id: str) -> dict[str, list]:
    """Values to filter a run's samples by: its subjects and knowledge points (id, name)."""
    subjects = [r["s"] for r in db.rows(
        "SELECT name AS s FROM taxonomy WHERE run_id = $1 AND level = 'subject' UNION "
        "SELECT v.subject FROM run_videos r JOIN videos v USING (video_id) WHERE r.run_id = $1 "
        "AND v.subject IS NOT NULL ORDER BY 1", [run_id])]
    points = db.rows("SELECT node_id, name FROM taxonomy WHERE run_id = ? AND level = 'point' ORDER BY position",
                     [run_id])
    return {"subjects": subjects, "points": points}


def samples(db: Rows, run_id: str, page: int = 1, subject: str | None = None, point: str | None = None,
            video_id: str | None = None) -> Page[dict]:
    """A run's samples in order, 50 a page, narrowed to those with a position of the subject, the
    knowledge point (its videos: the run's candidates under it, or videos whose own knowledge_point
    is it) or the video."""
    where, params = ["run_id = $1"], [run_id]
    if subject:
        params.append(subject)
        where.append(f"list_contains(json_extract_string(sample, '$.metadata[*].subject'), ${len(params)})")
    if video_id:
        params.append(video_id)
        where.append(f"list_contains(json_extract_string(sample, '$.metadata[*].video_id'), ${len(params)})")
    if point:
        vids = [r["video_id"] for r in db.rows(
            "SELECT video_id FROM candidates WHERE run_id = $1 AND point_id = $2 UNION "
            "SELECT video_id FROM run_videos JOIN videos USING (video_id) WHERE run_id = $1 AND knowledge_point = $2",
            [run_id, point])]
        params.append(vids)
        where.append(f"list_has_any(json_extract_string(sample, '$.metadata[*].video_id'), ${len(params)}::VARCHAR[])")
    cond = " AND ".join(where)
    total = db.rows(f"SELECT count(*) AS n FROM samples WHERE {cond}", params)[0]["n"]
    n = len(params)
    rows = db.rows(f"SELECT idx, sample, image_num, text_num, token_num FROM samples WHERE {cond} "
                   f"ORDER BY idx LIMIT ${n + 1} OFFSET ${n + 2}", [*params, PER_PAGE, _offset(page)])
    for r in rows:
        r["sample"] = _json(r["sample"], {})
    return Page(rows, total, page)


# -- stats ---------------------------------------------------------------------------------------------
class StatsReader:
    """The part of ``store.Store`` that ``pipeline.stats.corpus_stats`` reads, over ``rows`` only."""

    def __init__(self, db: Rows):
        self.db = db

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        """The rows of ``sql``, as ``Store.rows``."""
        return self.db.rows(sql, params)

    def scalar(self, sql: str, params: list | None = None) -> Any:
        """The first column of the first row of ``sql``, or None when it returns no row (as ``Store.scalar``)."""
        found = self.db.rows(sql, params)
        return next(iter(found[0].values())) if found else None

    def samples(self, run_id: str) -> list[dict]:
        """The run's packed samples in order, decoded from their stored JSON."""
        return [json.loads(r["sample"]) for r in self.db.rows(
            "SELECT sample FROM samples WHERE run_id = ? ORDER BY idx", [run_id])]

    def clips(self, video_id: str) -> list[dict]:
        """The video's latest clips (``clips``)."""
        return clips(self.db, video_id)

    def keyframes(self, video_id: str) -> list[dict]:
        """The video's latest keyframes with their OCR (``keyframes``)."""
        return keyframes(self.db, video_id)

    def stage(self, video_id: str, stage: str) -> dict | None:
        """The ``stage_status`` row of one video and stage, or None if the stage never ran on it."""
        found = self.db.rows("SELECT * FROM stage_status WHERE video_id = ? AND stage = ?", [video_id, stage])
        return found[0] if found else None


def stats(db: Rows, run_id: str, tokenizer: str = "whisper") -> dict:
    """Table 7 per subject, Table 1, the drop funnel and the search funnel (``pipeline.stats``)."""
    from pipeline.stats import corpus_stats

    return corpus_stats(StatsReader(db), run_id, tokenizer)  # type: ignore[arg-type]


# -- search --------------------------------------------------------------------------------------------
def terms(query: str) -> list[str]:
    """The query's search terms, tokenized and folded as the documents are (at most 12)."""
    import re

    out = []
    for t in re.findall(r"[^\W_]+", query.lower()):
        if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return list(dict.fromkeys(out))[:12]


_TOKENS = ("list_transform(list_filter(string_split_regex(lower({col}), '[^\\p{{L}}\\p{{N}}]+'), lambda t: t <> ''), "
           "lambda t: CASE WHEN len(t) > 3 AND suffix(t, 's') AND NOT suffix(t, 'ss') THEN t[1:-2] ELSE t END)")


def search(db: Rows, query: str, limit: int = 50) -> list[dict]:
    """Titles, descriptions, transcript segments, OCR and rewritten paragraphs ranked by BM25."""
    words = terms(query)
    if not words:
        return []
    toks = _TOKENS.format(col="text")
    return db.rows(
        "WITH docs AS ("
        "  SELECT 'title' AS field, video_id, NULL::INTEGER AS idx, NULL::DOUBLE AS time_s, title AS text FROM videos "
        "  UNION ALL SELECT DISTINCT ON (video_id) 'description', video_id, NULL, NULL, "
        "    json_extract_string(metadata, '$.description') FROM candidates "
        "  UNION ALL SELECT 'transcript', video_id, idx, start_s, text FROM segments "
        "  UNION ALL SELECT DISTINCT 'ocr', o.video_id, o.idx, k.time_s, o.text FROM ocr o "
        "    JOIN keyframes k ON k.video_id = o.video_id AND k.idx = o.idx "
        "  UNION ALL SELECT 'rewrite', video_id, idx, start_s, polished FROM clips), "
        f"d AS (SELECT row_number() OVER () AS doc, *, {toks} AS toks FROM docs "
        "       WHERE text IS NOT NULL AND text <> ''), "
        "n AS (SELECT count(*) AS n, avg(len(toks)) AS avgdl FROM d), "
        "q AS (SELECT unnest($1::VARCHAR[]) AS term), "
        "tf AS (SELECT d.doc, q.term, len(list_filter(d.toks, lambda t: t = q.term)) AS f FROM d JOIN q "
        "       ON list_contains(d.toks, q.term)), "
        "df AS (SELECT term, count(*) AS df FROM tf GROUP BY term), "
        "s AS (SELECT tf.doc, sum(ln(1 + (n.n - df.df + 0.5) / (df.df + 0.5)) * tf.f * 2.2 "
        "      / (tf.f + 1.2 * (0.25 + 0.75 * len(d.toks) / n.avgdl))) AS score, count(*) AS matched "
        "      FROM tf JOIN df USING (term) JOIN d USING (doc), n GROUP BY tf.doc) "
        "SELECT d.field, d.video_id, d.idx, d.time_s, d.text, s.score, s.matched, v.title, "
        "(SELECT run_id FROM (SELECT run_id FROM candidates c WHERE c.video_id = d.video_id "
        " UNION SELECT run_id FROM run_videos rv WHERE rv.video_id = d.video_id) JOIN runs USING (run_id) "
        " ORDER BY created_at DESC LIMIT 1) AS run_id "
        "FROM s JOIN d USING (doc) LEFT JOIN videos v ON v.video_id = d.video_id "
        "ORDER BY s.matched DESC, s.score DESC, d.video_id, d.field, d.idx LIMIT $2", [words, limit])
