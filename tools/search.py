"""Video sources: find candidate lesson videos for a query.

Every source has ``name``, ``units_used``, ``closed`` and one verb, ``search(query, max_results)``,
which returns ``Candidate`` records (plain dataclasses, JSON-safe through ``to_dict``).
A source is open (``closed = False``: a search API, whose next phrasing may find videos no earlier
query found) or closed (``closed = True``: a local folder or URL list, whose whole catalogue is known
after one look; the agent does not ask it again with new phrasings, see ``is_closed``):

- ``YouTubeSource``: the YouTube Data API v3 (search.list, videos.list, commentThreads.list),
  counting quota units and caching whole results so a repeated query costs nothing.
- ``YtDlpSearch``: yt-dlp's ``ytsearchN:`` (no API key, no quota, flat entries only).
- ``LocalSource``: a folder of video files with optional JSON sidecars.
- ``UrlListSource``: a text file with one URL per line.

Local and URL sources return only what a query matches: ``relevance(query, text)`` is the
larger of the share of the query's content words found in the file's text (title,
description, tags, sidecar subject / course / knowledge point) and, when an embedding
function is given, the cosine similarity of the two texts' embeddings (all-MiniLM-L6-v2 in
the agent). A file is returned when its relevance reaches ``min_relevance`` (default
``RELEVANCE_THRESHOLD`` = 0.35: on the sample lessons, a query and the lesson it names score
0.57-0.86, a query of another subject at most 0.36, a random word at most 0.25).

``make_source("youtube" | "ytdlp" | "local:DIR" | "urls:FILE")`` builds one from a CLI flag.
Titles, descriptions and comments are untrusted text: they are returned as data, never interpreted.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from tools.download import YtDlpLogger
from tools.errors import ToolError
from tools.media import VIDEO_EXTENSIONS, file_sha256, local_video_id, probe, read_sidecar

log = logging.getLogger(__name__)

# YouTube Data API v3 quota cost of each method we call (https://developers.google.com/youtube/v3/determine_quota_cost).
UNIT_COST = {"search.list": 100, "videos.list": 1, "commentThreads.list": 1}
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded", "dailyLimitExceededUnreg"})
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
AUTH_REASONS = frozenset({"keyInvalid", "keyExpired", "API_KEY_INVALID", "API_KEY_EXPIRED", "accessNotConfigured",
                          "SERVICE_DISABLED", "ipRefererBlocked", "API_KEY_HTTP_REFERRER_BLOCKED",
                          "API_KEY_IP_ADDRESS_BLOCKED", "API_KEY_SERVICE_BLOCKED", "authError"})
NO_COMMENT_REASONS = frozenset({"commentsDisabled", "videoNotFound", "forbidden"})

STOPWORDS = frozenset("""
a about an and are as at be by can do does for from how i in into is it its of on or s that the their this to
vs what when where which who why will with you your
""".split())

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_YT_ID_RE = re.compile(r"[A-Za-z0-9_-]{11}")
_ISO_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")
RELEVANCE_THRESHOLD = 0.35
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TAG = re.compile(r"<[^>]+>")


@dataclass
class Candidate:
    """One video a source found: where it is and what its metadata says (untrusted text)."""

    video_id: str  # YouTube id; for local files the sidecar id, else stem + "-" + 8 hex of the content sha256
    source: str  # youtube | ytdlp | local | urls
    url: str  # watch URL, file path, or the URL from the list
    title: str = ""
    description: str = ""
    channel: str = ""
    tags: list[str] = field(default_factory=list)
    duration_s: float | None = None
    published_at: str | None = None
    view_count: int | None = None
    like_count: int | None = None
    comment_count: int | None = None
    license: str | None = None  # youtube | creativeCommon
    language: str | None = None
    comments: list[str] = field(default_factory=list)  # top comments, plain text
    query: str = ""  # the query that found it
    extra: dict = field(default_factory=dict)  # e.g. subject / course / knowledge_point from a sidecar
    relevance: float | None = None  # local and URL sources: relevance of ``query`` to it (0..1)

    def to_dict(self) -> dict:
        """The candidate as a plain dict of its fields (as stored with the run's candidates and in the search cache)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        """The candidate from ``to_dict``'s dict; keys it does not know (written by another version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class Source(Protocol):
    """What the agent needs from a video source. ``closed``: True when its whole catalogue is known after one
    look (a local folder, a URL list), so a new phrasing cannot bring a video the first searches could not;
    False for a search API (youtube, ytdlp)."""

    name: str
    units_used: int
    closed: bool

    def search(self, query: str, max_results: int) -> list[Candidate]:
        """At most ``max_results`` candidates for ``query``, best first. Raises ToolError (with a kind) on failure."""


class SearchCache(Protocol):
    """Where YouTube results are kept between runs (the store implements it over DuckDB)."""

    def get(self, key: str) -> dict | None:
        """The cached answer for ``key``, or None."""

    def put(self, key: str, value: dict, units: int) -> None:
        """Keep ``value`` under ``key``; ``units`` is the quota the search cost (what a later hit saves)."""


class MemoryCache:
    """A ``SearchCache`` in a dict; ``units_saved`` counts the quota its hits spared."""

    def __init__(self):
        self.entries: dict[str, tuple[dict, int]] = {}
        self.hits = 0
        self.units_saved = 0

    def get(self, key: str) -> dict | None:
        """A copy of the cached answer for ``key`` (a hit counts its units as saved), or None."""
        found = self.entries.get(key)
        if found is None:
            return None
        self.hits += 1
        self.units_saved += found[1]
        return json.loads(json.dumps(found[0]))  # a copy: callers may mutate what they get

    def put(self, key: str, value: dict, units: int) -> None:
        """Keep a copy of ``value`` under ``key`` with the quota ``units`` it cost."""
        self.entries[key] = (json.loads(json.dumps(value)), units)


class QuotaExceeded(ToolError):
    """The API key's daily quota is spent. ``reset_in_s``: seconds until it resets (midnight Pacific)."""

    def __init__(self, message: str, reset_in_s: float | None = None):
        super().__init__("quota", message)
        self.reset_in_s = reset_in_s

    def __reduce__(self):
        return (QuotaExceeded, (self.message, self.reset_in_s))


def is_closed(source) -> bool:
    """Whether ``source`` is a closed library (``closed = True``: local, urls); a source that does not say is
    open (searched again with new phrasings, as a search API)."""
    return bool(getattr(source, "closed", False))


def cache_key(method: str, params: dict) -> str:
    """sha256 of a method name and its sorted request parameters (never an API key)."""
    blob = json.dumps({"method": method, "params": {k: params[k] for k in sorted(params)}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def parse_iso_duration(text: str | None) -> float | None:
    """ISO 8601 duration as YouTube writes it (PT1H2M3S, P1DT2H, P0D) in seconds; None if unparsable."""
    match = _ISO_DURATION.fullmatch(text or "")
    if not match or text in ("P", "PT"):
        return None
    weeks, days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + seconds


def words(text: str) -> set[str]:
    """Lowercase content words of ``text`` (stopwords dropped, a plural ``s`` folded)."""
    out = set()
    for word in re.findall(r"\w+", text.lower()):
        if word in STOPWORDS or len(word) < 2:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.add(word)
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(_ANSI.sub("", html.unescape(_TAG.sub("", text))).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _seconds_to_quota_reset() -> float | None:
    try:
        from zoneinfo import ZoneInfo

        now = datetime.now(ZoneInfo("America/Los_Angeles"))
    except Exception:  # no tz database on this machine
        return None
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return round((midnight - now).total_seconds(), 1)


class _RedactKey(logging.Filter):
    """googleapiclient logs request URLs at DEBUG; they carry ``key=``. Keep it out of logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "key=" in message:
            record.msg, record.args = re.sub(r"([?&]key=)[^&\s]+", r"\1REDACTED", message), None
        return True


_REDACT = _RedactKey()
for _name in ("googleapiclient.discovery", "googleapiclient.http"):
    if _REDACT not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_REDACT)


class YouTubeSource:
    """Search YouTube with the Data API v3, counting quota units (search 100, videos 1, comments 1 per video).

    One ``search`` makes search.list (one page per 50 results), videos.list (details of all hits in
    one call per 50) and, when ``comments`` > 0, commentThreads.list per video. The combined result is
    cached under one key, so the same query again costs 0 units and no HTTP request.
    """

    name = "youtube"
    closed = False  # a search API: a new phrasing can find new videos

    def __init__(self, api_key: str | None = None, *, service=None, cache: SearchCache | None = None,
                 comments: int = 5, region: str | None = None, relevance_language: str | None = "en",
                 video_duration: str | None = None, safe_search: str = "strict", quota_wait_s: float = 0,
                 retries: int = 0):
        if service is None:
            if not api_key:
                raise ToolError("input", "--source youtube needs an API key: set TEXTBOOK_YOUTUBE_API_KEY")
            from googleapiclient.discovery import build

            # static_discovery: the discovery document ships with the library, so build() makes no request
            service = build("youtube", "v3", developerKey=api_key, cache_discovery=False, static_discovery=True)
        self.service = service
        self._secret = api_key
        self.cache = cache
        self.comments = comments
        self.region = region
        self.relevance_language = relevance_language
        self.video_duration = video_duration  # any | short (<4 min) | medium (4-20 min) | long (>20 min)
        self.safe_search = safe_search
        self.quota_wait_s = quota_wait_s  # > 0: on quotaExceeded wait this long and try once more
        self.retries = retries  # googleapiclient's own retries of 5xx and rate limits
        self.units_used = 0
        self.units_by_method: dict[str, int] = {}

    def search(self, query: str, max_results: int = 10) -> list[Candidate]:
        """Up to ``max_results`` videos for ``query`` with details and top comments."""
        params = {"part": "snippet", "q": query, "type": "video", "safeSearch": self.safe_search}
        if self.relevance_language:
            params["relevanceLanguage"] = self.relevance_language
        if self.region:
            params["regionCode"] = self.region
        if self.video_duration:
            params["videoDuration"] = self.video_duration
        key = cache_key("youtube.search", {**params, "maxResults": max_results, "comments": self.comments})
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return [Candidate.from_dict(d) for d in hit.get("candidates", [])]

        units_before = self.units_used
        ids: list[str] = []
        snippets: dict[str, dict] = {}
        page_token = None
        while len(ids) < max_results:
            request = {**params, "maxResults": min(50, max_results - len(ids))}
            if page_token:
                request["pageToken"] = page_token
            page = self._call("search.list", self.service.search().list(**request))
            for item in page.get("items", []):
                video_id = (item.get("id") or {}).get("videoId")
                if video_id and video_id not in snippets:
                    ids.append(video_id)
                    snippets[video_id] = item.get("snippet") or {}
            page_token = page.get("nextPageToken")
            if not page_token or not page.get("items"):
                break
        ids = ids[:max_results]

        details: dict[str, dict] = {}
        for start in range(0, len(ids), 50):
            chunk = ids[start:start + 50]
            page = self._call("videos.list", self.service.videos().list(
                part="snippet,contentDetails,statistics,status", id=",".join(chunk), maxResults=len(chunk)))
            details.update({item["id"]: item for item in page.get("items", []) if item.get("id")})

        found = []
        for video_id in ids:
            item = details.get(video_id)
            if item is None:  # deleted or made private between search and details
                continue
            candidate = self._candidate(video_id, snippets[video_id], item, query)
            if candidate.extra.get("live_broadcast_content") in ("live", "upcoming"):
                continue  # a live or scheduled stream is not a lesson we can download yet
            found.append(candidate)

        if self.comments > 0:
            for candidate in found:
                try:
                    candidate.comments = self._top_comments(candidate.video_id)
                except QuotaExceeded:
                    # the search is paid for: keep it, without the remaining comments
                    log.warning("YouTube quota ran out while reading comments; keeping results without them")
                    break

        if self.cache is not None:
            self.cache.put(key, {"query": query, "candidates": [c.to_dict() for c in found]},
                           self.units_used - units_before)
        return found

    def _candidate(self, video_id: str, hit: dict, item: dict, query: str) -> Candidate:
        snippet = item.get("snippet") or {}
        details = item.get("contentDetails") or {}
        stats = item.get("statistics") or {}
        status = item.get("status") or {}
        extra = {
            "channel_id": snippet.get("channelId"),
            "category_id": snippet.get("categoryId"),
            "live_broadcast_content": snippet.get("liveBroadcastContent"),
            "definition": details.get("definition"),
            "caption": details.get("caption") == "true" if "caption" in details else None,
            "embeddable": status.get("embeddable"),
            "privacy_status": status.get("privacyStatus"),
            "made_for_kids": status.get("madeForKids"),
        }
        return Candidate(
            video_id=video_id,
            source="youtube",
            url=f"https://www.youtube.com/watch?v={video_id}",
            # search.list snippets are HTML-escaped and the description is cut; videos.list has the real text
            title=snippet.get("title") or html.unescape(hit.get("title", "")),
            description=snippet.get("description") or html.unescape(hit.get("description", "")),
            channel=snippet.get("channelTitle") or hit.get("channelTitle", ""),
            tags=[str(t) for t in snippet.get("tags") or []],
            duration_s=parse_iso_duration(details.get("duration")),
            published_at=snippet.get("publishedAt") or hit.get("publishedAt"),
            view_count=_int(stats.get("viewCount")),
            like_count=_int(stats.get("likeCount")),
            comment_count=_int(stats.get("commentCount")),
            license=status.get("license"),
            language=snippet.get("defaultAudioLanguage") or snippet.get("defaultLanguage"),
            query=query,
            extra={k: v for k, v in extra.items() if v is not None},
        )

    def _top_comments(self, video_id: str) -> list[str]:
        request = self.service.commentThreads().list(part="snippet", videoId=video_id, maxResults=self.comments,
                                                     order="relevance", textFormat="plainText")
        try:
            page = self._call("commentThreads.list", request, wait=False)
        except QuotaExceeded:
            raise
        except ToolError as exc:
            if exc.kind != "no-comments":
                log.info("no comments for %s: %s", video_id, exc.message)
            return []
        texts = []
        for thread in page.get("items", []):
            top = ((thread.get("snippet") or {}).get("topLevelComment") or {}).get("snippet") or {}
            text = (top.get("textDisplay") or top.get("textOriginal") or "").strip()
            if text:
                texts.append(text)
        return texts

    def _call(self, method: str, request, wait: bool = True) -> dict:
        import httplib2
        from googleapiclient.errors import HttpError

        for attempt in (1, 2):
            self.units_used += UNIT_COST[method]
            self.units_by_method[method] = self.units_by_method.get(method, 0) + UNIT_COST[method]
            try:
                return request.execute(num_retries=self.retries)
            except HttpError as exc:
                error = self._error(method, exc)
            except (OSError, httplib2.HttpLib2Error) as exc:  # sockets, timeouts, DNS
                error = ToolError("network", self._scrub(f"YouTube {method}: {type(exc).__name__}: {exc}"))
            if isinstance(error, QuotaExceeded) and wait and self.quota_wait_s > 0 and attempt == 1:
                log.warning("YouTube quota exceeded; waiting %.0f s before one more try", self.quota_wait_s)
                time.sleep(self.quota_wait_s)
                continue
            # raise outside the except block: the HttpError's text holds the request URL, which holds the key
            raise error
        raise AssertionError("unreachable")

    def _error(self, method: str, exc) -> ToolError:
        status = int(getattr(exc.resp, "status", 0) or 0)
        reasons: set[str] = set()
        message = ""
        try:
            body = json.loads(exc.content.decode("utf-8", "replace"))
            error = body.get("error") or {}
            message = str(error.get("message") or "")
            for entry in (error.get("errors") or []) + (error.get("details") or []):
                if isinstance(entry, dict) and entry.get("reason"):
                    reasons.add(str(entry["reason"]))
        except (ValueError, AttributeError, TypeError):
            pass
        message = self._scrub(_one_line(message or getattr(exc.resp, "reason", "") or f"HTTP {status}"))
        reason = ", ".join(sorted(reasons)) or f"HTTP {status}"
        if reasons & QUOTA_REASONS:
            return QuotaExceeded(f"YouTube API quota exceeded ({reason}) after {self.units_used} units this run",
                                 _seconds_to_quota_reset())
        if reasons & AUTH_REASONS or status == 401 or "API key not valid" in message:
            return ToolError("auth", f"YouTube API rejected the key ({reason}): {message}")
        if method == "commentThreads.list" and (reasons & NO_COMMENT_REASONS or status == 404):
            return ToolError("no-comments", f"{reason}: {message}")
        if reasons & RATE_REASONS or status == 429:
            return ToolError("rate-limit", f"YouTube {method} rate-limited ({reason}): {message}")
        if status >= 500:
            return ToolError("http-5xx", f"YouTube {method} failed: HTTP {status}: {message}")
        return ToolError("api", f"YouTube {method} failed: HTTP {status} ({reason}): {message}")

    def _scrub(self, text: str) -> str:
        text = re.sub(r"([?&]key=)[^&\s]+", r"\1REDACTED", text)
        return text.replace(self._secret, "REDACTED") if self._secret else text


def candidate_from_entry(entry: dict, query: str = "") -> Candidate | None:
    """A Candidate from one flat yt-dlp search entry; None for entries that are not videos."""
    video_id = entry.get("id")
    if not video_id or entry.get("ie_key") not in (None, "Youtube"):
        return None
    if entry.get("live_status") in ("is_live", "is_upcoming"):
        return None
    url = entry.get("url") or entry.get("webpage_url") or f"https://www.youtube.com/watch?v={video_id}"
    extra = {"channel_id": entry.get("channel_id"), "live_status": entry.get("live_status"),
             "availability": entry.get("availability")}
    return Candidate(
        video_id=str(video_id),
        source="ytdlp",
        url=url,
        title=entry.get("title") or "",
        description=entry.get("description") or "",
        channel=entry.get("channel") or entry.get("uploader") or "",
        tags=[str(t) for t in entry.get("tags") or []],
        duration_s=_float(entry.get("duration")),
        view_count=_int(entry.get("view_count")),
        query=query,
        extra={k: v for k, v in extra.items() if v is not None},
    )


def candidates_from_search(info: dict, query: str = "") -> list[Candidate]:
    """Candidates from the result of ``extract_info("ytsearchN:query", download=False)`` (flat)."""
    found, seen = [], set()
    for entry in info.get("entries") or []:
        candidate = candidate_from_entry(entry or {}, query)
        if candidate is not None and candidate.video_id not in seen:
            seen.add(candidate.video_id)
            found.append(candidate)
    return found


class YtDlpSearch:
    """YouTube search through yt-dlp (``ytsearchN:``): no key and no quota, but only flat metadata."""

    name = "ytdlp"
    closed = False

    def __init__(self, ydl_opts: dict | None = None):
        self.ydl_opts = dict(ydl_opts or {})
        self.units_used = 0
        self.units_by_method: dict[str, int] = {}

    def search(self, query: str, max_results: int = 10) -> list[Candidate]:
        """The first ``max_results`` results of yt-dlp's ``ytsearch`` for ``query`` (flat extraction: no video page is
        fetched, no API key, no quota). Raises ToolError: kind ``network`` or the kind yt-dlp's error maps to."""
        import yt_dlp

        logger = YtDlpLogger()
        opts = {"extract_flat": "in_playlist", "quiet": True, "no_warnings": True, "noprogress": True,
                "skip_download": True, "logger": logger, **self.ydl_opts}
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                info = ydl.extract_info(f"ytsearch{max_results}:{query}", download=False)
        except yt_dlp.utils.DownloadError as exc:
            message = _one_line(re.sub(r"^ERROR:\s*", "", _ANSI.sub("", str(exc))))
            lowered = message.lower()
            kind = ("bot-check" if "not a bot" in lowered else "rate-limit" if "http error 429" in lowered
                    else "network")
            raise ToolError(kind, f"yt-dlp search failed: {message}") from None
        return candidates_from_search(info or {}, query)


def _stems(text: str) -> set[str]:
    """Crude stems: "-ing"/"-ed" cut from longer words ("adding" -> "add"), then the first 7 letters."""
    return {(re.sub(r"(?:ing|ed)$", "", w) if len(w) > 4 else w)[:7] for w in words(text)}


# words a query carries that say nothing about its topic ("middle school lesson on ...")
QUERY_FILLER = frozenset(w[:7] for w in """lesson video tutorial explained explanation school middle high primary
grade class learn learning kid student introduction definition example basic topic course textbook""".split())


def lexical_relevance(query: str, text: str) -> float:
    """Share of the query's content words found in ``text`` (plurals folded; words that agree on their
    first 7 letters count as one, so "evaporation" matches "evaporate"; filler such as "middle school
    lesson" left out); 0 for a query with none."""
    wanted = _stems(query) - QUERY_FILLER
    return len(wanted & _stems(text)) / len(wanted) if wanted else 0.0


def relevance(query: str, texts: list[str], embed=None) -> list[float]:
    """Relevance of ``query`` to each text, 0..1: the larger of the lexical share and, with ``embed``
    (texts -> unit-length rows), the cosine similarity of the embeddings (negative counts as 0)."""
    scores = [lexical_relevance(query, t) for t in texts]
    if embed is not None and texts:
        vectors = embed([query, *texts])
        cos = vectors[1:] @ vectors[0]
        scores = [max(s, float(c)) for s, c in zip(scores, cos, strict=True)]
    return [round(min(1.0, max(0.0, s)), 4) for s in scores]


def candidate_text(c: Candidate) -> str:
    """What a query is matched against: title, description, tags and the sidecar's topic fields (a title
    that is a file name, ``ohms_law-part_1``, counts as its words)."""
    return ". ".join(x for x in [re.sub(r"[_\-]+", " ", c.title), c.description[:500], ", ".join(c.tags),
                                 *(str(c.extra.get(k) or "") for k in ("subject", "course", "sub_course",
                                                                       "knowledge_point"))] if x)


def _matching(candidates: list[Candidate], query: str, max_results: int, min_relevance: float, embed,
              key) -> list[Candidate]:
    """The candidates whose relevance to ``query`` reaches ``min_relevance``, best first (``key`` breaks ties);
    a candidate with no text at all (a bare URL) cannot be scored and is always returned, after the others."""
    texts = [candidate_text(c) for c in candidates]
    scored = [i for i, t in enumerate(texts) if t.strip()]
    rel = dict(zip(scored, relevance(query, [texts[i] for i in scored], embed), strict=True))
    keep = [i for i in scored if rel[i] >= min_relevance]
    keep.sort(key=lambda i: (-rel[i], key(candidates[i])))
    keep += [i for i, t in enumerate(texts) if not t.strip()]
    out = []
    for i in keep[:max_results]:
        c = Candidate.from_dict(candidates[i].to_dict())
        c.query, c.relevance = query, rel.get(i)
        out.append(c)
    return out


class LocalSource:
    """Video files in a folder (recursively) with optional sidecars; ``search`` returns those relevant to the
    query (see the module docstring), best first. ``embed``: texts -> unit-length rows, or None (words only)."""

    name = "local"
    closed = True  # every file is known after one look (and shown to the planner): not asked again
    _EXTRA_KEYS = ("subject", "course", "sub_course", "knowledge_point", "webpage_url")

    def __init__(self, folder: str | Path, min_relevance: float = RELEVANCE_THRESHOLD, embed=None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ToolError("input", f"no such folder: {self.folder}")
        self.files = sorted(f for f in self.folder.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        if not self.files:
            exts = " ".join(sorted(VIDEO_EXTENSIONS))
            raise ToolError("input", f"{self.folder}: folder holds no video files (looked for {exts})")
        self.units_used = 0
        self.units_by_method: dict[str, int] = {}
        self.min_relevance = min_relevance
        self.embed = embed
        self._candidates: list[Candidate] | None = None

    def catalog(self) -> list[Candidate]:
        """Every file of the folder, as found by no query (titles and sidecar topics are untrusted text; the
        agent shows them to the planner so the taxonomy can cover these videos)."""
        if self._candidates is None:
            self._candidates = [self._candidate(f) for f in self.files]
        return [Candidate.from_dict(c.to_dict()) for c in self._candidates]

    def search(self, query: str, max_results: int = 10) -> list[Candidate]:
        """Up to ``max_results`` files whose relevance to ``query`` reaches ``min_relevance``, best first."""
        if self._candidates is None:
            self._candidates = [self._candidate(f) for f in self.files]
        return _matching(self._candidates, query, max_results, self.min_relevance, self.embed,
                         key=lambda c: Path(c.url).name)

    def _candidate(self, path: Path) -> Candidate:
        meta = read_sidecar(path)
        sha = file_sha256(path)
        duration = _float(meta.get("duration"))
        extra = {k: meta[k] for k in self._EXTRA_KEYS if meta.get(k) not in (None, "")}
        extra["sha256"] = sha
        if duration is None:
            try:
                duration = probe(path).duration
            except ToolError as exc:  # the pipeline records the failure; listing goes on
                extra["probe_error"] = str(exc)
        tags = meta.get("tags") or []
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        published = meta.get("published_at")
        upload = str(meta.get("upload_date") or "")
        if not published and re.fullmatch(r"\d{8}", upload):  # yt-dlp writes YYYYMMDD
            published = f"{upload[:4]}-{upload[4:6]}-{upload[6:]}"
        return Candidate(
            video_id=local_video_id(path, meta, sha),
            source="local",
            url=str(path.resolve()),
            title=str(meta.get("title") or path.stem),
            description=str(meta.get("description") or ""),
            channel=str(meta.get("channel") or meta.get("uploader") or ""),
            tags=[str(t) for t in tags],
            duration_s=duration,
            published_at=published,
            view_count=_int(meta.get("view_count")),
            like_count=_int(meta.get("like_count")),
            comment_count=_int(meta.get("comment_count")),
            license=meta.get("license"),
            language=meta.get("language"),
            extra=extra,
        )


def url_video_id(url: str) -> str:
    """A YouTube URL's id (watch?v=, youtu.be/, shorts/, embed/, live/), else stem + 8 hex of the URL's sha256."""
    parsed = urlparse(url)
    host = (parsed.hostname or "").lower()
    if host.endswith("youtube.com") or host.endswith("youtube-nocookie.com"):
        video = (parse_qs(parsed.query).get("v") or [""])[0]
        if _YT_ID_RE.fullmatch(video):
            return video
        match = re.match(r"/(?:shorts|embed|live|v)/([A-Za-z0-9_-]{11})(?:[/?#]|$)", parsed.path)
        if match:
            return match.group(1)
    if host == "youtu.be":
        match = re.match(r"/([A-Za-z0-9_-]{11})(?:[/?#]|$)", parsed.path)
        if match:
            return match.group(1)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(parsed.path).stem).strip("_")[:40] or "url"
    return f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"


class UrlListSource:
    """URLs from a text file: one per line, optionally followed by a title; ``#`` comments and blanks ignored.

    ``search`` returns the URLs whose title is relevant to the query (see the module docstring), best
    first, then every URL without a title (nothing to match it by: the judges decide)."""

    name = "urls"
    closed = True

    def __init__(self, file: str | Path, min_relevance: float = RELEVANCE_THRESHOLD, embed=None):
        self.file = Path(file)
        if not self.file.is_file():
            raise ToolError("input", f"no such URL list: {self.file}")
        self.candidates: list[Candidate] = []
        seen = set()
        for line in self.file.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            url, _, title = line.partition(" ")
            if url in seen:
                continue
            seen.add(url)
            self.candidates.append(Candidate(video_id=url_video_id(url), source="urls", url=url,
                                             title=title.strip()))
        self.units_used = 0
        self.units_by_method: dict[str, int] = {}
        self.min_relevance = min_relevance
        self.embed = embed

    def catalog(self) -> list[Candidate]:
        """The list's URLs that have a title (untitled ones say nothing about their topic)."""
        return [Candidate.from_dict(c.to_dict()) for c in self.candidates if c.title]

    def search(self, query: str, max_results: int = 10) -> list[Candidate]:
        """Relevant titled URLs first (best first), then the untitled ones in file order."""
        order = {id(c): i for i, c in enumerate(self.candidates)}
        return _matching(self.candidates, query, max_results, self.min_relevance, self.embed,
                         key=lambda c: order[id(c)])


def make_source(spec: str, *, api_key: str | None = None, cache: SearchCache | None = None) -> Source:
    """A source from a CLI spec: ``youtube``, ``ytdlp``, ``local:DIR`` or ``urls:FILE``."""
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "youtube" and not sep:
        if not api_key:
            raise ToolError("input", "--source youtube needs an API key: set TEXTBOOK_YOUTUBE_API_KEY")
        return YouTubeSource(api_key, cache=cache)
    if kind == "ytdlp" and not sep:
        return YtDlpSearch()
    if kind == "local" and arg:
        return LocalSource(Path(arg).expanduser())
    if kind == "urls" and arg:
        return UrlListSource(Path(arg).expanduser())
    raise ToolError("input", f"unknown source {spec!r} (youtube, ytdlp, local:DIR, urls:FILE)")
