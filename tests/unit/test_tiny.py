"""The tiny model: deterministic files, loadable by transformers, a lossless tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.tiny import VOCAB_SIZE, make_tiny

FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def test_same_seed_gives_byte_identical_files(tmp_path: Path, tiny_model_dir: Path) -> None:
    again = make_tiny(tmp_path / "again", seed=0)
    assert sorted(p.name for p in again.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name


def test_different_seed_gives_different_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    other = load_file(str(make_tiny(tmp_path / "other", seed=1) / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    assert not torch.equal(other["lm_head.weight"], base["lm_head.weight"])


def test_loads_with_transformers(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert model.config.vocab_size == VOCAB_SIZE and VOCAB_SIZE % 32 == 0
    assert 2_500_000 < sum(p.numel() for p in model.parameters()) < 3_500_000
    assert all(p.dtype == torch.float32 for p in model.parameters())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.bos_token == "<s>" and tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token == "<pad>"


def test_weights_are_fp16_castable(tiny_model_dir: Path) -> None:
    for name, tensor in load_file(str(tiny_model_dir / "model.safetensors")).items():
        assert torch.isfinite(tensor.half()).all(), name


@pytest.mark.parametrize(
    "text", ["", "hello world", "Grüße 😀 漢字 — ok", "\r\n\t\x00 spaces  ", "<s> not special"]
)
def test_tokenizer_round_trips_any_text(tiny_model_dir: Path, text: str) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text


def test_tokenizer_is_one_token_per_byte_after_bos(tiny_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    ids = tokenizer.encode("😀a").ids
    assert ids[0] == tokenizer.token_to_id("<s>")
    assert len(ids) == 1 + len("😀a".encode())


def test_greedy_text_is_varied(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = torch.tensor([[0, 77, 106, 113]])
    out = model.generate(prompt, do_sample=False, max_new_tokens=32, pad_token_id=2)
    assert len(set(out[0, 4:].tolist())) > 8
