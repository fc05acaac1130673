"""VLM OCR reads a video's frames with several requests in flight (OcrOptions.vlm_concurrency), against a
real OpenAI-compatible HTTP server on 127.0.0.1 (bench.bench_vlm_ocr.SlowVLM) that answers each frame by
name after a delay, later frames sometimes first: the answers come back in the frames' order, each with
its own call (an llm_calls row), a failed frame fails alone, and only all frames failing raises."""

from __future__ import annotations

import socket

import pytest

from bench.bench_vlm_ocr import SlowVLM, frame_name_of, frames
from pipeline.config import PipelineConfig, config_hash
from tools.errors import ToolError
from tools.ocr import OcrOptions, VlmOCR


def _reader(base_url: str, concurrency: int = 8) -> VlmOCR:
    return VlmOCR(OcrOptions(backend="vlm", vlm_base_url=base_url, vlm_model="internvl2",
                             vlm_concurrency=concurrency))


def test_frames_are_read_at_once_and_come_back_in_order(tmp_path):
    images = frames(tmp_path, 12)
    with SlowVLM(latency_s=0.2, jitter=1.0) as srv:
        results = _reader(srv.base_url, concurrency=8).read_many(images)
    assert srv.peak > 1 and srv.peak <= 8  # requests in flight at once, never more than asked
    assert srv.requests == 12
    assert [r.text for r in results] == [frame_name_of(p) for p in images]  # in the frames' order
    calls = [r.llm_call for r in results]
    assert all(c is not None and c.error is None and c.model == "internvl2" for c in calls)  # one call a frame
    assert [c.response for c in calls] == [r.text for r in results]
    assert all("vlm_concurrency" not in r.options for r in results)  # how fast is not what read it


def test_one_at_a_time_when_asked(tmp_path):
    images = frames(tmp_path, 4)
    with SlowVLM(latency_s=0.05) as srv:
        results = _reader(srv.base_url, concurrency=1).read_many(images)
    assert srv.peak == 1 and [r.text for r in results] == [frame_name_of(p) for p in images]


def test_a_failed_frame_fails_alone_and_all_failed_raises(tmp_path):
    images = frames(tmp_path, 5)
    bad = frame_name_of(images[2])
    with SlowVLM(latency_s=0.02, fail={bad}) as srv:
        results = _reader(srv.base_url).read_many(images)
    assert results[2].text == "" and "500" in results[2].llm_call.error
    assert [r.text for i, r in enumerate(results) if i != 2] == [frame_name_of(p) for i, p in enumerate(images)
                                                                 if i != 2]
    with socket.socket() as s:  # a port nothing listens on: every call fails
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ToolError) as err:
        _reader(f"http://127.0.0.1:{port}/v1").read_many(images[:3])
    assert err.value.kind == "ocr-failed"


def test_concurrency_is_not_part_of_the_ocr_hash():
    """Setting vlm_concurrency redoes no OCR (the stage's hash of the options is the same) and makes no new run
    (the config a run id hashes leaves it out, as it leaves out the Ray pools)."""
    assert config_hash(OcrOptions(vlm_concurrency=2)) == config_hash(OcrOptions())
    assert config_hash(OcrOptions(vlm_model="b")) != config_hash(OcrOptions())
    faster = PipelineConfig.model_validate({"ocr": {"vlm_concurrency": 3}})
    assert faster.ocr.vlm_concurrency == 3
    assert faster.model_dump(mode="json") == PipelineConfig().model_dump(mode="json")  # nor of a run's id
    with pytest.raises(ValueError, match="at least 1"):
        OcrOptions(vlm_concurrency=0)
