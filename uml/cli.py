"""The ``uml`` command: make the tiny model, run a worker, the API, or everything at once."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protocol.settings import describe, get_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    result: int = args.func(args)
    return result


def _parser() -> argparse.ArgumentParser:
    settings_help = "\n".join(
        f"  {name:32} {text} (default {default})" for name, default, text in describe()
    )
    parser = argparse.ArgumentParser(
        prog="uml",
        description="Universal Model Launcher: a queue-backed LLM job service.",
        epilog=f"environment (REDIS_URL and UML_*):\n{settings_help}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    models_parser = sub.add_parser("models", help="list the served models; model utilities")
    models = models_parser.add_subparsers(metavar="ACTION")
    tiny = models.add_parser("make-tiny", help="write the tiny random-weight Llama model to DIR")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (same seed, same bytes)")
    tiny.set_defaults(func=_make_tiny)

    worker = sub.add_parser(
        "worker", help="start a Celery worker; it loads models at start (--model) or on command"
    )
    worker.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=DIR|NAME",
        help="load this model at start: a directory, or a name from the registry (UML_MODELS); "
        "repeatable; none: start empty and load on command",
    )
    worker.add_argument("--engine", choices=["torch", "exllamav2"], default=None)
    worker.add_argument("--device", default=None, help="cpu or cuda:N")
    worker.add_argument("--slots", type=int, default=None, help="concurrent jobs (default 16)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=_worker)

    serve = sub.add_parser("serve", help="start the API")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(func=_serve)

    flower = sub.add_parser(
        "flower", help="start Flower (Celery monitor) with basic auth from UML_FLOWER_*"
    )
    flower.add_argument("--address", default=None)
    flower.add_argument("--port", type=int, default=None)
    flower.set_defaults(func=_flower)

    dev = sub.add_parser(
        "dev", help="run Redis (if REDIS_URL is unset), the tiny model, a worker and the API"
    )
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument(
        "--data", type=Path, default=Path(".uml"), help="folder for Redis data and models"
    )
    dev.set_defaults(func=_dev)

    from uml.keys import add_parser as add_keys_parser

    add_keys_parser(sub)

    from client.cli import add_parsers as add_client_parsers

    add_client_parsers(sub, models_parser)

    settings = sub.add_parser("settings", help="print every setting with its default")
    settings.set_defaults(func=_settings)
    return parser


def _make_tiny(args: argparse.Namespace) -> int:
    from workers.tiny import make_tiny

    path = make_tiny(args.dir, seed=args.seed)
    print(f"tiny model written to {path}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from api.logs import configure_logging

    configure_logging(get_settings().log.format, args.loglevel)
    from protocol.models import load_registry

    settings = get_settings()
    try:
        registry = load_registry(settings.models.models)
        startup = [_startup_model(text, registry) for text in args.model]
    except ValueError as exc:
        print(f"uml worker: {exc}", file=sys.stderr)
        return 2
    from workers.runtime import Runtime

    slots = args.slots or settings.worker.slots
    runtime = Runtime(settings, slots, registry, device=args.device, engine=args.engine)
    try:
        specs = [runtime.spec(name, entry) for name, entry in startup]
        for spec in specs:
            runtime.load(spec)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"uml worker: {exc}", file=sys.stderr)
        return 1
    return _run_worker(runtime, args, [spec.name for spec in specs])


def _startup_model(text: str, registry: dict[str, Any]) -> tuple[str, Any]:
    """``NAME=DIR`` (an entry made on the spot) or ``NAME`` (the registry's entry)."""
    from protocol.models import ModelEntry

    name, sep, path = text.partition("=")
    if sep and name and path:
        return name, ModelEntry(path=path)
    if not sep and name in registry:
        return name, registry[name]
    if not sep and name:
        raise ValueError(f"--model {name}: not in the registry (UML_MODELS)")
    raise ValueError("--model must look like NAME=DIR or NAME")


def _run_worker(runtime: Any, args: argparse.Namespace, models: list[str]) -> int:
    """Start the Celery consumer on the loaded models' queues; returns its exit code."""
    from celery.signals import worker_ready

    from protocol.keys import IDLE_QUEUE, queue_name
    from workers.app import app
    from workers.control import Loader
    from workers.runtime import Runtime

    Runtime.install(runtime)
    loader = Loader(runtime)
    Loader.install(loader)

    def _attach(sender: Any = None, **_: Any) -> None:
        loader.attach(sender)

    worker_ready.connect(_attach, weak=False)
    runtime.start()
    loader.start()
    try:
        worker = app.Worker(
            pool="threads",
            concurrency=runtime.slots,
            queues=[IDLE_QUEUE, *(queue_name(name) for name in models)],
            hostname=runtime.node,
            loglevel=args.loglevel.upper(),
            without_gossip=True,
            without_mingle=True,
            quiet=True,
        )
        worker.start()
        code = int(getattr(worker, "exitcode", 0) or 0)
    finally:
        loader.stop()
        runtime.stop()
    return code


def _serve(args: argparse.Namespace) -> int:
    import msgspec

    from api.server import run

    settings = get_settings()
    server = msgspec.structs.replace(
        settings.server,
        host=args.host or settings.server.host,
        port=settings.server.port if args.port is None else args.port,
    )
    try:
        run(msgspec.structs.replace(settings, server=server))
    except ValueError as exc:  # a setting the app refuses, e.g. CORS `*` with credentials
        print(f"uml serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _flower(args: argparse.Namespace) -> int:
    from uml.flower import run_flower

    return run_flower(get_settings().flower, port=args.port, address=args.address)


def _dev(args: argparse.Namespace) -> int:
    from uml.dev import run_dev

    return run_dev(data_dir=args.data, port=args.port)


def _settings(args: argparse.Namespace) -> int:
    for name, default, text in describe():
        print(f"# {text}\n# {name}={default}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
