"""Exports into an object store (--out s3://...) against moto's S3 server on 127.0.0.1: the same files as a local
export, the images in the bucket, and the rules of every export (nothing another run wrote is lost) kept against
what the bucket holds."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from pipeline.export import ExportError, ExportOptions, export
from tests.pipeline._corpus import make_corpus
from tools import storage


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("s3corpus"), videos=3, mode="concat", max_tokens=400)


def _upload_media(corpus, uri: str) -> None:
    for path in corpus.media.rglob("*"):
        if path.is_file():
            storage.put_file(path, storage.join(uri, path.relative_to(corpus.media).as_posix()))


def _keys(bucket: str, prefix: str = "") -> dict[str, bytes]:
    return {u[len(bucket) + 1:]: storage.read_bytes(u) for u in storage.listdir(storage.join(bucket, prefix))}


def test_jsonl_to_s3_is_the_local_export_with_its_images_in_the_bucket(corpus, s3_bucket, tmp_path):
    local = export(corpus.samples, tmp_path / "local", "jsonl", corpus.media, ExportOptions(run_id="run-1"))
    media_uri = storage.join(s3_bucket, "media")
    _upload_media(corpus, media_uri)
    out = storage.join(s3_bucket, "out")
    result = export(corpus.samples, out, "jsonl", media_uri, ExportOptions(run_id="run-1"))  # media by URI too
    assert result.target == f"{out}/samples.jsonl" and result.samples == local.samples == len(corpus.samples)
    assert result.images == local.images > 0 and result.files == local.files
    got = _keys(s3_bucket, "out")
    want = {p.relative_to(tmp_path / "local").as_posix(): p.read_bytes()
            for p in (tmp_path / "local").rglob("*") if p.is_file()}
    assert set(got) == {f"out/{rel}" for rel in want}
    for rel, data in want.items():
        if rel.endswith(".jsonl") or rel.endswith(".jpg"):
            assert got[f"out/{rel}"] == data, rel
    text = got["out/samples.jsonl"].decode()
    assert "textbook-export-" not in text and "textbook-media-" not in text and str(tmp_path) not in text
    images = [i for s in (json.loads(line) for line in text.splitlines()) for i in s["images"] if i]
    assert images and all(f"out/{i}" in got for i in images)


def test_the_rules_of_an_export_hold_against_the_bucket(corpus, s3_bucket):
    out = storage.join(s3_bucket, "shared")
    first_img = next(i for i in corpus.samples[0]["images"] if i)
    foreign = storage.join(out, first_img)
    other = Image.new("RGB", (8, 8), (1, 2, 3))
    with storage.open_uri(foreign, "wb") as fh:
        other.save(fh, format="JPEG")  # another run's image under the same name
    before = storage.read_bytes(foreign)
    result = export(corpus.samples, out, "jsonl", corpus.media)
    assert storage.read_bytes(foreign) == before and result.renamed == 1
    samples = [json.loads(line) for line in storage.read_bytes(f"{out}/samples.jsonl").decode().splitlines()]
    placed = samples[0]["images"][corpus.samples[0]["images"].index(first_img)]
    assert re.search(r"~[0-9a-f]{8}\.jpg$", placed)
    with storage.local_copy(storage.join(out, placed)) as path, Image.open(path) as im, \
            Image.open(corpus.media / first_img) as ref:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(ref.convert("RGB")))
    again = export(corpus.samples, out, "jsonl", corpus.media)  # the same export again: nothing renamed twice
    assert again.renamed == 1 and again.images == result.images

    storage.write_bytes(f"{out}/webdataset/mine.tar", b"someone's")
    many = export(corpus.samples, out, "webdataset", corpus.media, ExportOptions(shard_size=1))
    assert len(many.files) == len(corpus.samples) > 1
    few = export(corpus.samples, out, "webdataset", corpus.media, ExportOptions(shard_size=100))
    assert len(few.files) == 1 and few.target == f"{out}/webdataset"
    shards = sorted([f"{out}/webdataset/mine.tar", f"{out}/{few.files[0]}"])
    assert sorted(storage.listdir(f"{out}/webdataset")) == shards
    assert storage.read_bytes(f"{out}/webdataset/mine.tar") == b"someone's"

    storage.write_bytes(f"{out}/README.md", b"my notes")
    with pytest.raises(ExportError) as err:
        export(corpus.samples, out, "hf", corpus.media)
    assert str(err.value).startswith(f"{out}/README.md exists and was not written"), err.value
    assert "textbook-export-" not in str(err.value)
    assert storage.read_bytes(f"{out}/README.md") == b"my notes" and not storage.exists(f"{out}/data")


def test_released_to_s3_points_at_the_bucket_images(corpus, s3_bucket):
    out = storage.join(s3_bucket, "rel")
    result = export(corpus.samples, out, "released", corpus.media)
    data = json.loads(storage.read_bytes(result.target))
    paths = [p for s in data for p in s["images"] if p]
    assert paths and all(p.startswith(f"{out}/images/") for p in paths)
    assert all(storage.is_file(p) for p in paths)


def test_an_unwritable_target_is_one_line(corpus, s3_bucket):
    with pytest.raises(ExportError) as err:
        export(corpus.samples, "s3://no-such-bucket-tb/out", "jsonl", corpus.media)
    assert "\n" not in str(err.value) and "no such bucket" in str(err.value), err.value
    with pytest.raises(ExportError) as err:
        export(corpus.samples, storage.join(s3_bucket, "o"), "jsonl", storage.join(s3_bucket, "no-media"))
    assert "keyframe file missing" in str(err.value) and f"{s3_bucket}/no-media/" in str(err.value)
    assert not storage.exists(storage.join(s3_bucket, "o", "samples.jsonl"))


@pytest.mark.e2e
def test_textbook_export_out_s3(corpus, s3_bucket, tmp_path):
    """`textbook export --out s3://...` from a store: exit 0, the samples and images in the bucket; a missing
    bucket: one line, exit 2."""
    import shutil

    from store import open_store
    from store.paths import media_dir
    from tests.conftest import run_cli

    db = tmp_path / "runs.duckdb"
    store = open_store(db)
    try:
        store.start_run("run-s3cli", "process", ["in"], {}, "h")
        store.save_samples("run-s3cli", "h", corpus.samples)
        store.finish_run("run-s3cli", "finished", {"samples": len(corpus.samples)})
    finally:
        store.close()
    shutil.copytree(corpus.media, media_dir(db))
    out = storage.join(s3_bucket, "cli-out")
    proc = run_cli("export", "--db", str(db), "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["target"] == f"{out}/samples.jsonl" and result["samples"] == len(corpus.samples)
    lines = storage.read_bytes(result["target"]).decode().splitlines()
    images = [i for line in lines for i in json.loads(line)["images"] if i]
    assert len(lines) == len(corpus.samples) and images and all(storage.is_file(storage.join(out, i)) for i in images)
    bad = run_cli("export", "--db", str(db), "--out", "s3://no-such-bucket-tb/out")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "no such bucket" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
