"""bench_scale part (b): N candidates through `textbook build` (the whole graph: goal, taxonomy, one
knowledge point, a local source holding N tiny silent clips, the metadata judge, the per-video stages),
the OpenAI-compatible stand-in (agents/standin.py) at zero latency in a process of its own.

- reject: the stand-in's metadata judge rejects every candidate (``--choice verdict=reject``): nothing is
  downloaded. The figure is the wall of the ``videos`` node (it starts once every search result is stored
  and ends once every verdict is) per candidate; target <= 10 ms. RSS of this process is sampled at each
  quarter of the judged candidates: flat means the last sample <= 1.5x the first.
- accept: the judge accepts every candidate; each is "downloaded" (a local file: tools.download probes it
  where it lies, no copy) and probed, and the probe rules drop it (silent: no audio). The ``videos`` node's
  wall against ffprobe alone over the same files (tools.media.probe, one after another, in a
  subprocess); target <= 1.5x.

The search itself (listing the folder, relevance and fit with the embedder) happens before the ``videos``
node and is reported apart. ``--profile FILE``: a cProfile of every thread of the driver (written as
pstats, the top costs printed); the profiler slows the run, so its timings are not the figures.

    python bench/bench_scale.py build [--candidates 20000] [--parts reject,accept] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._scale_process import _probe_alone  # noqa: E402


def tiny_clips(folder: Path, n: int, stem: str, meta) -> list[Path]:
    """``n`` distinct one-second silent 64x48 clips ``folder/STEM_I.mp4`` and their sidecars ``meta(i)``:
    one encode, then per clip its bytes with a top-level MP4 ``free`` box appended that names the clip
    (players and ffprobe skip a free box; each file's sha256 differs, so none is a duplicate). Seconds
    for 20,000 clips, where an ffmpeg stream copy per clip (bench/_videos.py) takes ~0.1-0.2 s each on
    a loaded box. Returns the clips."""
    import json
    import struct
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    base = folder.parent / f"{folder.name}-base.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=1",
                    "-pix_fmt", "yuv420p", str(base)], check=True)
    data = base.read_bytes()
    clips = []
    for i in range(n):
        clip = folder / f"{stem}_{i:0{max(2, len(str(n - 1)))}d}.mp4"
        name = f"textbook bench clip {i}".encode()
        clip.write_bytes(data + struct.pack(">I", 8 + len(name)) + b"free" + name)
        clip.with_suffix(".json").write_text(json.dumps(meta(i)))
        clips.append(clip)
    return clips


def rss_mb() -> float:
    """This process's resident memory now (not the peak), in MB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class ThreadProfiles:
    """cProfile of the calling thread and of every thread started while it is entered (Python 3.11's
    cProfile sees one thread only: each new thread enables a profiler of its own on its first call).
    ``stats()``: the merged pstats.Stats."""

    def __init__(self):
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start(self, frame, event, arg) -> None:
        p = cProfile.Profile()
        with self._lock:
            self.profiles.append(p)
        p.enable()  # replaces this hook for this thread

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start)
        main = cProfile.Profile()
        self.profiles.append(main)
        main.enable()
        return self

    def __exit__(self, *exc) -> None:
        self.profiles[0].disable()
        threading.setprofile(None)

    def stats(self) -> pstats.Stats:
        """Every thread's profile merged."""
        with self._lock:
            profiles = list(self.profiles)
        return pstats.Stats(*profiles, stream=io.StringIO())


class Timeline:
    """The build's events (``run_build(on_event=...)``) with their times: each node's wall (summed over its
    runs), the time the metadata judge stored its last verdict, RSS at each quarter of ``total`` items of
    ``node``'s progress."""

    def __init__(self, total: int, node: str):
        self.total, self.node = total, node
        self.walls: Counter = Counter()
        self.cpu: Counter = Counter()  # CPU seconds of this process (every thread, DuckDB's too) per node
        self.started: dict[str, float] = {}
        self._cpu0: dict[str, float] = {}
        self.first: dict[str, float] = {}
        self.last_judged = 0.0
        self.rss: list[tuple[int, float]] = []
        self._marks: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, e: dict) -> None:
        now = time.perf_counter()
        with self._lock:
            kind, node = e.get("event"), e.get("node")
            if kind == "node_start":
                self.started[node] = now
                self._cpu0[node] = time.process_time()
                self.first.setdefault(node, now)
            elif kind == "node_end" and node in self.started:
                self.walls[node] += now - self.started.pop(node)
                self.cpu[node] += time.process_time() - self._cpu0.pop(node)
            elif kind == "progress" and node == "judge_metadata":
                self.last_judged = now
            if kind == "progress" and node == self.node and e.get("done"):
                done = e["done"]
                mark = done * 4 // max(1, self.total)
                if done == 1 or (mark not in self._marks and done % max(1, self.total // 4) == 0):
                    self._marks.add(mark)
                    self.rss.append((done, rss_mb()))


def _agent(base_url: str, folder: Path, n: int):
    from agents.config import AgentConfig, LLMConfig, TaxonomySize

    llm = LLMConfig(base_url=base_url, model="standin", structured="json_schema", timeout_s=60)
    agent = AgentConfig(llm=llm, sources=[f"local:{folder}"], per_point=1, max_rounds=1, results_per_query=1,
                        enforce_judges="yes", library_points=False, min_relevance=0.0, min_fit=0.0,
                        taxonomy=TaxonomySize(courses=1, subcourses=1, points=1))
    # past the config's bounds (50 results a query) on purpose, as bench/bench_agent.py's scale: one query
    # finds every clip and the one point takes them all
    return agent.model_copy(update={"results_per_query": n, "per_point": n})


def _one_build(work: Path, folder: Path, n: int, verdict: str, timeline: Timeline,
               profile: Path | None) -> tuple[float, dict, Counter]:
    """One build against its own stand-in process and a fresh store; (wall s, result, candidate statuses and
    ``store_writes``, ``store_commits``)."""
    from agents.build import BuildSpec, run_build
    from bench._standin_process import StandInProcess
    from pipeline.config import PipelineConfig
    from store import open_store

    with StandInProcess(latency_s=0.0, choices={"verdict": verdict}) as srv:
        store = open_store(work / f"{verdict}.duckdb")
        try:
            spec = BuildSpec("build a physics textbook", _agent(srv.base_url, folder, n), PipelineConfig(),
                             work / f"out-{verdict}")
            t = time.perf_counter()
            if profile is not None:
                with ThreadProfiles() as prof:
                    result = run_build(store, spec, on_event=timeline)
                _report_profile(prof, profile.with_name(f"{profile.stem}-{verdict}{profile.suffix}"))
            else:
                result = run_build(store, spec, on_event=timeline)
            wall = time.perf_counter() - t
            statuses = Counter(c["status"] for c in store.candidates(result["run_id"]))
            statuses["store_writes"], statuses["store_commits"] = store.writes, store.commits
        finally:
            store.close()
    return wall, result, statuses


def _report_profile(prof: ThreadProfiles, path: Path, top: int = 25) -> None:
    stats = prof.stats()
    stats.dump_stats(str(path))
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("tottime").print_stats(top)
    print(f"  cProfile of every driver thread written to {path}; top {top} by own time:")
    print("\n".join("    " + line for line in out.getvalue().splitlines() if line.strip()))
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("cumulative").print_stats(r"/(agents|store|pipeline|tools)/", top)
    print(f"  the project's functions, top {top} by cumulative time (summed over threads: waits included):")
    print("\n".join("    " + line for line in out.getvalue().splitlines() if line.strip()))


def _walls(t: Timeline) -> str:
    return ", ".join(f"{node} {s:.1f} s (CPU {t.cpu[node]:.1f} s)" for node, s in t.walls.most_common())


def _store(statuses: Counter) -> str:
    writes, commits = statuses.pop("store_writes"), statuses.pop("store_commits")
    return f"store: {writes} writes in {commits} commits"


def part_reject(work: Path, folder: Path, n: int, profile: Path | None) -> bool:
    """(b1) every candidate rejected by the metadata judge; ms per candidate from search result to verdict."""
    timeline = Timeline(n, "judge_metadata")
    wall, result, statuses = _one_build(work, folder, n, "reject", timeline, profile)
    videos = timeline.walls["videos"]
    judged = timeline.last_judged - timeline.first.get("videos", timeline.last_judged)
    per = 1000 * videos / n
    store = _store(statuses)
    rss = timeline.rss
    flat = len(rss) < 2 or rss[-1][1] <= 1.5 * rss[0][1]
    print(f"  reject-all: build {wall:.1f} s; candidates {dict(statuses)}; {store}")
    print(f"    node walls: {_walls(timeline)}")
    print(f"    search result -> stored verdict (the videos node): {videos:.1f} s = {per:.2f} ms a candidate, "
          f"CPU {1000 * timeline.cpu['videos'] / n:.2f} ms a candidate (last verdict stored at {judged:.1f} s)"
          f"   target <= 10 ms: {'met' if per <= 10 else 'NOT met'}")
    print("    RSS: " + ", ".join(f"{done} judged {mb:.0f} MB" for done, mb in rss) +
          f"   flat (last <= 1.5x first): {'yes' if flat else 'NO'}")
    from pipeline.records import Status

    ok = statuses.get(Status.METADATA_REJECTED, 0) == n
    if not ok:
        print(f"    NOTE: expected {n} {Status.METADATA_REJECTED}, got {dict(statuses)}")
    return per <= 10 and flat and ok


def part_accept(work: Path, folder: Path, clips: list[Path], n: int, profile: Path | None) -> bool:
    """(b2) every candidate accepted, downloaded (a local file) and probed; against ffprobe alone."""
    probes = _probe_alone(clips)
    timeline = Timeline(n, "videos")
    wall, result, statuses = _one_build(work, folder, n, "accept", timeline, profile)
    videos = timeline.walls["videos"]
    judged = timeline.last_judged - timeline.first.get("videos", timeline.last_judged)
    ratio = videos / probes
    store = _store(statuses)
    rss = timeline.rss
    flat = len(rss) < 2 or rss[-1][1] <= 1.5 * rss[0][1]
    print(f"  accept-all with downloads and probes: build {wall:.1f} s; candidates {dict(statuses)}; {store}")
    print(f"    node walls: {_walls(timeline)}")
    print(f"    ffprobe alone over the {n} files: {probes:.1f} s = {1000 * probes / n:.1f} ms a file")
    print(f"    search result -> stored verdict (the videos node): {videos:.1f} s = {1000 * videos / n:.1f} ms a "
          f"candidate, CPU of this process {1000 * timeline.cpu['videos'] / n:.1f} ms a candidate (metadata judged "
          f"by {judged:.1f} s, then download + probe {videos - judged:.1f} s)")
    print(f"    ratio to ffprobe alone: {ratio:.2f}x (download + probe stages alone: {(videos - judged) / probes:.2f}x)"
          f"   target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}")
    print("    RSS: " + ", ".join(f"{done} through {mb:.0f} MB" for done, mb in rss) +
          f"   flat (last <= 1.5x first): {'yes' if flat else 'NO'}")
    return ratio <= 1.5 and flat


def build_scale(candidates: int, parts: list[str], profile: Path | None = None) -> bool:
    """Make ``candidates`` tiny silent clips (sidecars give title, subject and duration: the search probes
    nothing) and run the parts asked (``reject``, ``accept``); True when every target is met."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "clips"
        t = time.perf_counter()
        clips = tiny_clips(folder, candidates, "physics_clip",
                           lambda i: {"title": f"Newton's laws of motion, part {i}", "subject": "physics",
                                      "duration": 1.0})
        print(f"build at scale: {candidates} one-second silent clips made in {time.perf_counter() - t:.0f} s; "
              f"one knowledge point takes every one, stand-in at 0 s latency (own process); "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        ok = True
        if "reject" in parts:
            ok &= part_reject(work, folder, candidates, profile)
        if "accept" in parts:
            ok &= part_accept(work, folder, clips, candidates, profile)
        return ok


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of this part (bench_scale.py's ``build`` subcommand)."""
    ap.add_argument("--candidates", type=int, default=20000, help="candidates (tiny clips) through the build")
    ap.add_argument("--parts", default="reject,accept", help="comma-separated: reject, accept")
    ap.add_argument("--profile", type=Path, default=None,
                    help="write a cProfile of the driver's threads per part (FILE-reject.prof, ...) and print "
                         "its top costs (slows the run: its timings are not the figures)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    build_scale(args.candidates, args.parts.split(","), args.profile)


if __name__ == "__main__":
    main()
