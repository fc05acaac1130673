"""Settings: flags > environment (TEXTBOOK_*, nested with __) > config file > defaults.

    TEXTBOOK_PIPELINE__ASR__MODEL=large-v3 TEXTBOOK_PIPELINE__ASR__DEVICE=cuda textbook process ...
    TEXTBOOK_AGENT__LLM__BASE_URL=http://127.0.0.1:8000/v1 TEXTBOOK_AGENT__LLM__MODEL=qwen2.5 textbook build ...

Secrets (API keys) are not settings: they are read from the environment variables the
settings name (``agent.llm.api_key_env``, TEXTBOOK_YOUTUBE_API_KEY), so they never reach
a saved run config, the store, the trace or an export.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from agents.config import AgentConfig
from pipeline.config import PipelineConfig


class Settings(BaseSettings):
    """Everything a command can be told: the store file, the output folder, the progress interval, and the pipeline and
    agent configs (``load_settings`` merges them; unknown keys are an error)."""

    model_config = SettingsConfigDict(env_prefix="TEXTBOOK_", env_nested_delimiter="__", extra="forbid")
    db: Path = Path("textbook.duckdb")
    out: Path = Path("out")
    progress_every_s: float = Field(30.0, gt=0, description="without a terminal (a file, a pipe, CI, nohup): "
                                    "`build` and `process` print a plain progress line (node or stage, "
                                    "done/total, eta) at least this often, in seconds")
    pipeline: PipelineConfig = PipelineConfig()
    agent: AgentConfig = AgentConfig()


class SettingsError(Exception):
    """A config file that cannot be read or does not validate; its message is one line (exit status 2)."""

    pass


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else (
            json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))
    except (tomllib.TOMLDecodeError, ValueError, yaml.YAMLError) as exc:
        raise SettingsError(f"config file {path} is malformed: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping")
    return data


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the file, then the environment, then ``overrides`` (flags, nested dicts)."""
    try:
        env_only = Settings()  # defaults + environment
        env_set = env_only.model_dump(exclude_unset=True)
        merged = env_only.model_dump()
        if config_file:
            merged = _deep_merge(merged, _read_file(config_file))
            merged = _deep_merge(merged, env_set)
        merged = _deep_merge(merged, overrides or {})
        return Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")  # a validator's ValueError: its own words only
        raise SettingsError(f"invalid setting {where}: {msg}") from exc
