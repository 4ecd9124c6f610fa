"""Prometheus metrics of one API process, served at ``GET /metrics`` (admin scope).

Three kinds of series, all in one :class:`Metrics` registry per app (none is global, so
two apps in one process, as in the tests, never mix):

- **per request**, recorded by :class:`MetricsMiddleware` (outermost route middleware):
  ``uml_http_requests_total{method,route,status}`` and
  ``uml_http_request_duration_seconds{route}``, where ``route`` is the path *template*
  (``/v1/jobs/{job_id}``), never the raw path, so ids can't explode the label set.
  A stream's duration is the whole stream's. Paths that match no route are not counted
  here (the audit log has them).
- **per streamed token** of the OpenAI streaming endpoints, recorded by :meth:`Metrics.tokens`
  as this API delivers them: ``uml_time_to_first_token_seconds{model}`` (from the request's
  arrival) and ``uml_inter_token_latency_seconds{model}``.
- **read from Redis at scrape time** by :meth:`Metrics.collect`: queue depth per model,
  jobs queued and running, live workers per model, plus this process's open job
  subscriptions (``Relay.subscriber_count``). Every replica reports the same Redis-wide
  gauges: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterator
from itertools import accumulate
from typing import Final

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from api.exchange import Exchange
from api.openapi import ERRORS
from api.security.guards import requires_admin
from api.services.job_store import model_lists
from api.services.models import read_workers
from api.state import Resources
from protocol.events import Event, TokenEvent
from protocol.workers import WorkerInfo

# fmt: off
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
)
# fmt: on
TTFT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ITL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
T0: Final = "uml.metrics.t0"
"""Key in ``scope["state"]``: when the request arrived (``time.perf_counter()``)."""


class RequestStats:
    """Request counts and latency buckets as plain ints, exported at scrape time.

    The hot path is two dict lookups and a ``bisect``; prometheus_client's own
    ``Counter``/``Histogram`` take a lock per update and cost several times more. No lock
    is needed: updates and scrapes run on the event loop thread.
    """

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts: dict[tuple[str, str, int], int] = {}
        self.hist: dict[str, list[float]] = {}
        """Per route: one count per bucket, one for +Inf, then the sum of seconds."""

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        row = self.hist.get(route)
        if row is None:
            row = self.hist[route] = [0.0] * (len(self.buckets) + 2)
        row[bisect_left(self.buckets, seconds)] += 1
        row[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "uml_http_requests",
            "HTTP requests answered, by method, route template and status.",
            labels=["method", "route", "status"],
        )
        for (method, route, status), n in self.counts.items():
            requests.add_metric([method, route, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "uml_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response (whole stream).",
            labels=["route"],
        )
        bounds = [*(str(float(b)) for b in self.buckets), "+Inf"]
        for route, row in self.hist.items():
            cumulative = list(accumulate(row[:-1]))
            latency.add_metric([route], list(zip(bounds, cumulative, strict=True)), row[-1])
        yield latency


class WorkerStats:
    """Per-worker engine series, from the heartbeats the last scrape read: each worker
    process reports its own counters in its heartbeat, so the API exports every worker's
    without a multi-process registry; a restarted worker is a new ``worker`` label."""

    def __init__(self) -> None:
        self.workers: list[WorkerInfo] = []

    def collect(self) -> Iterator[Metric]:
        labels = ["worker", "model"]
        tokens = CounterMetricFamily(
            "uml_worker_tokens", "Tokens generated by a worker's engine for a model.", labels=labels
        )
        steps = CounterMetricFamily(
            "uml_worker_engine_steps", "Engine steps (one batched forward each).", labels=labels
        )
        batch = GaugeMetricFamily(
            "uml_worker_batch_size", "Jobs in the engine's last step.", labels=labels
        )
        active = GaugeMetricFamily(
            "uml_worker_active_jobs", "Jobs of the model running on the worker.", labels=labels
        )
        load = GaugeMetricFamily(
            "uml_worker_model_load_seconds", "How long the model's last load took.", labels=labels
        )
        memory = GaugeMetricFamily(
            "uml_worker_model_memory_bytes", "Memory the model's weights take.", labels=labels
        )
        free = GaugeMetricFamily(
            "uml_worker_free_slots", "Slots the worker has free.", labels=["worker"]
        )
        for w in self.workers:
            free.add_metric([w.id], w.free_slots)
            for m in w.models:
                key = [w.id, m.name]
                tokens.add_metric(key, m.tokens_total)
                steps.add_metric(key, m.steps_total)
                batch.add_metric(key, m.batch_size)
                active.add_metric(key, m.active)
                load.add_metric(key, m.load_seconds)
                memory.add_metric(key, m.memory_bytes)
        yield from (tokens, steps, batch, active, load, memory, free)


class Metrics:
    """The registry and its series; one per app, kept in ``app.state.metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.http = RequestStats(LATENCY_BUCKETS)
        reg.register(self.http)
        self.worker_stats = WorkerStats()
        reg.register(self.worker_stats)
        self.ttft = Histogram(
            "uml_time_to_first_token_seconds",
            "Streaming endpoints: request arrival to the first token sent.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self.itl = Histogram(
            "uml_inter_token_latency_seconds",
            "Streaming endpoints: time between consecutive tokens sent.",
            ["model"],
            buckets=ITL_BUCKETS,
            registry=reg,
        )
        self.queue_depth = Gauge(
            "uml_queue_depth",
            "Jobs waiting in a model's queue (all priorities).",
            ["model"],
            registry=reg,
        )
        self.jobs = Gauge(
            "uml_jobs",
            "Jobs by state: queued (in the queues), running (on live workers).",
            ["state"],
            registry=reg,
        )
        self.workers = Gauge(
            "uml_workers",
            "Live workers holding each model (any load state).",
            ["model"],
            registry=reg,
        )
        self.worker_count = Gauge("uml_live_workers", "Live workers.", registry=reg)
        self.redis_up = Gauge(
            "uml_redis_up", "1 when Redis answered this scrape, else 0.", registry=reg
        )
        self.subscriptions = Gauge(
            "uml_open_streams",
            "Job streams this process relays now (SSE, WebSocket, sync calls waiting).",
            registry=reg,
        )
        self._models: set[str] = set()
        self._lock = asyncio.Lock()

    @staticmethod
    def of(state: State) -> Metrics:
        metrics: Metrics = state.metrics
        return metrics

    async def tokens(
        self, model: str, t0: float, events: AsyncIterator[Event | None]
    ) -> AsyncIterator[Event | None]:
        """Pass a stream's events through, timing its first token and the gaps after it."""
        ttft, itl = self.ttft.labels(model), self.itl.labels(model)
        last: float | None = None
        async for event in events:
            if isinstance(event, TokenEvent) and event.text:
                now = time.perf_counter()
                if last is None:
                    ttft.observe(now - t0)
                else:
                    itl.observe(now - last)
                last = now
            yield event

    async def collect(self, res: Resources) -> None:
        """Refresh the gauges read from Redis (one ``SMEMBERS``, one ``MGET``, one pipeline)."""
        async with self._lock:  # two scrapes at once would interleave clear() and set()
            self.subscriptions.set(res.relay.subscriber_count)
            try:
                workers = await read_workers(res.redis)
                held: dict[str, int] = {}
                for w in workers:
                    for m in w.models:
                        held[m.name] = held.get(m.name, 0) + 1
                # a model stays listed after its last worker left: its queue still matters
                self._models |= held.keys()
                if res.models.admin is not None:  # registered models, held or not
                    self._models |= res.models.admin.registry.keys()
                models = sorted(self._models)
                async with res.redis.pipeline(transaction=False) as pipe:
                    for model in models:
                        for name in model_lists(model):
                            pipe.llen(name)
                    lengths = await pipe.execute()
            except (RedisError, OSError):
                self.redis_up.set(0)
                return
            self.redis_up.set(1)
            per = len(lengths) // len(models) if models else 0
            self.queue_depth.clear()
            self.workers.clear()
            for i, model in enumerate(models):
                self.queue_depth.labels(model).set(sum(lengths[i * per : (i + 1) * per]))
                self.workers.labels(model).set(held.get(model, 0))
            self.jobs.labels("queued").set(sum(lengths))
            self.jobs.labels("running").set(sum(w.active for w in workers))
            self.worker_count.set(len(workers))
            self.worker_stats.workers = workers

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Outermost route middleware: times every HTTP request and counts it by status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope.setdefault("state", {})[T0] = t0
        exchange = Exchange(receive, send)
        failure: BaseException | None = None
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            route = scope.get("path_template") or scope["path"]
            status = exchange.status(failure)
            self.metrics.http.observe(scope["method"], route, status, time.perf_counter() - t0)


def arrived_at(scope: Scope) -> float:
    """When the request arrived, as recorded by :class:`MetricsMiddleware` (else now)."""
    t0: float = scope.get("state", {}).get(T0) or time.perf_counter()
    return t0


class MetricsController(Controller):
    path = "/metrics"
    tags = ["ops"]
    guards = [requires_admin]

    @get(
        summary="Prometheus metrics of this API process (admin scope)",
        description="Prometheus text format. Needs an admin key: it reveals model names, "
        "queue depths and traffic.",
        responses={k: ERRORS[k] for k in (401, 403)},
        media_type=CONTENT_TYPE_LATEST,
    )
    async def metrics(self, state: State) -> Response[bytes]:
        metrics = Metrics.of(state)
        await metrics.collect(Resources.of(state))
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
