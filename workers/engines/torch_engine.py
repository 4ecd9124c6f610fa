"""The torch engine: any Hugging Face causal LM, continuous batching with our own step loop.

Each :meth:`TorchEngine.step` runs one forward pass over every running job (one new token
each) and, while the padding stays small, the prompts of the jobs that were waiting in the
same forward; bigger arrivals are prefilled left-padded together in a forward of their own.
All jobs live in a slot KV cache (:mod:`workers.engines.slot_cache`): per layer one
``[max_batch, kv_heads, capacity, head_dim]`` buffer, where row ``i`` is the ``i``-th
running job and each row has its own length. Decode writes each row's new key/value at
that row's own position and attends over ``[:B, :, :max_len]`` with an explicit 4D mask
and per-row ``position_ids`` (built in :mod:`workers.engines.torch_batch`), so jobs that
joined at different steps share one forward. A finishing job's row is refilled by the last
row (rows stay contiguous). This module keeps the rows: which jobs wait, which run, how
long each is, what each samples (:mod:`workers.sampling`); :mod:`workers.engines.torch_model`
reads the model directory's dtype and special tokens.

Limits: full (not sliding-window) attention through the model's ``cache.update`` hook,
as in Llama, Mistral, Qwen and Phi families. ``forced_ids`` (a resumed attempt's tokens)
are prefilled after the prompt and count toward ``max_tokens``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import PreTrainedModel

from workers.chat import ChatTemplate, load_chat_template
from workers.engines.base import EngineJob, StepOutput
from workers.engines.slot_cache import SlotCache
from workers.engines.torch_batch import Forward, decode_forward, mixed_forward, prefill_forward
from workers.engines.torch_model import bos_of, eos_ids, fit_threads, load_model, with_one_bos
from workers.sampling import RowSampling, make_generator, sample

__all__ = ["SlotCache", "TorchEngine"]

PREFILL_TOKEN_BUDGET = 8192
"""Most (padded) tokens one prefill forward takes; more waiting jobs prefill next step."""

MIXED_TOKEN_BUDGET = 2048
"""Most (padded) tokens of a step that decodes running jobs and prefills new ones in one
forward; bigger arrivals get their own prefill forward (see ``TorchEngine._mixable``)."""

_CUDA_SDPA = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""SDPA backends on CUDA: cuDNN's is left out, it builds a plan per key length (~15 ms)."""


@dataclass(slots=True)
class _Running:
    """A job holding a cache row: ``length`` tokens cached, ``last`` not yet fed."""

    job: EngineJob
    sampling: RowSampling
    length: int = 0
    last: int = 0
    generated: int = 0


class TorchEngine:
    """Continuous batching over a transformers causal LM; see the module docstring."""

    name = "torch"

    def __init__(self, device: str, max_batch: int, max_seq_len: int):
        self.device = device
        self.max_batch = max_batch
        self.max_seq_len = max_seq_len
        self._model: PreTrainedModel | None = None
        self._tokenizer: Any = None
        self._chat: ChatTemplate | None = None
        self._cache_kwarg = "cache"
        self._eos: frozenset[int] = frozenset()
        self._bos: int | None = None
        self._add_bos = False
        self._waiting: deque[EngineJob] = deque()
        self._running: list[_Running] = []
        self._cache = SlotCache(max_batch, max_seq_len)

    @property
    def batching(self) -> str:
        return "batched"

    @property
    def active(self) -> int:
        return len(self._waiting) + len(self._running)

    # -- lifecycle -------------------------------------------------------------------

    def load(self, model_dir: Path) -> None:
        """Load the model and its tokenizer; CPU runs float32, CUDA bfloat16 (else fp16)."""
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        if self.device == "cpu":
            fit_threads()
        self._model = load_model(model_dir, self.device)
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._chat = load_chat_template(model_dir)
        params = inspect.signature(self._model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._eos = eos_ids(self._model)
        self._bos, self._add_bos = bos_of(model_dir, self._model)
        self._cache = SlotCache(self.max_batch, self.max_seq_len)

    def memory_bytes(self) -> int:
        """Bytes of the loaded weights and buffers (0 when nothing is loaded)."""
        if self._model is None:
            return 0
        footprint = cast(Callable[[], int], self._model.get_memory_footprint)  # untyped
        return int(footprint())

    def unload(self) -> None:
        """Drop the model, the tokenizer and every job."""
        self._model = self._tokenizer = self._chat = None
        self._waiting.clear()
        self._running.clear()
        self._cache = SlotCache(self.max_batch, self.max_seq_len)
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # -- jobs ------------------------------------------------------------------------

    def enqueue(self, job: EngineJob) -> None:
        """Queue ``job``; it is prefilled in the first step with a free row."""
        if not job.prompt_ids and not job.forced_ids:
            raise ValueError(f"job {job.job_id}: empty prompt")
        self._waiting.append(job)

    def cancel(self, job_id: str) -> None:
        """Drop the job (waiting or running) and free its row; unknown ids are ignored."""
        self._waiting = deque(j for j in self._waiting if j.job_id != job_id)
        for index, run in enumerate(self._running):
            if run.job.job_id == job_id:
                self._release([index])
                return

    def step(self) -> list[StepOutput]:
        """One token for every running job, then prefill (and first token) for new ones."""
        if not self.active:
            return []
        model = self._require_model()
        outputs: list[StepOutput] = []
        with torch.inference_mode():
            if self._running and any(j.urgent for j in self._waiting):
                return self._admit_urgent(model)
            group = self._mixable() if self._running else []
            if group:
                return outputs + self._mixed(model, group)
            if self._running:
                outputs += self._decode(model)
            outputs += self._admit(model)
        return outputs

    # -- tokenizer -------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with one BOS in front when the model uses one.

        The tokenizer's post-processor may add BOS, the tokenizer config may ask for it
        (``add_bos_token``), and a chat template may write it as text: whichever did, the
        result starts with exactly one.
        """
        ids: list[int] = list(self._require_tokenizer().encode(text).ids)
        return with_one_bos(ids, self._bos, self._add_bos)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._require_tokenizer().decode(list(ids), skip_special_tokens=True))

    def render_chat(self, messages: Sequence[dict[str, str]]) -> str:
        if self._chat is None:
            raise RuntimeError("no model loaded")
        return self._chat.render(messages)

    # -- the step loop ---------------------------------------------------------------

    def _decode(self, model: PreTrainedModel) -> list[StepOutput]:
        """One forward over every running row, each at its own position."""
        rows = self._running
        lasts, lengths = [r.last for r in rows], [r.length for r in rows]
        forward = decode_forward(
            self._cache, lasts, lengths, self.max_seq_len, model.device, model.dtype
        )
        logits = self._forward(model, forward)
        for r in rows:
            r.length += 1
        return self._advance(list(rows), logits)

    def _admit(self, model: PreTrainedModel) -> list[StepOutput]:
        """Move waiting jobs into free rows and prefill them, in token-budgeted groups."""
        outputs: list[StepOutput] = []
        group: list[_Running] = []
        while self._waiting and len(self._running) + len(group) < self.max_batch:
            job = self._waiting[0]
            done = self._reject(job)
            if done is not None:
                self._waiting.popleft()
                outputs.append(done)
                continue
            width = max([len(_tokens(job)), *(len(_tokens(r.job)) for r in group)])
            if group and width * (len(group) + 1) > PREFILL_TOKEN_BUDGET:
                outputs += self._prefill(model, group)
                group = []
            self._waiting.popleft()
            group.append(_Running(job, _row_sampling(job), generated=len(job.forced_ids)))
        if group:
            outputs += self._prefill(model, group)
        return outputs

    def _admit_urgent(self, model: PreTrainedModel) -> list[StepOutput]:
        """Prefill the waiting interactive jobs alone, this step: their first token comes
        after one small forward instead of after a decode step over every running row
        (the running rows skip this step, one step later)."""
        outputs: list[StepOutput] = []
        group: list[_Running] = []
        for job in [j for j in self._waiting if j.urgent]:
            if len(self._running) + len(group) >= self.max_batch:
                break
            self._waiting.remove(job)
            done = self._reject(job)
            if done is not None:
                outputs.append(done)
                continue
            group.append(_Running(job, _row_sampling(job), generated=len(job.forced_ids)))
        if group:
            outputs += self._prefill(model, group)
        elif self._running:  # no room: decode as usual
            outputs += self._decode(model)
        return outputs

    def _mixable(self) -> list[_Running]:
        """Waiting jobs to prefill inside this step's decode forward, or ``[]``.

        One forward instead of two whenever jobs join: every row is padded (on the left) to
        the longest new prompt, so this is worth it only while that padding stays small
        (``MIXED_TOKEN_BUDGET``); beyond it, or for jobs that cannot run, the step falls
        back to a decode forward plus separate prefills.
        """
        group: list[_Running] = []
        width = 1
        for job in self._waiting:
            if len(self._running) + len(group) >= self.max_batch or self._reject(job) is not None:
                break
            wider = max(width, len(_tokens(job)))
            if wider * (len(self._running) + len(group) + 1) > MIXED_TOKEN_BUDGET:
                break
            width = wider
            group.append(_Running(job, _row_sampling(job), generated=len(job.forced_ids)))
        for _ in group:
            self._waiting.popleft()
        return group

    def _mixed(self, model: PreTrainedModel, group: list[_Running]) -> list[StepOutput]:
        """One forward: a new token for every running row and the prompt of every new one."""
        decoding = list(self._running)
        tokens = [[r.last] for r in decoding] + [_tokens(r.job) for r in group]
        starts = [r.length for r in decoding] + [0] * len(group)
        forward = mixed_forward(
            self._cache, tokens, starts, self.max_seq_len, model.device, model.dtype
        )
        logits = self._forward(model, forward)
        for r in decoding:
            r.length += 1
        for r, t in zip(group, tokens[len(decoding) :], strict=True):
            r.length = len(t)
        self._running += group
        return self._advance(decoding + group, logits)

    def _reject(self, job: EngineJob) -> StepOutput | None:
        """A finished output for a job that cannot generate at all, else ``None``."""
        if len(job.forced_ids) >= job.sampling.max_tokens or len(_tokens(job)) >= self.max_seq_len:
            return StepOutput(job.job_id, [], finished=True, finish_reason="length")
        return None

    def _prefill(self, model: PreTrainedModel, group: list[_Running]) -> list[StepOutput]:
        """Left-padded prefill of ``group`` into fresh rows; samples each first token."""
        tokens = [_tokens(r.job) for r in group]
        first = len(self._running)
        forward = prefill_forward(self._cache, tokens, first, model.device, model.dtype)
        logits = self._forward(model, forward)
        for r, t in zip(group, tokens, strict=True):
            r.length = len(t)
        self._running += group
        return self._advance(group, logits)

    def _forward(self, model: PreTrainedModel, forward: Forward) -> torch.Tensor:
        """Last-position logits ``[B, V]`` of one forward through the slot cache."""
        kernels = sdpa_kernel(_CUDA_SDPA) if forward.ids.is_cuda else contextlib.nullcontext()
        with kernels:
            out = model(
                input_ids=forward.ids,
                position_ids=forward.positions,
                attention_mask=forward.mask,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kwarg: self._cache},
            )
        logits: torch.Tensor = out.logits[:, -1]
        return logits

    def _advance(self, rows: list[_Running], logits: torch.Tensor) -> list[StepOutput]:
        """Sample a token for each of ``rows``, report it, release finished rows."""
        tokens = sample(logits, [r.sampling for r in rows]).tolist()
        outputs, finished = [], []
        for r, token in zip(rows, tokens, strict=True):
            out = self._emit(r, token)
            outputs.append(out)
            if out.finished:
                finished.append(r)
        if finished:
            ids = {id(r) for r in finished}
            self._release([i for i, r in enumerate(self._running) if id(r) in ids])
        return outputs

    def _emit(self, r: _Running, token: int) -> StepOutput:
        job_id = r.job.job_id
        if token in self._eos:
            return StepOutput(job_id, [], finished=True, finish_reason="stop")
        r.last, r.generated = token, r.generated + 1
        if r.generated >= r.job.sampling.max_tokens or r.length + 1 >= self.max_seq_len:
            return StepOutput(job_id, [token], finished=True, finish_reason="length")
        return StepOutput(job_id, [token])

    def _release(self, indices: list[int]) -> None:
        """Free the rows at ``indices``, moving the last rows into the holes."""
        for index in sorted(indices, reverse=True):
            last = len(self._running) - 1
            if index != last:
                moved = self._running[last]
                self._cache.move(last, index, moved.length)
                self._running[index] = moved
            self._running.pop()

    def _require_model(self) -> PreTrainedModel:
        if self._model is None:
            raise RuntimeError("no model loaded")
        return self._model

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise RuntimeError("no model loaded")
        return self._tokenizer


def _tokens(job: EngineJob) -> list[int]:
    return [*job.prompt_ids, *job.forced_ids]


def _row_sampling(job: EngineJob) -> RowSampling:
    params = job.sampling
    return RowSampling(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        generator=make_generator(params.seed, job.sampled),
    )
