"""The reader and `textbook train` on an export in an object store (moto's S3 server on 127.0.0.1): the same
model inputs as from the local export, images read from the bucket, bad input in one line."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.export import export
from tests.pipeline._corpus import make_corpus
from tests.train._inproc import one_line_error, textbook
from tools import storage
from train.data import InterleavedDataset, ReaderConfig, ReaderError, check_images, find_data_file
from train.model import tiny_processor


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("s3train"), videos=3, mode="concat", max_tokens=400)


def _same(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.input_ids == y.input_ids and x.labels == y.labels and x.position == y.position
        assert x.num_images == y.num_images
        for px, py in zip(x.pixels, y.pixels, strict=True):
            assert px.keys() == py.keys() and all(torch.equal(px[k], py[k]) for k in px)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "released"])
def test_an_s3_export_reads_as_the_local_one(fmt, corpus, s3_bucket, tmp_path, processor):
    local = export(corpus.samples, tmp_path / "local", fmt, corpus.media).target
    out = storage.join(s3_bucket, "out")
    remote = export(corpus.samples, out, fmt, corpus.media).target
    assert find_data_file(out) == remote  # the folder's data file, found in the bucket
    cfg = ReaderConfig(shuffle=fmt != "parquet", seed=7, max_missing_images=0.0)
    want = list(InterleavedDataset(local, processor, cfg))
    ds = InterleavedDataset(out, processor, cfg)
    got = list(ds)
    _same(got, want)
    assert ds.stats.images_loaded == sum(e.num_images for e in want) > 0 and ds.stats.images_missing == 0
    assert check_images(out, cfg)["missing"] == 0


def test_images_missing_from_the_bucket_are_counted_and_named(corpus, s3_bucket, processor):
    out = storage.join(s3_bucket, "gaps")
    export(corpus.samples, out, "jsonl", corpus.media)
    first = next(i for i in corpus.samples[0]["images"] if i)
    line = json.loads(storage.read_bytes(f"{out}/samples.jsonl").decode().splitlines()[0])
    gone = storage.join(out, line["images"][corpus.samples[0]["images"].index(first)])
    assert storage.remove(gone)
    ds = InterleavedDataset(out, processor, ReaderConfig(max_missing_images=1.0))
    list(ds)
    assert ds.stats.images_missing == 1 and ds.encoder.first_missing == gone
    with pytest.raises(ReaderError) as err:
        list(InterleavedDataset(out, processor, ReaderConfig(max_missing_images=0.0)))
    assert gone in str(err.value) and "\n" not in str(err.value)
    assert check_images(out, ReaderConfig(max_missing_images=1.0))["first_missing"] == gone


def test_no_data_file_in_the_bucket_is_one_line(s3_bucket):
    storage.write_bytes(storage.join(s3_bucket, "empty", "notes.txt"), b"x")
    with pytest.raises(ReaderError, match=r"^s3://.*/empty holds none of samples.jsonl"):
        find_data_file(storage.join(s3_bucket, "empty"))
    with pytest.raises(ReaderError, match=r"^no data file at s3://.*/nothing$"):
        find_data_file(storage.join(s3_bucket, "nothing"))
    with pytest.raises(ReaderError, match="^no data file at s3://no-such-bucket-tb/out$"):
        find_data_file("s3://no-such-bucket-tb/out")


def test_textbook_train_on_an_s3_export(corpus, s3_bucket, tmp_path, capsys, monkeypatch):
    out = storage.join(s3_bucket, "train")
    export(corpus.samples, out, "jsonl", corpus.media)
    base = ["train", "--data", out, "--model", "tiny", "--cpu-threads", "1", "--save-every", "0",
            "--max-steps", "2", "--json"]
    result = textbook(capsys, monkeypatch, *base, "--out", str(tmp_path / "model"))
    assert result.returncode == 0, result.stderr
    reader = json.loads(result.stdout)["reader"]
    assert reader["images_loaded"] > 0 and reader["images_missing"] == 0
    assert (tmp_path / "model" / "model.safetensors").is_file()
    line = one_line_error(textbook(capsys, monkeypatch, "train", "--data", storage.join(s3_bucket, "none"),
                                   "--model", "tiny", "--out", str(tmp_path / "m2")))
    assert f"no data file at {s3_bucket}/none" in line
