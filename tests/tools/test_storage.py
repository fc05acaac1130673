"""tools.storage: media by URI against a real S3 server (moto on 127.0.0.1), local paths and file:// URIs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import S3_ENV
from tools import storage
from tools.errors import ToolError
from tools.media import VIDEO_EXTENSIONS, probe


def _video(path: Path, seconds: float = 1.0) -> Path:
    """A small real video (testsrc, 64x48, with a sine tone) made by ffmpeg."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10:d={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-shortest",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True)
    return path


def test_uri_kinds_and_join():
    assert storage.is_remote("s3://b/k") and storage.is_remote("gs://b/k")
    assert not storage.is_remote("/data/media") and not storage.is_remote("file:///data/media")
    assert not storage.is_remote("media/x.jpg")
    assert storage.join("s3://b/media/", "images", "/v1/0001.jpg") == "s3://b/media/images/v1/0001.jpg"
    assert storage.join("s3://b", "") == "s3://b"
    assert storage.join("/data/media", "images", "a.jpg") == "/data/media/images/a.jpg"
    assert storage.join("file:///data/media", "a.jpg") == "/data/media/a.jpg"
    assert storage.redact("s3://AKIAXX:very-secret@bucket/x") == "s3://***@bucket/x"
    assert storage.redact("s3://bucket/x@y") == "s3://bucket/x@y"  # an @ in a key is not a user part


def test_round_trips_on_s3(s3_bucket, tmp_path):
    base = storage.join(s3_bucket, "media")
    uri = storage.join(base, "images", "v1", "0001.jpg")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\xff\xd8jpeg bytes")
    assert storage.exists(uri) and storage.is_file(uri) and storage.size(uri) == 12
    assert storage.read_bytes(uri) == b"\xff\xd8jpeg bytes"
    assert storage.exists(storage.join(base, "images"))  # a prefix counts as a folder
    with storage.open_uri(storage.join(base, "notes.txt"), "w") as fh:
        fh.write("Säure und Base\n")
    with storage.open_uri(storage.join(base, "notes.txt"), "r") as fh:
        assert fh.read() == "Säure und Base\n"
    local = tmp_path / "up.bin"
    local.write_bytes(os.urandom(70_000))
    storage.put_file(local, storage.join(base, "up.bin"))
    back = storage.get_file(storage.join(base, "up.bin"), tmp_path / "sub" / "down.bin")
    assert back.read_bytes() == local.read_bytes()
    assert storage.remove(uri) and not storage.exists(uri) and not storage.remove(uri)


def test_a_failed_write_leaves_the_old_object(s3_bucket):
    uri = storage.join(s3_bucket, "a.json")
    storage.write_bytes(uri, b"old")
    with pytest.raises(RuntimeError):
        with storage.open_uri(uri, "wb") as fh:
            fh.write(b"half of the new")
            raise RuntimeError("the writer failed")
    assert storage.read_bytes(uri) == b"old"


def test_local_paths_and_file_uris(tmp_path):
    uri = f"file://{tmp_path}/m/images/a.jpg"
    storage.write_bytes(uri, b"abc")
    assert (tmp_path / "m" / "images" / "a.jpg").read_bytes() == b"abc"
    assert storage.read_bytes(tmp_path / "m" / "images" / "a.jpg") == b"abc"
    assert [Path(p).name for p in storage.listdir(tmp_path / "m", {".jpg"})] == ["a.jpg"]
    assert not list(tmp_path.rglob("*.tmp"))  # the temporary name was renamed away
    with storage.local_copy(uri) as path:
        assert path == tmp_path / "m" / "images" / "a.jpg"  # passed through, not copied
    storage.check_read_write(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["images"]  # the probe is gone


def test_local_copy_of_an_s3_video_is_probed_by_ffprobe(s3_bucket, tmp_path):
    video = _video(tmp_path / "lesson.mp4", 1.5)
    uri = storage.join(s3_bucket, "in", "lesson.mp4")
    storage.put_file(video, uri)
    with storage.local_copy(uri) as path:
        assert path.name == "lesson.mp4" and path != video
        info = probe(path)
        assert abs(info.duration - 1.5) < 0.15 and info.has_audio and (info.width, info.height) == (64, 48)
        held = path
    assert not held.exists()  # the temporary copy is removed with its block


def test_listdir_of_a_bucket_prefix_by_extension(s3_bucket):
    for key in ("in/a.mp4", "in/b.MKV", "in/notes.txt", "in/sub/c.webm", "other/d.mp4", "in2/e.mp4"):
        storage.write_bytes(storage.join(s3_bucket, key), b"x")
    got = storage.listdir(f"{s3_bucket}/in/", VIDEO_EXTENSIONS)
    assert got == [f"{s3_bucket}/in/a.mp4", f"{s3_bucket}/in/b.MKV", f"{s3_bucket}/in/sub/c.webm"]
    assert storage.listdir(f"{s3_bucket}/in", VIDEO_EXTENSIONS, recursive=False) == [
        f"{s3_bucket}/in/a.mp4", f"{s3_bucket}/in/b.MKV"]
    assert storage.listdir(f"{s3_bucket}/in", ["txt"]) == [f"{s3_bucket}/in/notes.txt"]
    with pytest.raises(ToolError) as err:
        storage.listdir(f"{s3_bucket}/nothing-here/")
    assert err.value.kind == "not_found"


def test_a_missing_object_is_not_found(s3_bucket, tmp_path):
    missing = storage.join(s3_bucket, "in", "gone.mp4")
    for call in (lambda: storage.read_bytes(missing), lambda: storage.get_file(missing, tmp_path / "x"),
                 lambda: storage.local_copy(missing).__enter__(), lambda: storage.size(missing)):
        with pytest.raises(ToolError) as err:
            call()
        assert err.value.kind == "not_found", err.value
        assert "gone.mp4" in err.value.message and "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()


def test_a_missing_bucket_is_not_found_in_one_line(s3_bucket):
    with pytest.raises(ToolError) as err:
        storage.write_bytes("s3://no-such-bucket-tb/x.jpg", b"x")
    assert err.value.kind == "not_found" and "\n" not in str(err.value), err.value
    assert str(err.value) == "not_found: cannot write s3://no-such-bucket-tb/x.jpg: no such bucket"
    with pytest.raises(ToolError) as err:
        storage.check_read_write("s3://no-such-bucket-tb/media")
    assert err.value.kind == "not_found" and "s3://no-such-bucket-tb/media/.textbook-probe" in str(err.value)


def test_a_path_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for call in (lambda: storage.write_bytes(blocker / "media" / "x.jpg", b"x"),
                 lambda: storage.check_read_write(blocker / "media"),
                 lambda: storage.put_file(blocker, blocker / "x")):
        with pytest.raises(ToolError) as err:
            call()
        assert err.value.kind == "storage" and "\n" not in str(err.value)
        assert str(blocker) in err.value.message and "Traceback" not in str(err.value)


def test_the_preflight_reads_and_writes_the_bucket(s3_bucket):
    storage.check_read_write(storage.join(s3_bucket, "media"))
    assert storage.listdir(s3_bucket) == []  # the probe was deleted


def test_gs_without_gcsfs_is_one_line_naming_the_package():
    with pytest.raises(ToolError) as err:
        storage.read_bytes("gs://bucket/in/a.mp4")
    assert err.value.kind == "storage" and "gcsfs" in err.value.message and "\n" not in str(err.value)
    with pytest.raises(ToolError) as err:
        storage.exists("nosuchscheme://bucket/a")
    assert err.value.kind == "storage" and "nosuchscheme://" in err.value.message


def test_no_secret_in_errors(s3_bucket, caplog):
    """Credentials stay in the environment: neither the secret key nor a user part of a URI reaches a message
    or the log (a URI carrying credentials is refused before a client sees it)."""
    secret = S3_ENV["AWS_SECRET_ACCESS_KEY"]
    with caplog.at_level("DEBUG"):  # every logger, botocore's and s3fs's request logs included
        storage.write_bytes(storage.join(s3_bucket, "seen.txt"), b"x")
        assert storage.read_bytes(storage.join(s3_bucket, "seen.txt")) == b"x"
        for uri in (f"s3://AKIAUSER:{secret}@{s3_bucket[5:]}/missing.jpg", storage.join(s3_bucket, "missing.jpg")):
            with pytest.raises(ToolError) as err:
                storage.read_bytes(uri)
            assert secret not in str(err.value) and "AKIAUSER" not in str(err.value)
            assert err.value.kind == ("storage" if "AKIAUSER" in uri else "not_found"), err.value
    assert "seen.txt" in caplog.text  # the request logs were captured
    assert secret not in caplog.text and S3_ENV["AWS_SESSION_TOKEN"] not in caplog.text


def test_put_dir_and_copy_within_the_bucket_and_across(s3_bucket, tmp_path):
    frames = tmp_path / "frames"
    for rel in ("00000.jpg", "00001.jpg", "sub/00002.JPG", "notes.txt"):
        (frames / rel).parent.mkdir(parents=True, exist_ok=True)
        (frames / rel).write_bytes(rel.encode())
    media = storage.join(s3_bucket, "media", "frames", "v1", "h1")
    written = storage.put_dir(frames, media, {".jpg"})
    assert written == [f"{media}/00000.jpg", f"{media}/00001.jpg", f"{media}/sub/00002.JPG"]
    assert storage.read_bytes(f"{media}/sub/00002.JPG") == b"sub/00002.JPG"
    image = storage.join(s3_bucket, "media", "images", "v1", "h1", "a.jpg")
    storage.copy(f"{media}/00001.jpg", image)  # server-side, within the bucket
    assert storage.read_bytes(image) == b"00001.jpg"
    storage.copy(image, tmp_path / "back" / "a.jpg")  # bucket -> local
    storage.copy(tmp_path / "back" / "a.jpg", tmp_path / "again.jpg")  # local -> local (a link)
    assert (tmp_path / "again.jpg").read_bytes() == b"00001.jpg"
    with pytest.raises(ToolError) as err:
        storage.copy(f"{media}/gone.jpg", image)
    assert err.value.kind == "not_found"
    with pytest.raises(ToolError) as err:
        storage.put_dir(tmp_path / "no-frames", media)
    assert err.value.kind == "not_found"


def test_sha256_of_a_file_and_of_the_same_bytes_as_an_object(s3_bucket, tmp_path):
    import hashlib

    data = bytes(range(256)) * 40_000  # ~10 MB: more than one 4 MiB block
    (tmp_path / "v.mp4").write_bytes(data)
    storage.put_file(tmp_path / "v.mp4", f"{s3_bucket}/in/v.mp4")
    want = (hashlib.sha256(data).hexdigest(), len(data))
    assert storage.sha256(tmp_path / "v.mp4") == want == storage.sha256(f"{s3_bucket}/in/v.mp4")
    with pytest.raises(ToolError) as info:
        storage.sha256(f"{s3_bucket}/in/missing.mp4")
    assert info.value.kind == "not_found"
