"""GPU benchmark: our engines' step loops against ExLlamaV2's own generator, and the roofline.

Builds a random-weight, 1B-class Llama in FP16 directly on the GPU (nothing downloaded or
carried), then measures aggregate decode throughput at several concurrencies for
(a) ``ExLlamaV2Engine`` driven by a plain step loop versus the raw
``ExLlamaV2DynamicGenerator`` on the same model and cache, (b) single-stream decode
against the HBM bandwidth limit, and (c) the same for ``TorchEngine`` on ``cuda:0``.
Every part runs under a time budget and records a reason when it is cut short or skipped.

Usage: ``python3 bench/gpu.py --out DIR`` writes ``bench.json`` and ``bench.md`` to DIR.
The functions are importable so other drivers (e.g. through Redis and Celery) can reuse
the model builder, the prompts and the report.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from protocol.jobs import SamplingParams  # noqa: E402
from workers.engines.base import Engine, EngineJob  # noqa: E402

HBM_BYTES_PER_S = 4.8e12
"""H200 HBM3e peak bandwidth."""
SHAPES = {
    "hidden_size": 2048,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 8192,
    "vocab_size": 32000,
}
CONCURRENCY = (1, 8, 32, 64)
PROMPT_TOKENS = 64
PROFILE_TOKENS = 180
"""A profiled job's length: more than its 52 steps, and within the 256-token contexts."""
SPECIALS = ("<s>", "</s>", "<pad>")


@dataclass
class Run:
    """One measured run: ``jobs`` concurrent streams of up to ``max_new`` tokens each."""

    engine: str
    driver: str
    jobs: int
    tokens: int = 0
    seconds: float = 0.0
    decode_tok_s_single: float | None = None
    truncated: bool = False
    note: str = ""

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class Report:
    device: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    roofline: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


# -- the model -------------------------------------------------------------------------


def write_tokenizer(model_dir: Path, vocab_size: int) -> None:
    """A byte-level tokenizer with ``vocab_size`` ids (bytes + specials + plain fillers)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for char in pre_tokenizers.ByteLevel.alphabet():
        vocab[char] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"<unused_{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.save(str(model_dir / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    config |= {"add_bos_token": True, "tokenizer_class": "PreTrainedTokenizerFast"}
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))


def llama_config(shapes: dict[str, int]) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "head_dim": shapes["hidden_size"] // shapes["num_attention_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
        **shapes,
    }


def llama_weights(shapes: dict[str, int], device: str, seed: int = 0) -> dict[str, Any]:
    """Random FP16 Llama weights made on ``device`` (std 0.02; norms at 1)."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    h, inter = shapes["hidden_size"], shapes["intermediate_size"]
    kv = shapes["num_key_value_heads"] * h // shapes["num_attention_heads"]

    def rand(*shape: int) -> torch.Tensor:
        t = torch.randn(*shape, generator=gen, device=device, dtype=torch.float16)
        return t.mul_(0.02)

    w = {"model.embed_tokens.weight": rand(shapes["vocab_size"], h)}
    w["lm_head.weight"] = rand(shapes["vocab_size"], h)
    w["model.norm.weight"] = torch.ones(h, device=device, dtype=torch.float16)
    for i in range(shapes["num_hidden_layers"]):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = torch.ones(h, device=device, dtype=torch.float16)
        w[p + "post_attention_layernorm.weight"] = torch.ones(h, device=device, dtype=torch.float16)
        w[p + "self_attn.q_proj.weight"] = rand(h, h)
        w[p + "self_attn.k_proj.weight"] = rand(kv, h)
        w[p + "self_attn.v_proj.weight"] = rand(kv, h)
        w[p + "self_attn.o_proj.weight"] = rand(h, h)
        w[p + "mlp.gate_proj.weight"] = rand(inter, h)
        w[p + "mlp.up_proj.weight"] = rand(inter, h)
        w[p + "mlp.down_proj.weight"] = rand(h, inter)
    return w


def build_model(model_dir: Path, shapes: dict[str, int] = SHAPES, device: str = "cuda:0") -> Path:
    """Write a random 1B-class FP16 Llama dir (config, safetensors, tokenizer)."""
    from safetensors.torch import save_file

    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(llama_config(shapes)))
    weights = {k: v.cpu() for k, v in llama_weights(shapes, device).items()}
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(model_dir, shapes["vocab_size"])
    return model_dir


def bytes_per_token(shapes: dict[str, int]) -> int:
    """FP16 weight bytes one decode step reads: all matrices, one embedding row (KV ignored)."""
    h, inter, v = shapes["hidden_size"], shapes["intermediate_size"], shapes["vocab_size"]
    kv = shapes["num_key_value_heads"] * h // shapes["num_attention_heads"]
    layer = 2 * h * h + 2 * kv * h + 3 * h * inter + 2 * h
    return 2 * (shapes["num_hidden_layers"] * layer + v * h + h + h)


def prompts(n: int, vocab: int = 259, seed: int = 0) -> list[list[int]]:
    """``n`` distinct prompts of byte tokens after BOS (no shared cache pages)."""
    rng = random.Random(seed)
    return [[0, *(rng.randrange(3, vocab) for _ in range(PROMPT_TOKENS - 1))] for _ in range(n)]


# -- drivers ---------------------------------------------------------------------------


def drive_engine(engine: Engine, name: str, jobs: int, max_new: int, deadline: float) -> Run:
    """Our step loop: enqueue ``jobs`` jobs, step until all finish or ``deadline`` passes."""
    run = Run(engine=name, driver="engine", jobs=jobs)
    sampling = SamplingParams(max_tokens=max_new, temperature=0.0)
    ids = [f"b{jobs}-{i}" for i in range(jobs)]
    for job_id, prompt in zip(ids, prompts(jobs), strict=True):
        engine.enqueue(EngineJob(job_id, prompt, sampling))
    times: list[float] = []
    start, left = time.perf_counter(), set(ids)
    while left:
        if time.perf_counter() > deadline:
            run.truncated = True
            for job_id in left:
                engine.cancel(job_id)
            break
        for out in engine.step():
            run.tokens += len(out.token_ids)
            times.append(time.perf_counter())
            if out.finished:
                left.discard(out.job_id)
    run.seconds = time.perf_counter() - start
    run.decode_tok_s_single = _single_rate(times) if jobs == 1 else None
    return run


def drive_raw_exllamav2(generator: Any, jobs: int, max_new: int, deadline: float) -> Run:
    """ExLlamaV2's own loop: ``ExLlamaV2DynamicJob``s on the same generator, ``iterate()``."""
    import torch
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    run = Run(engine="exllamav2", driver="raw-generator", jobs=jobs)
    for prompt in prompts(jobs):
        generator.enqueue(
            ExLlamaV2DynamicJob(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=max_new,
                gen_settings=ExLlamaV2Sampler.Settings.greedy(),
                stop_conditions=[1],
            )
        )
    times: list[float] = []
    start = time.perf_counter()
    while generator.num_remaining_jobs():
        if time.perf_counter() > deadline:
            run.truncated = True
            generator.clear_queue()
            break
        for r in generator.iterate():
            if r.get("stage") == "streaming" and "token_ids" in r:
                run.tokens += int(r["token_ids"].shape[-1])
                times.append(time.perf_counter())
    run.seconds = time.perf_counter() - start
    run.decode_tok_s_single = _single_rate(times) if jobs == 1 else None
    return run


def _single_rate(times: list[float]) -> float | None:
    """Decode tokens/s of one stream: tokens after the first over the time they took."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def profile_steps(step: Callable[[], Any], steps: int = 24) -> dict[str, Any]:
    """Where one stream's decode step goes: wall time against GPU kernel time, and the CPU
    ops that take the most time. ``step`` advances a single running job by one token.

    The first H200 run decoded one stream at 1-4 % of the bandwidth limit; this says
    whether a step waits on the GPU or the GPU waits on Python and kernel launches.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(4):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    wall_ms = (time.perf_counter() - start) * 1000 / steps
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    events = prof.key_averages()
    # Kernel time shows both on the kernels' own (CUDA) entries and as the self device time
    # of the CPU ops that launched them; torch versions differ in which they fill, so take
    # the larger sum rather than adding the two.
    on_kernels = sum(_device_us(e) for e in events if e.device_type.name == "CUDA")
    on_ops = sum(_device_us(e) for e in events if e.device_type.name == "CPU")
    device_ms = max(on_kernels, on_ops) / 1000 / steps
    launches = sum(e.count for e in events if "LaunchKernel" in e.key)
    return {
        "wall_ms_per_step": round(wall_ms, 3),
        "gpu_kernel_ms_per_step": round(device_ms, 3),
        "gpu_busy_pct": round(100 * device_ms / wall_ms, 1) if wall_ms else None,
        "kernel_launches_per_step": round(launches / steps, 1),
        "top_cpu_ops": events.table(sort_by="self_cpu_time_total", row_limit=12),
    }


def _device_us(event: Any) -> float:
    """An averaged profiler event's own device time (the attribute was renamed in torch 2.4)."""
    value = getattr(event, "self_device_time_total", None)
    if value is None:
        value = getattr(event, "self_cuda_time_total", 0.0)
    return float(value)


def profile_engine(engine: Engine) -> dict[str, Any]:
    """:func:`profile_steps` over our engine with one greedy job running."""
    sampling = SamplingParams(max_tokens=PROFILE_TOKENS, temperature=0.0)
    engine.enqueue(EngineJob("profile", prompts(1, seed=7)[0], sampling))
    try:
        return profile_steps(engine.step)
    finally:
        engine.cancel("profile")


def profile_raw_exllamav2(generator: Any) -> dict[str, Any]:
    """:func:`profile_steps` over the raw dynamic generator with one greedy job running."""
    import torch
    from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

    generator.enqueue(
        ExLlamaV2DynamicJob(
            input_ids=torch.tensor([prompts(1, seed=7)[0]]),
            max_new_tokens=PROFILE_TOKENS,
            gen_settings=ExLlamaV2Sampler.Settings.greedy(),
            stop_conditions=[],
        )
    )
    try:
        return profile_steps(generator.iterate)
    finally:
        generator.clear_queue()


# -- parts -----------------------------------------------------------------------------


def sweep(report: Report, label: str, drive: Callable[[int, float], Run], budget_s: float) -> None:
    """Run ``drive`` at each concurrency, splitting ``budget_s``; skip what time forbids."""
    end = time.perf_counter() + budget_s
    for i, jobs in enumerate(CONCURRENCY):
        now = time.perf_counter()
        if now >= end:
            report.skipped[f"{label}@{jobs}"] = "part budget spent"
            continue
        share = (end - now) / (len(CONCURRENCY) - i)
        report.runs.append(drive(jobs, now + max(share, 5.0)))


def part_exllamav2(report: Report, model_dir: Path, max_new: int, budget_s: float) -> None:
    """(a) engine step loop vs raw generator, (b) roofline, for ExLlamaV2."""
    from workers.engines.exllamav2 import ExLlamaV2Engine

    engine = ExLlamaV2Engine(device="cuda:0", max_batch=max(CONCURRENCY), max_seq_len=256)
    engine.load(model_dir)
    report.model["exllamav2_batching"] = engine.batching
    try:
        # Warm both paths up before measuring either: in the first H200 run the engine cells
        # went first and absorbed the warm-up (1 job: 15 tok/s against the raw 143, while at
        # 64 jobs the two agreed to 0.2 %).
        drive_engine(engine, "exllamav2", 8, 64, time.perf_counter() + 15)
        drive_raw_exllamav2(engine.generator, 8, 64, time.perf_counter() + 15)
        half = budget_s / 2
        sweep(
            report,
            "exllamav2/engine",
            lambda n, d: drive_engine(engine, "exllamav2", n, max_new, d),
            half,
        )
        sweep(
            report,
            "exllamav2/raw",
            lambda n, d: drive_raw_exllamav2(engine.generator, n, max_new, d),
            half,
        )
        report.profiles["exllamav2/engine"] = profile_engine(engine)
        report.profiles["exllamav2/raw-generator"] = profile_raw_exllamav2(engine.generator)
    finally:
        engine.unload()


def part_torch(report: Report, model_dir: Path, max_new: int, budget_s: float) -> None:
    """(c) TorchEngine on cuda:0: the same sweep and roofline."""
    from workers.engines.torch_engine import TorchEngine

    engine = TorchEngine(device="cuda:0", max_batch=max(CONCURRENCY), max_seq_len=256)
    engine.load(model_dir)
    try:
        drive_engine(engine, "torch", 1, 8, time.perf_counter() + 30)
        sweep(
            report,
            "torch/engine",
            lambda n, d: drive_engine(engine, "torch", n, max_new, d),
            budget_s,
        )
        report.profiles["torch/engine"] = profile_engine(engine)
    finally:
        engine.unload()


def roofline(report: Report) -> None:
    """(b) single-stream decode as a share of the bandwidth limit."""
    per_token = bytes_per_token(SHAPES)
    limit = HBM_BYTES_PER_S / per_token
    report.roofline = {"bytes_per_token": per_token, "limit_tok_s": round(limit, 1)}
    for run in report.runs:
        if run.jobs == 1 and run.decode_tok_s_single:
            key = f"{run.engine}/{run.driver}"
            report.roofline[key] = {
                "tok_s": round(run.decode_tok_s_single, 1),
                "pct_of_limit": round(100 * run.decode_tok_s_single / limit, 1),
            }


# -- report ----------------------------------------------------------------------------


def describe(report: Report) -> None:
    import torch

    report.device = torch.cuda.get_device_name(0)
    report.versions = {"torch": torch.__version__, "cuda": str(torch.version.cuda)}
    try:
        import exllamav2

        report.versions["exllamav2"] = exllamav2.__version__
    except Exception as exc:  # noqa: BLE001 - any import failure is a fact to report
        report.versions["exllamav2"] = f"unavailable: {exc}"
    report.model.update(SHAPES, weights_dtype="float16")


def markdown(report: Report) -> str:
    lines = [
        f"# GPU bench: {report.device}",
        "",
        f"versions: {report.versions}  ",
        f"model: {report.model}",
        "",
        "| engine | driver | jobs | tokens | s | tok/s | 1-stream decode tok/s | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report.runs:
        single = f"{r.decode_tok_s_single:.1f}" if r.decode_tok_s_single else ""
        note = ("truncated by budget; " if r.truncated else "") + r.note
        lines.append(
            f"| {r.engine} | {r.driver} | {r.jobs} | {r.tokens} | {r.seconds:.2f} "
            f"| {r.tok_s:.1f} | {single} | {note} |"
        )
    lines += ["", f"roofline (HBM {HBM_BYTES_PER_S:.1e} B/s): {report.roofline}", ""]
    lines += [f"- skipped {k}: {v}" for k, v in report.skipped.items()]
    for label, prof in report.profiles.items():
        summary = {k: v for k, v in prof.items() if k != "top_cpu_ops"}
        lines += ["", f"## one-stream step profile: {label}", "", f"{summary}", "", "```"]
        lines += [prof["top_cpu_ops"], "```"]
    return "\n".join(lines) + "\n"


def write(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    for run, raw in zip(report.runs, data["runs"], strict=True):
        raw["tok_s"] = round(run.tok_s, 1)
    (out / "bench.json").write_text(json.dumps(data, indent=2))
    (out / "bench.md").write_text(markdown(report))


def guarded(report: Report, label: str, part: Callable[[], None]) -> None:
    """Run one part; a failure is recorded, not fatal to the parts after it."""
    try:
        part()
    except Exception as exc:  # noqa: BLE001 - the bench reports every failure and goes on
        report.skipped[label] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-results"))
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/uml-bench-1b"))
    parser.add_argument("--max-new", type=int, default=128)
    parser.add_argument("--budget-s", type=float, default=200.0, help="for the measured parts")
    parser.add_argument("--skip-exllamav2", action="store_true", help="e.g. no JIT extension")
    args = parser.parse_args(argv)
    report = Report()
    describe(report)
    t0 = time.perf_counter()
    build_model(args.model_dir)
    report.model["build_s"] = round(time.perf_counter() - t0, 1)
    share = args.budget_s / 2
    if args.skip_exllamav2:
        report.skipped["exllamav2"] = "--skip-exllamav2 (its extension did not build)"
    else:
        guarded(
            report, "exllamav2", lambda: part_exllamav2(report, args.model_dir, args.max_new, share)
        )
    guarded(report, "torch", lambda: part_torch(report, args.model_dir, args.max_new, share))
    roofline(report)
    write(report, args.out)
    print(markdown(report))
    return 0 if report.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
