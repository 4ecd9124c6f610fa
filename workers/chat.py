"""Chat messages to a prompt string, with the model directory's own Jinja chat template.

Engine-independent (both engines call it): the template comes from
``tokenizer_config.json`` (``chat_template``, a string or a list of named templates) or a
``chat_template.jinja`` file, and renders in a sandboxed Jinja environment with the
globals Hugging Face templates expect. A model without a template gets a plain ChatML
fallback, so base models still serve chat requests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Template
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ChatTemplate", "FALLBACK_TEMPLATE", "load_chat_template", "render_chat"]

FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplate:
    """A compiled chat template plus the special tokens it may refer to."""

    def __init__(self, source: str, special_tokens: dict[str, str] | None = None):
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self._template = _compile(source)

    def render(self, messages: Sequence[dict[str, str]], **extra: Any) -> str:
        """The prompt for ``messages``, ending with the assistant's generation prompt."""
        return self._template.render(
            messages=[dict(m) for m in messages],
            add_generation_prompt=True,
            **self.special_tokens,
            **extra,
        )


def load_chat_template(model_dir: Path) -> ChatTemplate:
    """The chat template of ``model_dir`` (or the ChatML fallback) and its special tokens."""
    config = _read_json(Path(model_dir) / "tokenizer_config.json")
    source = _template_source(Path(model_dir), config)
    return ChatTemplate(source or FALLBACK_TEMPLATE, _special_tokens(config))


def render_chat(model_dir: Path, messages: Sequence[dict[str, str]]) -> str:
    """One-shot convenience: load the template of ``model_dir`` and render ``messages``."""
    return load_chat_template(model_dir).render(messages)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    value = json.loads(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def _template_source(model_dir: Path, config: dict[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if isinstance(template, str) and template:
        return template
    jinja_file = model_dir / "chat_template.jinja"
    return jinja_file.read_text(encoding="utf-8") if jinja_file.is_file() else None


def _special_tokens(config: dict[str, Any]) -> dict[str, str]:
    """``bos_token`` etc. as strings (tokenizer configs store a string or an AddedToken dict)."""
    out: dict[str, str] = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(name)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            out[name] = value
    return out


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(source: str) -> Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)
