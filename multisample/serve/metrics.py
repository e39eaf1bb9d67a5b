"""The gateway's Prometheus metrics (GET /metrics), in a registry of each server's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "multisample_requests",
            "Requests answered, by the model they named and their HTTP status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "multisample_request_seconds",
            "Seconds from a request's arrival to its last byte, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "multisample_tokens",
            "Tokens of every internal call, by the model requests named and kind.",
            ["model", "kind"],
            registry=self.registry,
        )
        self.selections = Counter(
            "multisample_selections",
            "Candidates a selection route played, by route and candidate.",
            ["selection", "candidate"],
            registry=self.registry,
        )
        self.queue = Gauge(
            "multisample_queue_depth",
            "Requests waiting for a turn.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "multisample_in_flight",
            "Requests being answered.",
            registry=self.registry,
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)
