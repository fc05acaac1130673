"""Downloads through yt-dlp's generic extractor from a local HTTP server serving tests/data/lessons."""

from __future__ import annotations

import functools
import http.server
import pickle
import socket
import threading

import pytest

from tools import media
from tools.download import Downloaded, DownloadError, classify, clean_message, download


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the lessons; paths under /busy/ answer 503. Records every request."""

    hits: list[tuple[str, str]]

    def do_GET(self):
        self.hits.append(("GET", self.path))
        if self.path.startswith("/busy/"):
            self.send_error(503, "Service Unavailable")
            return
        super().do_GET()

    def do_HEAD(self):
        self.hits.append(("HEAD", self.path))
        super().do_HEAD()

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the generic extractor reads 512 bytes and hangs up: a broken pipe here is expected


@pytest.fixture(scope="module")
def server(lessons):
    hits: list[tuple[str, str]] = []
    handler = type("Handler", (_Handler,), {"hits": hits})
    httpd = _Server(("127.0.0.1", 0), functools.partial(handler, directory=str(lessons)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, hits
    httpd.shutdown()
    httpd.server_close()


def count(hits, path):
    return sum(1 for _, p in hits if p == path)


def test_download_then_reuse(server, tmp_path, lessons, capfd):
    base, hits = server
    url = f"{base}/physics_newton.mp4"
    got = download(url, tmp_path, video_id="newton-1", backoff_s=0.01)
    assert isinstance(got, Downloaded)
    assert got.path == tmp_path / "newton-1.mp4" and got.path.is_file()
    assert got.video_id == "newton-1" and got.url == url and got.attempts == 1
    assert got.bytes == (lessons / "physics_newton.mp4").stat().st_size
    assert media.probe(got.path).has_audio
    assert 50 < got.info["duration"] < 53 and got.info["ext"] == "mp4" and got.info["height"] == 480
    assert got.info["extractor"] == "Generic"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newton-1.mp4"]  # no .part or other leftovers
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # yt-dlp printed nothing

    before = count(hits, "/physics_newton.mp4")
    again = download(url, tmp_path, video_id="newton-1")
    assert again.path == got.path and again.attempts == 0 and again.bytes == got.bytes
    assert count(hits, "/physics_newton.mp4") == before  # not a single request


def test_download_names_the_file_by_the_extractor_id(server, tmp_path):
    base, _ = server
    got = download(f"{base}/math_quiet_tone.mp4", tmp_path)
    assert got.video_id == "math_quiet_tone" and got.path == tmp_path / "math_quiet_tone.mp4"


def test_broken_file_in_place_is_downloaded_again(server, tmp_path):
    base, hits = server
    (tmp_path / "earth.mp4").write_bytes(b"half a file")
    got = download(f"{base}/earth_no_audio.mp4", tmp_path, video_id="earth")
    assert got.attempts == 1 and media.probe(got.path).has_video


def test_a_truncated_file_in_place_is_downloaded_again(server, tmp_path, lessons):
    """An earlier download cut short (index first, half the bytes) is fetched again, not reused."""
    import subprocess

    whole = tmp_path / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(lessons / "physics_newton.mp4"), "-c", "copy", "-movflags",
                    "+faststart", str(whole)], check=True)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "newton.mp4").write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    assert media.probe(tmp_path / "dl" / "newton.mp4").truncated
    base, hits = server
    got = download(f"{base}/physics_newton.mp4", tmp_path / "dl", video_id="newton")
    assert got.attempts == 1 and count(hits, "/physics_newton.mp4") >= 1
    fetched = media.probe(got.path)
    assert not fetched.truncated and 50 < fetched.duration < 53


def test_404_is_not_found_and_not_retried(server, tmp_path):
    base, hits = server
    with pytest.raises(DownloadError) as err:
        download(f"{base}/missing_lesson.mp4", tmp_path, retries=3, backoff_s=0.01)
    exc = err.value
    assert exc.kind == "not-found" and exc.attempts == 1
    assert count(hits, "/missing_lesson.mp4") == 1
    assert "HTTP Error 404" in exc.message and not exc.message.startswith("ERROR") and "\n" not in exc.message
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_is_corrupt_and_removed(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError) as err:
        download(f"{base}/physics_truncated.mp4", tmp_path, video_id="energy", backoff_s=0.01)
    assert err.value.kind == "corrupt" and err.value.attempts == 1
    assert list(tmp_path.iterdir()) == []


def test_503_is_retried_then_http_5xx(server, tmp_path):
    base, hits = server
    with pytest.raises(DownloadError) as err:
        download(f"{base}/busy/lesson.mp4", tmp_path, retries=2, backoff_s=0.01)
    assert err.value.kind == "http-5xx" and err.value.attempts == 3
    assert count(hits, "/busy/lesson.mp4") == 3
    restored = pickle.loads(pickle.dumps(err.value))
    assert isinstance(restored, DownloadError) and (restored.kind, restored.attempts) == ("http-5xx", 3)


def test_connection_refused_is_network_and_retried(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError) as err:
        download(f"http://127.0.0.1:{port}/x.mp4", tmp_path, retries=1, backoff_s=0.01, timeout_s=5)
    assert err.value.kind == "network" and err.value.attempts == 2


def test_local_path_is_returned_in_place(lessons, tmp_path):
    source = lessons / "physics_newton.mp4"
    got = download(str(source), tmp_path)
    assert got.path == source and got.attempts == 0 and list(tmp_path.iterdir()) == []
    assert got.video_id.startswith("physics_newton-") and len(got.video_id) == len("physics_newton-") + 8
    assert got.info["extractor"] == "local" and 50 < got.info["duration"] < 53
    with pytest.raises(DownloadError) as err:
        download(str(lessons / "physics_truncated.mp4"), tmp_path)
    assert err.value.kind == "corrupt" and (lessons / "physics_truncated.mp4").is_file()  # never deletes inputs
    with pytest.raises(DownloadError) as err:
        download(str(tmp_path / "nope.mp4"), tmp_path)
    assert err.value.kind == "missing"


@pytest.mark.parametrize("message, kind", [
    ("ERROR: [youtube] abc: Private video. Sign in if you've been granted access to this video", "private"),
    ("ERROR: [youtube] abc: Join this channel to get access to members-only content like this video", "private"),
    ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader", "removed"),
    ("ERROR: [youtube] abc: Video unavailable. This video is no longer available because the YouTube account "
     "associated with this video has been terminated.", "removed"),
    ("ERROR: [youtube] abc: Video unavailable. This video is not available", "removed"),
    ("ERROR: [youtube] abc: Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for "
     "the authentication.", "bot-check"),
    ("ERROR: [youtube] abc: Sign in to confirm you're not a bot. This helps protect our community.", "bot-check"),
    ("ERROR: [youtube] abc: Please confirm you are not a robot", "bot-check"),
    ("ERROR: [youtube] abc: Video unavailable. The uploader has not made this video available in your country",
     "geo"),
    ("ERROR: [youtube] abc: This video is not available in your country", "geo"),
    ("ERROR: [niconico] sm9: The video is geo restricted", "geo"),
    ("ERROR: [youtube] abc: Sign in to confirm your age. This video may be inappropriate for some users.", "age"),
    ("ERROR: [vimeo] 1: This video is age-restricted", "age"),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 404: Not Found (caused by <HTTPError 404: "
     "Not Found>)", "not-found"),
    ("ERROR: [generic] x: Unable to download webpage: HTTP Error 503: Service Unavailable (caused by "
     "<HTTPError 503: Service Unavailable>)", "http-5xx"),
    ("ERROR: unable to download video data: HTTP Error 502: Bad Gateway", "http-5xx"),
    ("ERROR: [youtube] abc: Unable to download API page: HTTP Error 429: Too Many Requests", "rate-limit"),
    ("ERROR: [generic] x: Unable to download webpage: <urlopen error [Errno 111] Connection refused> (caused by "
     "TransportError('<urlopen error [Errno 111] Connection refused>'))", "network"),
    ("ERROR: [youtube] abc: Unable to download webpage: [Errno -2] Name or service not known", "network"),
    ("ERROR: [youtube] abc: Unable to download webpage: The read operation timed out", "timeout"),
    ("ERROR: [generic] Unsupported URL: https://example.com/page", "unsupported"),
    ("ERROR: [youtube] abc: Requested format is not available. Use --list-formats for a list of available formats",
     "unsupported"),
    ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "forbidden"),
    ("ERROR: [youtube] abc: This live event will begin in 3 hours.", "unavailable"),
    ("ERROR: [youtube] abc: Video unavailable", "unavailable"),
])
def test_classify(message, kind):
    assert classify(message) == kind


def test_clean_message():
    raw = ("\x1b[0;31mERROR:\x1b[0m [youtube] abc: Video unavailable; please report this issue on  "
           "https://github.com/yt-dlp/yt-dlp/issues?q= , filling out the appropriate issue template.\n"
           "Traceback (most recent call last):\n  File \"x.py\", line 1\n")
    assert clean_message(raw) == "[youtube] abc: Video unavailable"
