"""The tiny model: a seeded, random-weight Llama that every test, bench and dev run uses.

:func:`make_tiny` writes a complete Hugging Face model directory (config, safetensors
weights, a byte-level ``tokenizer.json``, tokenizer and generation configs, a chat
template). Nothing is downloaded. The same seed gives byte-identical files, so a test can
pin outputs; the text is noise, but the shapes, loading path, tokenizer and sampling are
real. The layout is plain Llama (standard tensor names, float32, FP16-castable), so both
the torch and the ExLlamaV2 engines load it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

__all__ = ["make_tiny", "BOS", "EOS", "PAD", "VOCAB_SIZE"]

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
_SPECIALS = (BOS, EOS, PAD, *_CHAT_TOKENS)
_N_BYTES = 256
VOCAB_SIZE = 288
"""Specials + 256 bytes, padded up to a multiple of 32 with ``<|unused_N|>`` tokens."""

HIDDEN, HEADS, KV_HEADS, LAYERS, INTERMEDIATE = 256, 4, 2, 4, 704
HEAD_DIM = HIDDEN // HEADS

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def make_tiny(out_dir: Path, seed: int = 0) -> Path:
    """Write the tiny model into ``out_dir`` (created if missing) and return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "config.json", _config())
    _write_json(out_dir / "generation_config.json", _generation_config())
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config())
    _write_json(out_dir / "special_tokens_map.json", _special_tokens_map())
    (out_dir / "tokenizer.json").write_text(_tokenizer().to_str(pretty=False), encoding="utf-8")
    save_file(_weights(seed), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _special_ids() -> dict[str, int]:
    return {token: index for index, token in enumerate(_SPECIALS)}


def _config() -> dict[str, Any]:
    ids = _special_ids()
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "num_hidden_layers": LAYERS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "silu",
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "vocab_size": VOCAB_SIZE,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[PAD],
    }


def _generation_config() -> dict[str, Any]:
    ids = _special_ids()
    return {"bos_token_id": ids[BOS], "eos_token_id": ids[EOS], "pad_token_id": ids[PAD]}


def _special_tokens_map() -> dict[str, Any]:
    return {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}


def _tokenizer_config() -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
    }


def _tokenizer() -> Tokenizer:
    """Byte-level BPE with no merges: one token per byte, so any UTF-8 text round-trips."""
    n_special = len(_SPECIALS)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_byte_of)
    vocab = {token: index for index, token in enumerate(_SPECIALS)}
    vocab.update({char: n_special + index for index, char in enumerate(alphabet)})
    unused = [f"<|unused_{i}|>" for i in range(VOCAB_SIZE - len(vocab))]
    vocab.update({token: len(vocab) + i for i, token in enumerate(unused)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (*_SPECIALS, *unused)]
    )
    bos_id = vocab[BOS]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tokenizer


def _byte_of(char: str) -> int:
    """The byte a ByteLevel alphabet character stands for (GPT-2's bytes-to-unicode map)."""
    code = ord(char)
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    if code in printable:
        return code
    return [b for b in range(_N_BYTES) if b not in printable][code - _N_BYTES]


def _weights(seed: int) -> dict[str, torch.Tensor]:
    """Seeded random Llama weights, scaled so logits have a clear spread (varied samples)."""
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std).contiguous()

    kv_dim = KV_HEADS * HEAD_DIM
    tensors = {
        "model.embed_tokens.weight": normal(VOCAB_SIZE, HIDDEN, std=1.0),
        "model.norm.weight": torch.ones(HIDDEN),
        "lm_head.weight": normal(VOCAB_SIZE, HIDDEN, std=0.15),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        tensors.update(
            {
                p + "input_layernorm.weight": torch.ones(HIDDEN),
                p + "post_attention_layernorm.weight": torch.ones(HIDDEN),
                p + "self_attn.q_proj.weight": normal(HIDDEN, HIDDEN, std=0.08),
                p + "self_attn.k_proj.weight": normal(kv_dim, HIDDEN, std=0.08),
                p + "self_attn.v_proj.weight": normal(kv_dim, HIDDEN, std=0.06),
                p + "self_attn.o_proj.weight": normal(HIDDEN, HIDDEN, std=0.04),
                p + "mlp.gate_proj.weight": normal(INTERMEDIATE, HIDDEN, std=0.06),
                p + "mlp.up_proj.weight": normal(INTERMEDIATE, HIDDEN, std=0.06),
                p + "mlp.down_proj.weight": normal(HIDDEN, INTERMEDIATE, std=0.04),
            }
        )
    return dict(sorted(tensors.items()))
