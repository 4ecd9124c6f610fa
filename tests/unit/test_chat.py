"""Chat rendering with the model's own template, in a sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError, TemplateError

from workers.chat import ChatTemplate, load_chat_template, render_chat

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 😀"}]


def test_tiny_template_renders_chatml_with_generation_prompt(tiny_model_dir: Path) -> None:
    assert render_chat(tiny_model_dir, MESSAGES) == (
        "<s><|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi 😀<|im_end|>\n<|im_start|>assistant\n"
    )


def test_matches_transformers_apply_chat_template(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert render_chat(tiny_model_dir, MESSAGES) == expected


def test_missing_template_falls_back_to_chatml(tmp_path: Path) -> None:
    prompt = render_chat(tmp_path, [{"role": "user", "content": "x"}])
    assert prompt == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"


def test_named_template_list_and_token_dicts(tmp_path: Path) -> None:
    config = {
        "bos_token": {"content": "[B]"},
        "chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ bos_token }}{{ messages[0]['content'] }}"},
        ],
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_chat_template(tmp_path).render([{"role": "user", "content": "q"}]) == "[B]q"


def test_raise_exception_and_tojson_helpers() -> None:
    template = ChatTemplate("{{ messages | tojson }}")
    assert template.render([{"role": "user", "content": "é"}]) == (
        '[{"role": "user", "content": "é"}]'
    )
    with pytest.raises(TemplateError, match="no system"):
        ChatTemplate("{{ raise_exception('no system') }}").render([])


def test_template_runs_sandboxed() -> None:
    with pytest.raises(SecurityError):
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}").render(
            []
        )
