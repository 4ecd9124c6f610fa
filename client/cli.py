"""The ``uml`` commands that talk to a running service through the client.

``uml chat MODEL`` (interactive, streaming), ``uml complete MODEL PROMPT``,
``uml jobs watch ID`` (follows a job's event stream, resuming if the connection drops),
``uml models`` (what can serve now) and ``uml submit FILE.jsonl`` (a batch: upload,
create, a progress line until it ends, then the output file). Each takes ``--url``
(``UML_BASE_URL``, default ``http://localhost:8000``) and ``--api-key`` (``UML_API_KEY``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from client._errors import JobError, UMLError
from client._sync import SyncUniversalClient
from client._types import BATCH_TERMINAL, Batch, DoneEvent, StatusEvent, TokenEvent


def add_parsers(sub: Any, models: argparse.ArgumentParser) -> None:
    """Register the client commands on ``uml``'s subparsers; ``uml models`` lists models."""
    models.set_defaults(func=_models)
    _connection(models)

    chat = sub.add_parser("chat", help="chat with MODEL interactively (streams the replies)")
    chat.add_argument("model")
    chat.add_argument("--system", default=None, help="a system message to start with")
    _sampling(chat)
    chat.set_defaults(func=_chat)

    complete = sub.add_parser("complete", help="complete PROMPT with MODEL (streamed)")
    complete.add_argument("model")
    complete.add_argument("prompt")
    _sampling(complete)
    complete.set_defaults(func=_complete)

    jobs = sub.add_parser("jobs", help="background jobs").add_subparsers(metavar="ACTION")
    watch = jobs.add_parser("watch", help="follow a job's stream to its end (resumes by itself)")
    watch.add_argument("job_id")
    watch.add_argument("--after", type=int, default=0, help="start after this event seq")
    _connection(watch)
    watch.set_defaults(func=_watch)

    submit = sub.add_parser("submit", help="run FILE.jsonl as a batch (/v1/files, /v1/batches)")
    submit.add_argument("file", type=Path)
    submit.add_argument("--endpoint", default="/v1/chat/completions")
    submit.add_argument("--output", type=Path, default=None, help="where to write the results")
    submit.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    _connection(submit)
    submit.set_defaults(func=_submit)


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="the API (UML_BASE_URL, else localhost:8000)")
    parser.add_argument("--api-key", default=None, help="the API key (default: UML_API_KEY)")


def _sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    _connection(parser)


def _client(args: argparse.Namespace) -> SyncUniversalClient:
    return SyncUniversalClient(args.url, args.api_key)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}


def _fail(exc: UMLError) -> int:
    print(f"uml: {exc}", file=sys.stderr)
    return 1


def _models(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            for card in client.list_models().data:
                print(card.id)
    except UMLError as exc:
        return _fail(exc)
    return 0


def _complete(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        with (
            _client(args) as client,
            client.stream_complete(args.model, args.prompt, **_params(args)) as chunks,
        ):
            for chunk in chunks:
                if chunk.choices:
                    out.write(chunk.choices[0].text)
                    out.flush()
    except UMLError as exc:
        return _fail(exc)
    out.write("\n")
    return 0


def _chat(args: argparse.Namespace, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = stdin.isatty()
    try:
        with _client(args) as client:
            while True:
                if interactive:
                    out.write("> ")
                    out.flush()
                line = stdin.readline()
                if not line or line.strip() in ("/exit", "/quit"):
                    return 0
                if not line.strip():
                    continue
                messages.append({"role": "user", "content": line.rstrip("\n")})
                parts: list[str] = []
                with client.stream_chat(args.model, messages, **_params(args)) as chunks:
                    for chunk in chunks:
                        text = chunk.choices[0].delta.content if chunk.choices else None
                        if text:
                            parts.append(text)
                            out.write(text)
                            out.flush()
                out.write("\n")
                messages.append({"role": "assistant", "content": "".join(parts)})
    except UMLError as exc:
        return _fail(exc)
    except KeyboardInterrupt:
        return 130


def _watch(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        with _client(args) as client:
            with client.stream_job(args.job_id, after=args.after) as events:
                for event in events:
                    if isinstance(event, TokenEvent):
                        out.write(event.text)
                        out.flush()
                    elif isinstance(event, StatusEvent):
                        print(f"[{event.status}]", file=sys.stderr)
                    elif isinstance(event, DoneEvent):
                        out.write("\n")
                        print(f"[done: {event.finish_reason}]", file=sys.stderr)
    except JobError as exc:
        print(f"\n[error: {exc.message}]", file=sys.stderr)
        return 1
    except UMLError as exc:
        return _fail(exc)
    return 0


def _progress(batch: Batch) -> str:
    counts = batch.request_counts
    ended, total, width = counts.completed + counts.failed, counts.total, 30
    filled = int(width * ended / total) if total else 0
    return f"\r[{'#' * filled}{'.' * (width - filled)}] {ended}/{total} {batch.status}"


def _submit(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            uploaded = client.upload_file(args.file, purpose="batch")
            batch = client.create_batch(uploaded.id, endpoint=args.endpoint)
            print(f"batch {batch.id}", file=sys.stderr)
            while batch.status not in BATCH_TERMINAL:
                print(_progress(batch), end="", file=sys.stderr, flush=True)
                time.sleep(args.poll)
                batch = client.get_batch(batch.id)
            print(_progress(batch), file=sys.stderr)
            if batch.status != "completed" or not batch.output_file_id:
                print(f"uml: batch {batch.id} ended {batch.status}", file=sys.stderr)
                return 1
            target = args.output or args.file.with_name(f"{args.file.stem}.output.jsonl")
            target.write_bytes(client.file_content(batch.output_file_id))
    except UMLError as exc:
        return _fail(exc)
    print(target)
    return 0
