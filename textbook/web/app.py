"""The viewer's pages: a FastAPI app over a ``Backend`` (a store file, or a running build).

Security (the content is untrusted: titles, descriptions, comments, transcripts, OCR, model answers):
- Jinja2 autoescaping on every template; nothing is marked safe; charts are SVG built in templates.
- Content-Security-Policy: scripts and styles only from /static (no inline script or style, no
  eval), images and media only from this origin, no framing, forms post only here.
- Review actions are POSTs carrying a CSRF token (an HMAC of the run id under a per-process secret),
  and a foreign Origin header is refused.
- Bound to 127.0.0.1 by default; then only loopback Host headers are served (DNS rebinding).
- /media/<path> serves only files under the store's media folder (NAME_media/, which holds the
  keyframes, the exported images and the build's downloads); any path resolving elsewhere is a 404.
  A video's own file is served by id (/runs/RUN/videos/VID/file): the path comes from what that run
  recorded (its download, or an input file of a `process` run), never from the URL.
- No key is stored, so none can be shown; run configs name only the environment variables.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.trustedhost import TrustedHostMiddleware

from pipeline.figures import TABLE7_COLUMNS, fmt_hours, samples_tokens, table7_cell
from store.paths import resolve_path
from textbook.web import queries as q
from textbook.web.backend import Backend, ReviewRejected

HERE = Path(__file__).resolve().parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
LOOPBACK = ["127.0.0.1", "localhost", "::1", "[::1]"]
VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska", ".mov": "video/quicktime",
               ".m4v": "video/mp4", ".avi": "video/x-msvideo", ".ogv": "video/ogg"}
# the graph's nodes (agents/graph.py) in order; the stages of the videos node (agents/stages.py) follow it,
# each counted by its decisions ("transcribe" and "visuals": the stages' names in builds before the one flow)
GRAPH_NODES = ["interpret_goal", "taxonomy", "review_taxonomy", "plan_queries", "search_point", "videos",
               "judge_metadata", "download", "probe", "asr", "transcribe", "judge_transcripts", "keyframes", "ocr",
               "visuals", "clips",
               "review_metadata", "review_transcripts", "after_videos", "coverage", "assemble"]


class NotFound(Exception):
    """No such run or video in the store: the page answers 404 with the message."""

    pass


def create_app(backend: Backend, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The viewer app. ``allowed_hosts``: Host headers served (None: any; `textbook view` passes the
    loopback names when bound to a loopback address)."""
    app = FastAPI(title="textbook view", docs_url=None, redoc_url=None, openapi_url=None)
    secret = secrets.token_bytes(32)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
    templates = Jinja2Templates(env=env)
    env.globals.update(media_url=lambda p: media_url(backend.media_dir, p), fmt_s=fmt_seconds, qs=_qs,
                       fmt_n=fmt_number, live=backend.live, fmt_hours=fmt_hours, table7_cell=table7_cell,
                       table7_columns=TABLE7_COLUMNS)
    env.filters["pretty"] = _pretty
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make forms send Origin: null
        response.headers["X-Frame-Options"] = "DENY"
        return response

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def csrf(run_id: str) -> str:
        return hmac.new(secret, f"review:{run_id}".encode(), hashlib.sha256).hexdigest()

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, ctx, status_code=status)

    def read(request: Request, fn):
        """Run ``fn(db)`` on a reader; a store that cannot be read is a 503 page."""
        from store import StoreError

        try:
            with backend.reader() as db:
                return fn(db)
        except StoreError as exc:
            return render(request, "error.html", 503, title="store unavailable", message=str(exc),
                        hint="While a build writes the store, serve the viewer from it: textbook build ... --view")
        except NotFound as exc:
            return render(request, "error.html", 404, title="not found", message=str(exc), hint=None)

    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request, page: int = 1) -> Response:
        def body(db):
            runs = q.runs(db, page)
            return render(request, "runs.html", runs=runs, refresh=any(r["status"] == "running" for r in runs.items)
                        or q.any_running(db))
        return read(request, body)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str, page: int = 1, status: str | None = None) -> Response:
        def body(db):
            run = q.run(db, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            ctx: dict[str, Any] = {"run": run, "status_filter": status}
            ctx["videos"] = q.run_videos(db, run_id, run["command"], page, status or None)
            ctx["failures"] = q.failures(db, run_id)
            if run["command"] == "build":
                counts = q.node_counts(db, run_id)
                ctx["graph"] = graph_svg(counts)
                ctx["funnel"] = q.funnel(db, run_id)
                ctx["tree"] = q.taxonomy_tree(db, run_id)
                ctx["budgets"] = q.budgets(db, run_id, run["config"], float(run["seconds"] or 0))
                ctx["timeline"] = timeline_svg(q.timeline(db, run_id))
                ctx["reviews"] = q.pending_reviews(db, run_id)
            else:
                ctx["process_funnel"] = q.process_funnel(db, run_id)
            return render(request, "run.html", refresh=run["status"] == "running", **ctx)
        return read(request, body)

    @app.get("/runs/{run_id}/videos/{video_id}", response_class=HTMLResponse)
    def video_page(request: Request, run_id: str, video_id: str, t: float | None = None) -> Response:
        def body(db):
            run = q.run(db, run_id)
            v = q.video(db, video_id, run_id) if run else None
            if v is None:
                raise NotFound(f"no video {video_id} in run {run_id}")
            calls = q.llm_calls(db, run_id, video_id)
            by_id = {c["call_id"]: c for c in calls}
            judg = q.judgments(db, run_id, video_id)
            for j in judg:
                j["call"] = by_id.get(j["call_id"])
            used = {j["call_id"] for j in judg if j["call_id"]}
            frames = q.keyframes(db, video_id)
            for f in frames:  # recorded relative to the store's folder, or by an older run's working directory
                f["path"] = resolve_path(backend.db_path, f["path"])
            clip_rows = q.clips(db, video_id)
            for c in clip_rows:
                c.update(rewrite_view(c))
            file = resolve_path(backend.db_path, q.video_file(db, run_id, video_id))
            return render(request, "video.html", run=run, v=v, decisions=q.decisions(db, run_id, video_id),
                        judgments=judg, other_calls=[c for c in calls if c["call_id"] not in used],
                        transcript=q.transcript(db, video_id), frames=frames, clips=clip_rows,
                        errors=q.errors(db, video_id), playable=bool(file and Path(file).suffix.lower()
                                                                     in VIDEO_TYPES), start=t,
                        other_runs=[r for r in q.video_runs(db, video_id) if r != run_id])
        return read(request, body)

    @app.get("/runs/{run_id}/videos/{video_id}/file")
    def video_file(request: Request, run_id: str, video_id: str) -> Response:
        path = read(request, lambda db: q.video_file(db, run_id, video_id))
        if isinstance(path, Response):
            return path
        path = resolve_path(backend.db_path, path)
        if not path or Path(path).suffix.lower() not in VIDEO_TYPES or not Path(path).is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type=VIDEO_TYPES[Path(path).suffix.lower()])

    @app.get("/videos/{video_id}")
    def video_any_run(request: Request, video_id: str) -> Response:
        found = read(request, lambda db: q.video_runs(db, video_id))
        if isinstance(found, Response):
            return found
        if not found:
            return render(request, "error.html", 404, title="not found", message=f"no run has video {video_id}",
                        hint=None)
        return RedirectResponse(f"/runs/{quote(found[0], safe='')}/videos/{quote(video_id, safe='')}", 303)

    @app.get("/runs/{run_id}/samples", response_class=HTMLResponse)
    def samples_page(request: Request, run_id: str, page: int = 1, subject: str = "", point: str = "",
                     video: str = "") -> Response:
        def body(db):
            run = q.run(db, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            found = q.samples(db, run_id, page, subject or None, point or None, video or None)
            counted = samples_tokens([r["sample"] for r in found.items], _tokenizer(run))
            for r, t in zip(found.items, counted, strict=True):
                r["ocr_tokens"] = t.ocr  # text_num is the ASR part (pipeline.figures)
            return render(request, "samples.html", run=run, samples=found, filters=q.sample_filters(db, run_id),
                        chosen={"subject": subject, "point": point, "video": video})
        return read(request, body)

    @app.get("/runs/{run_id}/stats", response_class=HTMLResponse)
    def stats_page(request: Request, run_id: str) -> Response:
        def body(db):
            run = q.run(db, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            return render(request, "stats.html", run=run, stats=q.stats(db, run_id, _tokenizer(run)))
        return read(request, body)

    @app.get("/search", response_class=HTMLResponse)
    def search_page(request: Request, text: str = "") -> Response:
        def body(db):
            hits = q.search(db, text) if text.strip() else []
            words = q.terms(text)
            for h in hits:
                h["marked"] = mark_terms(h["text"], words)
            return render(request, "search.html", text=text, hits=hits)
        return read(request, body)

    @app.get("/runs/{run_id}/review", response_class=HTMLResponse)
    def review_page(request: Request, run_id: str, done: str = "", error: str = "") -> Response:
        def body(db):
            run = q.run(db, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            return render(request, "review.html", run=run, reviews=q.pending_reviews(db, run_id), csrf=csrf(run_id),
                        done=done, error=error)
        return read(request, body)

    @app.post("/runs/{run_id}/review")
    async def review_post(request: Request, run_id: str) -> Response:
        form = await request.form()
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            return Response("cross-origin request refused", status_code=403, media_type="text/plain")
        if not hmac.compare_digest(str(form.get("csrf", "")), csrf(run_id)):
            return Response("missing or wrong CSRF token; reload the review page", status_code=403,
                            media_type="text/plain")
        key = str(form.get("key", ""))
        fields = {k: str(v) for k, v in form.multi_items() if k not in ("csrf", "key")}
        adds = {k: [str(v) for v in form.getlist(k)] for k in form if k.startswith("add:")}
        from agents import review

        try:
            answer = review.answer_from_form(fields, adds)
            message = backend.answer(run_id, key, answer)
        except (ReviewRejected, ValueError) as exc:
            return RedirectResponse(f"/runs/{quote(run_id, safe='')}/review?{urlencode({'error': str(exc)})}", 303)
        return RedirectResponse(f"/runs/{quote(run_id, safe='')}/review?{urlencode({'done': message})}", 303)

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/media/{rel:path}")
    def media(rel: str) -> Response:
        target = safe_media_path(backend.media_dir, rel)
        if target is None:
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(target)

    return app


# -- helpers (pure; tested directly) ----------------------------------------------------------------------
def _tokenizer(run: dict) -> str:
    """The tokenizer a run counted its samples' tokens with (its pipeline config's, default whisper)."""
    return ((run["config"].get("pipeline") or run["config"]).get("tokenizer")) or "whisper"


def safe_media_path(media_dir: Path, rel: str) -> Path | None:
    """``media_dir / rel`` if it is a file inside ``media_dir`` after resolving links and '..', else None."""
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        return None
    root = media_dir.resolve()
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def media_url(media_dir: Path, path: str | None) -> str | None:
    """The /media URL of a stored path (relative to the media folder, or absolute under it), else None.

    An absolute path recorded under a folder of the media folder's name elsewhere (the store and its
    NAME_media/ copied or moved together) maps to the same place here."""
    if not path:
        return None
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(media_dir.resolve())
        except ValueError:
            if media_dir.name not in p.parts:
                return None
            parts = p.parts
            p = Path(*parts[len(parts) - parts[::-1].index(media_dir.name):])
    return "/media/" + quote(p.as_posix(), safe="/")


def fmt_seconds(s: Any) -> str:
    """Seconds for a page: ``12.3s`` under a minute, ``4m05s`` under an hour, else ``1h02m``; "" for a non-number."""
    try:
        s = float(s)
    except (TypeError, ValueError, jinja2.UndefinedError):
        return ""
    if s < 60:
        return f"{s:.1f}s"
    m, sec = divmod(int(s), 60)
    return f"{m}m{sec:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def fmt_number(x: Any) -> str:
    """A number for a page: thousands separated, floats under 10 to at most 4 decimals (trailing zeros cut), larger ones
    to 1; anything else as ``str``."""
    if isinstance(x, float):
        return f"{x:,.4f}".rstrip("0").rstrip(".") if x < 10 else f"{x:,.1f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _qs(**params: Any) -> str:
    return "?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


KEPT_WORDS = {"rewrite": "the rewrite", "slide_fixed": "the raw text with its slide fixes", "raw": "the raw text"}


def rewrite_view(clip: dict) -> dict:
    """What the video page shows of a clip's rewrite (``clips.rewrite``, agents.rewrite.Rewrite.record):
    ``diff``: word_diff of the raw paragraph and the text kept (``clips.polished``: the rewrite, or the raw
    text with its slide fixes; None when the raw text stays); ``kept``: which text, in words (None: no rewrite
    asked); ``refused``: the check's reasons (None unless refused); ``no_answer``: why the model gave no valid
    answer; ``advisory``: why an accepted rewrite was not used; ``unused``: word_diff of the raw paragraph and
    the model's rewrite that was refused or advisory; ``fixes``: the slide-term fixes in the kept text and
    ``reverted``: the swaps the check put back ("heard → written"). A record stored before ``kept`` was counts
    as the rewrite kept when accepted and used, else the raw text."""
    check = clip.get("rewrite") if isinstance(clip.get("rewrite"), dict) else {}
    status = check.get("status")
    kept = check.get("kept") or (None if not check else "rewrite" if status == "accepted" and not
                                 check.get("advisory") and clip.get("polished") else "raw")
    polished = clip.get("polished")
    written = check.get("rewrite")
    fixes = check.get("corrections") if kept == "rewrite" else check.get("slide_fixes") if kept == "slide_fixed" \
        else None
    return {"diff": word_diff(clip["text"], polished) if polished and polished != clip["text"] else None,
            "kept": KEPT_WORDS.get(kept) if kept else None,
            "advisory": check.get("advisory") if status == "accepted" else None,
            "refused": "; ".join(map(str, check.get("reasons") or [])) or "refused" if status == "refused" else None,
            "no_answer": "; ".join(map(str, check.get("reasons") or [])) or "no answer" if status == "no_answer"
            else None,
            "unused": word_diff(clip["text"], written) if written and kept != "rewrite" else None,
            "fixes": [f"{h} → {w}" for h, w in fixes or []],
            "reverted": [f"{h} → {w}" for h, w in check.get("reverted") or []]}


def word_diff(raw: str, new: str | None) -> list[tuple[str, str]]:
    """(op, text) runs turning ``raw`` into ``new`` word by word: op is ' ', '-' (removed) or '+' (added)."""
    a, b = raw.split(), (new or "").split()
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append((" ", " ".join(a[i1:i2])))
        else:
            if i2 > i1:
                out.append(("-", " ".join(a[i1:i2])))
            if j2 > j1:
                out.append(("+", " ".join(b[j1:j2])))
    return out


def mark_terms(text: str, words: list[str], width: int = 240) -> list[tuple[bool, str]]:
    """A window of ``text`` around its first matching word, as (is_match, text) runs."""
    if not text:
        return []
    folded = set(words)

    def hit(token: str) -> bool:
        t = token.lower()
        return t in folded or (len(t) > 3 and t.endswith("s") and not t.endswith("ss") and t[:-1] in folded)

    tokens = re.split(r"([^\W_]+)", text)
    first = next((i for i, t in enumerate(tokens) if t and hit(t)), 0)
    start = max(0, sum(len(t) for t in tokens[:first]) - width // 3)
    runs, pos = [], 0
    for t in tokens:
        end = pos + len(t)
        if end > start and pos < start + width:
            runs.append((bool(t) and hit(t), t))
        pos = end
    if start > 0:
        runs.insert(0, (False, "…"))
    if pos > start + width:
        runs.append((False, "…"))
    return runs


def node_label(runs: int, decisions: int, errors: int) -> str:
    """A graph node's count: ``2×`` (times the node ran over a batch), ``3 decisions`` (items it decided
    one by one: a per-video node records no batch run), ``1 error``; ``not run`` when none."""
    def n(k: int, word: str) -> str:
        return f"{k} {word}" + ("" if k == 1 else "s")

    parts = ([f"{runs}×"] if runs else []) + ([n(decisions, "decision")] if decisions else []) + \
        ([n(errors, "error")] if errors else [])
    return " · ".join(parts) or "not run"


def graph_svg(counts: dict[str, dict[str, int]]) -> dict:
    """Boxes for the build graph's nodes, top to bottom, with a count each and the coverage loop."""
    nodes = [n for n in GRAPH_NODES if not n.startswith("review_") or n in counts]
    boxes = []
    for i, n in enumerate(nodes):
        c = counts.get(n, {})
        runs, decisions, errors = c.get("runs", 0), c.get("decisions", 0), c.get("errors", 0)
        boxes.append({"name": n, "x": 20, "y": 10 + i * 40, "runs": runs or decisions, "decisions": decisions,
                      "errors": errors, "label": node_label(runs, decisions, errors)})
    by = {b["name"]: b for b in boxes}
    loop = None
    if "coverage" in by and "plan_queries" in by:
        y1, y2 = by["coverage"]["y"] + 14, by["plan_queries"]["y"] + 14
        loop = f"M 300 {y1} C 350 {y1}, 350 {y2}, 300 {y2}"
    return {"boxes": boxes, "height": 20 + len(boxes) * 40, "loop": loop}


def timeline_svg(rows: list[dict], width: int = 900) -> dict:
    """Lanes (one per node) of bars at their start offset, scaled to ``width`` pixels."""
    lanes: list[str] = []
    for r in rows:
        if r["node"] not in lanes:
            lanes.append(r["node"])
    end = max([float(r["start_s"]) + float(r["seconds"] or 0) for r in rows] + [0.001])
    scale = (width - 160) / end
    bars = [{"x": 160 + float(r["start_s"]) * scale, "y": 6 + lanes.index(r["node"]) * 18,
             "w": max(2.0, float(r["seconds"] or 0) * scale), "node": r["node"], "error": bool(r["error"]),
             "open": r["open"], "start": float(r["start_s"]), "seconds": float(r["seconds"] or 0)} for r in rows]
    return {"lanes": [{"name": n, "y": 6 + i * 18} for i, n in enumerate(lanes)], "bars": bars,
            "height": 12 + len(lanes) * 18, "width": width, "end": end}
