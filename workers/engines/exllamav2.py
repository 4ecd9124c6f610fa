"""The ExLlamaV2 engine: EXL2 and FP16 Llama-family models on CUDA.

One ``ExLlamaV2DynamicGenerator`` serves every job of the process; ``step()`` is one
``generator.iterate()``. In paged mode (flash-attn >= 2.5.7) the generator batches all
active jobs over a paged KV cache; without flash-attn it runs unpaged, one job at a time.

ExLlamaV2 is imported lazily, so this module imports (and its pure helpers are testable)
on machines without CUDA or without the ``exllamav2`` package. The engine stops only on
end-of-sequence tokens; stop strings are the scheduler's business (it calls ``cancel``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from protocol.jobs import SamplingParams
from workers.engines.base import EngineJob, StepOutput

__all__ = ["ExLlamaV2Engine", "attention_plan", "sampler_kwargs", "step_output"]

log = logging.getLogger(__name__)

NO_CUDA_MESSAGE = "the exllamav2 engine needs a CUDA GPU; use --engine torch"
PAGE_SIZE = 256
"""ExLlamaV2's page size (``PAGED_PAGE_SIZE``); cache lengths must be multiples of it."""
MAX_Q_SIZE = 8
"""The generator's default ``max_q_size``: tokens per sequence evaluated per forward pass."""

_FINISH_REASONS = {
    "stop_token": "stop",
    "stop_string": "stop",
    "end_filter": "stop",
    "max_new_tokens": "length",
}


def sampler_kwargs(params: SamplingParams) -> dict[str, Any]:
    """Keyword arguments for ``ExLlamaV2Sampler.Settings`` that mean what ``params`` means.

    ExLlamaV2's defaults are not neutral (repetition penalty 1.025, top_k 50, top_p 0.8), so
    every knob is set. Temperature 0 is greedy (top_k 1); ExLlamaV2 disables top_p with 0.
    """
    neutral = {"token_repetition_penalty": 1.0, "min_p": 0.0, "typical": 0.0}
    if params.temperature <= 0.0:
        return {**neutral, "temperature": 1.0, "top_k": 1, "top_p": 0.0}
    top_p = params.top_p if 0.0 < params.top_p < 1.0 else 0.0
    return {
        **neutral,
        "temperature": params.temperature,
        "top_k": max(params.top_k, 0),
        "top_p": top_p,
    }


def attention_plan(
    *, flash_paged: bool, flash: bool, xformers: bool, want_paged: bool | None
) -> tuple[bool, str]:
    """(paged?, attention kernel) for what is importable; ``want_paged=None`` pages if it can.

    Paged mode needs flash-attn >= 2.5.7. Unpaged, ExLlamaV2 uses flash-attn or xformers when
    present, else its torch fallback; there the kernel is ``"matmul"``, never SDPA:
    exllamav2 0.2.9-0.3.2 pass no mask to SDPA for text models (``_attn_torch`` takes the
    block-diagonal mask, which is None without ``cu_seqlens``), so every prompt of more
    than one token was prefilled with bidirectional attention. That was the greedy mismatch
    of the first H200 check (docs/GPU_RESULTS.md). The matmul path builds the causal mask.
    """
    if want_paged and not flash_paged:
        raise RuntimeError("paged mode needs flash-attn >= 2.5.7, which is not importable")
    paged = flash_paged if want_paged is None else want_paged
    if flash:
        return paged, "flash-attn"
    return paged, "xformers" if xformers else "matmul"


def _ids(tensor: Any) -> list[int]:
    """A (1, n) token tensor (or None) as a flat list."""
    return [] if tensor is None else [int(t) for t in tensor.reshape(-1).tolist()]


def step_output(result: Mapping[str, Any]) -> StepOutput | None:
    """Our :class:`StepOutput` for one ``iterate()`` result, or None when it carries nothing.

    Tokens held back (an incomplete UTF-8 character) come later, in ``token_ids`` or, at
    the end, under ``held``; a stop token ends the job and is dropped from the output.
    """
    if result.get("stage") != "streaming":
        return None
    token_ids = _ids(result.get("token_ids"))
    finished = bool(result.get("eos"))
    if not finished:
        return StepOutput(result["identifier"], token_ids) if token_ids else None
    token_ids += _ids(result.get("held", {}).get("token_ids"))
    reason = result.get("eos_reason", "stop_token")
    if (
        reason == "stop_token"
        and token_ids
        and token_ids[-1] == result.get("eos_triggering_token_id")
    ):
        token_ids.pop()
    return StepOutput(result["identifier"], token_ids, True, _FINISH_REASONS.get(reason, "stop"))


def _eos_ids(model_dir: Path, tokenizer_eos: int | None) -> list[int]:
    """Every end-of-sequence id the model declares (config and generation config)."""
    found: set[int] = set() if tokenizer_eos is None else {tokenizer_eos}
    for name in ("config.json", "generation_config.json"):
        path = model_dir / name
        if not path.exists():
            continue
        value = json.loads(path.read_text()).get("eos_token_id")
        values: Iterable[Any] = value if isinstance(value, list) else [value]
        found.update(int(v) for v in values if v is not None)
    return sorted(found)


def _adds_bos(model_dir: Path) -> bool:
    """Whether prompts start with BOS: ``add_bos_token`` in tokenizer_config.json, else yes."""
    path = model_dir / "tokenizer_config.json"
    if path.exists():
        return bool(json.loads(path.read_text()).get("add_bos_token", True))
    return True


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _require_cuda(device: str) -> int:
    """The CUDA device index of ``device``; one clear RuntimeError where there is none."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise RuntimeError(NO_CUDA_MESSAGE)
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise RuntimeError(f"no CUDA device {device}; this machine has {torch.cuda.device_count()}")
    return index


class ExLlamaV2Engine:
    """The :class:`workers.engines.base.Engine` over ExLlamaV2's dynamic generator."""

    name = "exllamav2"

    def __init__(
        self,
        device: str,
        max_batch: int,
        max_seq_len: int,
        gpu_split: Sequence[float] | None = None,
        paged: bool | None = None,
        cache_bits: int = 16,
        cache_tokens: int = 0,
    ) -> None:
        """``paged=None`` pages when flash-attn allows; ``cache_bits`` 16, 8, 6 or 4 (Q cache)."""
        self._device_index = _require_cuda(device)
        self.device = device
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len
        self.gpu_split = list(gpu_split) if gpu_split is not None else None
        self._want_paged = paged
        self._cache_bits = cache_bits
        self._cache_tokens = cache_tokens
        self._paged = False
        self._attention = ""
        self._model: Any = None
        self._cache: Any = None
        self._tokenizer: Any = None
        self._generator: Any = None
        self._jobs: dict[str, Any] = {}
        self._done_early: list[StepOutput] = []
        self._eos: list[int] = []
        self._add_bos = True
        self._model_dir: Path | None = None

    @property
    def batching(self) -> str:
        """``paged`` or ``unpaged``, and the attention kernel once loaded: ``unpaged/matmul``."""
        mode = "paged" if self._paged else "unpaged"
        return f"{mode}/{self._attention}" if self._attention else mode

    @property
    def active(self) -> int:
        return len(self._jobs) + len(self._done_early)

    @property
    def model(self) -> Any:
        """The loaded ExLlamaV2 model (for GPU tests that check its logits)."""
        return self._model

    @property
    def generator(self) -> Any:
        """The ExLlamaV2DynamicGenerator (for tests and benchmarks that look inside)."""
        return self._generator

    # -- loading ---------------------------------------------------------------------

    def load(self, model_dir: Path) -> None:
        """Load weights, cache, tokenizer and the one generator for ``model_dir``."""
        _require_cuda(self.device)
        from exllamav2 import ExLlamaV2, ExLlamaV2Config, ExLlamaV2Tokenizer

        model_dir = Path(model_dir)
        config = ExLlamaV2Config(str(model_dir))
        config.arch_compat_overrides(quiet=True)
        self._choose_attention(config)
        config.max_seq_len = min(config.max_seq_len, self.max_seq_len)
        batch = self.max_batch if self._paged else 1
        needed = -(-batch * MAX_Q_SIZE // config.max_input_len)
        config.max_batch_size = max(config.max_batch_size, needed)
        self._model = ExLlamaV2(config)
        self._model.load(self.gpu_split or [0.0] * self._device_index + [99999.0])
        self._cache = self._make_cache(self._cache_tokens or config.max_seq_len * batch)
        self._tokenizer = ExLlamaV2Tokenizer(config)
        self._generator = self._make_generator(config.max_seq_len, batch)
        self._eos = _eos_ids(model_dir, self._tokenizer.eos_token_id)
        self._add_bos = _adds_bos(model_dir) and self._tokenizer.bos_token_id is not None
        self._model_dir = model_dir
        log.info(
            "exllamav2: loaded %s on %s, %s batching (max batch %d, %d cache tokens)",
            model_dir,
            self.device,
            self.batching,
            batch,
            self._cache.max_seq_len,
        )

    def _choose_attention(self, config: Any) -> None:
        """Pick paged or unpaged mode and the attention kernel; see :func:`attention_plan`."""
        from exllamav2 import attn

        flash = bool(attn.has_flash_attn) and not config.no_flash_attn
        plan = attention_plan(
            flash_paged=flash and bool(attn.has_flash_attn_with_paged),
            flash=flash,
            xformers=bool(attn.has_xformers) and not config.no_xformers,
            want_paged=self._want_paged,
        )
        self._paged, self._attention = plan
        if self._attention == "matmul":
            config.no_sdpa = True
        if not self._paged:
            log.warning(
                "exllamav2: flash-attn >= 2.5.7 not available: unpaged, batch size 1, %s attention",
                self._attention,
            )

    def _make_cache(self, tokens: int) -> Any:
        import exllamav2

        kinds = {
            16: exllamav2.ExLlamaV2Cache,
            8: exllamav2.ExLlamaV2Cache_Q8,
            6: exllamav2.ExLlamaV2Cache_Q6,
            4: exllamav2.ExLlamaV2Cache_Q4,
        }
        if self._cache_bits not in kinds:
            raise ValueError(f"cache_bits must be one of {sorted(kinds)}, not {self._cache_bits}")
        return kinds[self._cache_bits](self._model, max_seq_len=_round_up(tokens, PAGE_SIZE))

    def _make_generator(self, max_seq_len: int, batch: int) -> Any:
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        return ExLlamaV2DynamicGenerator(
            model=self._model,
            cache=self._cache,
            tokenizer=self._tokenizer,
            max_batch_size=batch,
            max_seq_len=max_seq_len,
            paged=self._paged,
        )

    def unload(self) -> None:
        """Drop every job and free the GPU memory of the model and cache."""
        if self._generator is not None:
            self._generator.clear_queue()
        if self._model is not None:
            self._model.unload()
        self._model = self._cache = self._tokenizer = self._generator = None
        self._jobs.clear()
        self._done_early.clear()
        import torch

        torch.cuda.empty_cache()

    # -- jobs --------------------------------------------------------------------------

    def enqueue(self, job: EngineJob) -> None:
        """Hand ``job`` to the generator; a resumed job continues after its forced tokens."""
        remaining = job.sampling.max_tokens - len(job.forced_ids)
        if remaining <= 0:
            self._done_early.append(StepOutput(job.job_id, [], True, "length"))
            return
        self._jobs[job.job_id] = self._new_job(job, remaining)
        self._generator.enqueue(self._jobs[job.job_id])

    def _new_job(self, job: EngineJob, max_new_tokens: int) -> Any:
        import torch
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        ids = torch.tensor([list(job.prompt_ids) + list(job.forced_ids)], dtype=torch.long)
        exl_job = ExLlamaV2DynamicJob(
            input_ids=ids,
            max_new_tokens=max_new_tokens,
            gen_settings=ExLlamaV2Sampler.Settings(**sampler_kwargs(job.sampling)),
            seed=job.sampling.seed,
            stop_conditions=list(self._eos),
            identifier=job.job_id,
        )
        if job.sampling.seed is not None:
            for _ in range(job.sampled):  # one draw a token (``receive_logits``): replay
                exl_job.rng.random()
        return exl_job

    def step(self) -> list[StepOutput]:
        """One ``generator.iterate()``: prefill of new jobs and one token for the others."""
        outputs, self._done_early = self._done_early, []
        if self._jobs:
            for result in self._generator.iterate():
                out = step_output(result)
                if out is None:
                    continue
                if out.finished:
                    self._jobs.pop(out.job_id, None)
                outputs.append(out)
        return outputs

    def cancel(self, job_id: str) -> None:
        """Drop the job and free its cache pages now; unknown ids are ignored."""
        self._done_early = [o for o in self._done_early if o.job_id != job_id]
        exl_job = self._jobs.pop(job_id, None)
        if exl_job is not None:
            self._generator.cancel(exl_job)

    # -- text --------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        ids = self._tokenizer.encode(text, add_bos=self._add_bos, encode_special_tokens=True)
        return _ids(ids)

    def decode(self, ids: Sequence[int]) -> str:
        import torch

        text = self._tokenizer.decode(torch.tensor(list(ids), dtype=torch.long))
        return str(text)

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        """The model dir's chat template applied to ``messages`` (workers.chat renders it)."""
        from workers.chat import render_chat

        if self._model_dir is None:
            raise RuntimeError("no model loaded")
        return render_chat(self._model_dir, messages)
