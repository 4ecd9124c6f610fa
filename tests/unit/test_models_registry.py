"""The model registry file and how a worker resolves an entry against its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.models import ModelEntry, load_registry, parse_registry
from protocol.settings import RedisSettings, ServerSettings, Settings, WorkerSettings
from workers.resident import ModelSpec

SAMPLE = """
[models.tiny]
path = "tiny"

[models.llama]
path = "/srv/llama-3-8b-exl2"
engine = "exllamav2"
device = "cuda:1"
max_seq_len = 8192
cache_tokens = 65536
max_batch = 8
"""


def _settings(**worker: object) -> Settings:
    return Settings(
        redis=RedisSettings(),
        server=ServerSettings(),
        worker=WorkerSettings(**worker),  # type: ignore[arg-type]
    )


def test_parse_fills_defaults_and_resolves_relative_paths(tmp_path: Path) -> None:
    file = tmp_path / "models.toml"
    file.write_text(SAMPLE)
    registry = load_registry(str(file))
    assert registry["tiny"] == ModelEntry(path=str(tmp_path / "tiny"))
    llama = registry["llama"]
    assert (llama.engine, llama.device, llama.max_seq_len) == ("exllamav2", "cuda:1", 8192)
    assert (llama.cache_tokens, llama.max_batch) == (65536, 8)
    assert llama.path == "/srv/llama-3-8b-exl2"  # absolute paths stay as written


def test_no_file_means_an_empty_registry() -> None:
    assert load_registry("") == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[models.x]\nengine = 'torch'\n", "path"),
        ("[models.x]\npath = 'a'\ncolour = 'red'\n", "colour"),
        ("[models.x]\npath = 'a'\nmax_seq_len = -1\n", "max_seq_len"),
        ('[models."bad name"]\npath = "a"\n', "models"),
        ("[models.x\n", "invalid"),
    ],
)
def test_a_bad_registry_is_a_clear_error(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid model registry") as info:
        parse_registry(text)
    assert fragment in str(info.value)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the model registry"):
        load_registry(str(tmp_path / "nope.toml"))


def test_spec_takes_blanks_from_the_worker() -> None:
    settings = _settings(engine="torch", device="cpu", max_seq_len=1024)
    spec = ModelSpec.resolve("tiny", ModelEntry(path="/m"), settings, slots=16)
    assert (spec.engine, spec.device, spec.max_seq_len, spec.max_batch) == (
        "torch",
        "cpu",
        1024,
        16,
    )


def test_spec_entry_wins_over_worker_and_caps_batch_at_slots() -> None:
    entry = ModelEntry(
        path="/m", engine="exllamav2", device="cuda:0", max_seq_len=4096, max_batch=64
    )
    spec = ModelSpec.resolve("big", entry, _settings(), slots=16)
    assert (spec.engine, spec.device, spec.max_seq_len, spec.max_batch) == (
        "exllamav2",
        "cuda:0",
        4096,
        16,
    )


def test_command_line_device_wins_over_the_entry() -> None:
    entry = ModelEntry(path="/m", device="cuda:0")
    spec = ModelSpec.resolve("big", entry, _settings(), slots=4, device="cuda:3")
    assert spec.device == "cuda:3"


def test_a_worker_uses_the_entry_device_unless_started_with_one() -> None:
    from workers.runtime import Runtime

    registry = {"big": ModelEntry(path="/m", device="cuda:1"), "small": ModelEntry(path="/s")}
    plain = Runtime(_settings(device="cpu"), slots=2, registry=registry)
    pinned = Runtime(_settings(device="cpu"), slots=2, registry=registry, device="cuda:0")
    try:
        assert plain.spec("big").device == "cuda:1"
        assert plain.spec("small").device == "cpu"
        assert pinned.spec("big").device == "cuda:0"
        assert plain.spec("big", device="cuda:2").device == "cuda:2"  # a load request's
        with pytest.raises(KeyError):
            plain.spec("unknown")
    finally:
        plain.redis.close()
        pinned.redis.close()


def test_hub_style_names_with_a_slash_are_allowed() -> None:
    registry = parse_registry('[models."org/model-7b"]\npath = "/m"\n')
    assert list(registry) == ["org/model-7b"]
