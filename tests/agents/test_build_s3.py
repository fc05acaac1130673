"""`textbook build --media s3://...`: the build's keyframes and clip images go to an object store (moto's S3 server
on 127.0.0.1, tests/conftest.py ``s3_bucket``), with real whisper, ffmpeg, tesseract and DuckDB, and give the same
samples as a build whose media root is the local default; the root is recorded with the run (credentials never
are), so a resumed build and `export` find it; a URI with credentials in it is refused before any run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agents.build import BuildSpec, run_build, spec_from_run
from agents.config import AgentConfig, LLMConfig
from pipeline.config import PipelineConfig
from store import open_store
from tests.agents.scripted import ScriptedChatModel, models_for, physics_script
from tools import storage
from tools.errors import ToolError

LESSONS = Path(__file__).resolve().parents[1] / "data" / "lessons"
pytestmark = pytest.mark.slow  # real ASR, keyframes and OCR of a lesson, twice


@pytest.fixture(scope="module")
def one_lesson(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("one")
    for suffix in (".mp4", ".json"):
        shutil.copy(LESSONS / f"chemistry_atoms{suffix}", folder / f"chemistry_atoms{suffix}")
    return folder


def _spec(folder: Path, out: Path, media: str | None) -> BuildSpec:
    agent = AgentConfig(llm=LLMConfig(model="scripted-media"), sources=[f"local:{folder}"], library_points=False,
                        results_per_query=1, max_rounds=1, polish=False, clip_judge="rules")
    return BuildSpec("build a chemistry textbook", agent, PipelineConfig(), out, media=media)


def _build(db: Path, spec: BuildSpec) -> tuple[dict, list[dict], list[str]]:
    store = open_store(db)
    try:
        result = run_build(store, spec, models=models_for(ScriptedChatModel(script=physics_script())))
        samples = store.samples(result["run_id"])
        frames = [r["path"] for r in store.rows("SELECT path FROM keyframes")]
        recorded = spec_from_run(store, result["run_id"]).media
    finally:
        store.close()
    return result | {"recorded": recorded}, samples, frames


def _positions(samples: list[dict]) -> list[tuple]:
    return [(Path(img).name if img else None, text)
            for s in samples for img, text in zip(s["images"], s["texts"], strict=True)]


def test_a_build_with_its_media_in_s3_gives_the_local_samples(one_lesson, s3_bucket, tmp_path):
    local, local_samples, local_frames = _build(tmp_path / "local.duckdb", _spec(one_lesson, tmp_path / "o1", None))
    assert local["accepted_videos"] == 1 and not local["failed"] and local_frames
    assert local["recorded"] is None and Path(local["media"]) == tmp_path / "local_media"

    media = f"{s3_bucket}/media"
    remote, remote_samples, remote_frames = _build(tmp_path / "remote.duckdb",
                                                   _spec(one_lesson, tmp_path / "o2", media))
    assert remote["accepted_videos"] == 1 and not remote["failed"]
    assert _positions(remote_samples) == _positions(local_samples) and remote_samples
    # every keyframe is an object under the media root, named by its URI in the store; none was written locally
    assert remote_frames and all(f.startswith(f"{media}/") for f in remote_frames)
    assert all(storage.exists(f) for f in remote_frames)
    assert not (tmp_path / "remote_media" / "frames").exists()
    # the root is recorded with the run, so --resume and export find it; the summary names it too
    assert remote["recorded"] == media and remote["media"] == media
    images = [i for s in remote_samples for i in s["images"] if i]  # relative to the media root
    assert images and all(storage.exists(storage.join(media, i)) for i in images)
    # the build's export (a local --out) holds the images, copied from the bucket, as the local build's does
    exported = sorted(p.relative_to(tmp_path / "o2") for p in (tmp_path / "o2").rglob("*.jpg"))
    assert exported and exported == sorted(p.relative_to(tmp_path / "o1") for p in (tmp_path / "o1").rglob("*.jpg"))


def test_credentials_in_the_media_uri_are_refused_before_any_run(one_lesson, s3_bucket, tmp_path):
    secret = s3_bucket.replace("s3://", "s3://AKIAEXAMPLE:sekrit@") + "/media"
    store = open_store(tmp_path / "creds.duckdb")
    try:
        with pytest.raises(ToolError) as info:
            run_build(store, _spec(one_lesson, tmp_path / "o", secret),
                      models=models_for(ScriptedChatModel(script=physics_script())))
        assert "sekrit" not in str(info.value) and "credentials in a URI are refused" in str(info.value)
        assert store.runs() == []
    finally:
        store.close()
    assert "AKIA" not in str(info.value)


def test_the_build_command_refuses_a_bad_media_uri_in_one_line_before_anything_starts(one_lesson, tmp_path):
    from tests.conftest import run_cli

    for media, says in (("s3://AKIAEXAMPLE:sekrit@bucket/media", "credentials in a URI are refused"),
                        ("gs://bucket/media", "gs:// needs the gcsfs package")):
        proc = run_cli("build", "build a chemistry textbook", "--source", f"local:{one_lesson}", "--media", media,
                       "--db", str(tmp_path / "b.duckdb"), cwd=tmp_path)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
        assert "sekrit" not in proc.stderr + proc.stdout
        assert not (tmp_path / "b.duckdb").exists()  # no store, no embedded model started
