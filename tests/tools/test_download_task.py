"""tools.download.download_task, the build's download as a task (what a Ray actor of the download pool runs):
the file lands in the folder or object-store prefix it is given (moto's S3 on 127.0.0.1), named by URI, with
the sha256 and size of what was written; a video already there is returned without a request; a failure keeps
its kind and writes nothing."""

from __future__ import annotations

import pickle

import pytest

from tests.tools.test_download import count, server  # noqa: F401 - the fixture serving tests/data/lessons
from tools import storage
from tools.download import DownloadError, Stored, download_task
from tools.media import file_sha256


def test_into_an_object_store_then_reused(server, s3_bucket, lessons):  # noqa: F811
    base, hits = server
    url = f"{base}/physics_newton.mp4"
    dest = storage.join(s3_bucket, "media", "downloads")
    got = download_task(url, dest, "newton-1", 480, 0)
    lesson = lessons / "physics_newton.mp4"
    assert isinstance(got, Stored) and got.attempts == 1
    assert got.source == f"{dest}/newton-1.mp4" and storage.is_file(got.source)
    assert (got.sha256, got.bytes) == (file_sha256(lesson), lesson.stat().st_size)
    assert storage.listdir(dest) == [got.source]  # one object: no .part or temporary left in the bucket
    assert pickle.loads(pickle.dumps(got)) == got  # what a Ray actor sends back

    before = count(hits, "/physics_newton.mp4")
    again = download_task(url, dest, "newton-1", 480, 0)
    assert again.attempts == 0 and count(hits, "/physics_newton.mp4") == before  # not a single request
    assert (again.source, again.sha256, again.bytes) == (got.source, got.sha256, got.bytes)


def test_into_a_folder_and_a_failure_keeps_its_kind(server, tmp_path, lessons):  # noqa: F811
    base, _ = server
    got = download_task(f"{base}/physics_newton.mp4", str(tmp_path / "downloads"), "newton-2", 480, 0)
    assert got.source == str(tmp_path / "downloads" / "newton-2.mp4")
    assert got.sha256 == file_sha256(lessons / "physics_newton.mp4")
    with pytest.raises(DownloadError) as err:
        download_task(f"{base}/no_such_lesson.mp4", str(tmp_path / "gone"), "gone-1", 480, 0)
    assert err.value.kind == "not-found"
    assert not (tmp_path / "gone").exists() or not any((tmp_path / "gone").iterdir())
