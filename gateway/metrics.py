"""Prometheus metrics for ``/metrics``: what is happening on the lines right now, and how calls went.

Rules that keep this off the media path:

* Per-frame work never touches a metric. Media counters are kept as plain integers on the call and
  added here once, when the call ends.
* Queue and resampler depths are not updated at all: a collector reads them from the active calls
  when Prometheus scrapes.
* Each application owns its own :class:`~prometheus_client.CollectorRegistry`, so two gateways in
  one process (tests) never share or clash over series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

#: ``Content-Type`` of :meth:`GatewayMetrics.render` (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Voice latency buckets: telephony users notice 300 ms and give up around 3 s.
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
TOOL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class CallDepths:
    """Buffer depths of one active call, read at scrape time."""

    playout_frames: int
    downlink_pending_ms: float
    gemini_audio_queue: int | None = None


class _DepthCollector(Collector):
    """Sum and maximum of every active call's buffers, computed only when scraped."""

    def __init__(self, source: Callable[[], Iterable[CallDepths]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depths = list(self._source())
        queue = GaugeMetricFamily(
            "gateway_queue_depth",
            "Items queued across active calls (playout: 20 ms frames; gemini_audio: caller chunks)",
            labels=["queue", "stat"],
        )
        resampler = GaugeMetricFamily(
            "gateway_downlink_buffered_ms",
            "Model audio held in the downlink resampler and framer, across active calls",
            labels=["stat"],
        )
        playout = [d.playout_frames for d in depths]
        queue.add_metric(["playout", "sum"], sum(playout))
        queue.add_metric(["playout", "max"], max(playout, default=0))
        gemini = [d.gemini_audio_queue for d in depths if d.gemini_audio_queue is not None]
        queue.add_metric(["gemini_audio", "sum"], sum(gemini))
        queue.add_metric(["gemini_audio", "max"], max(gemini, default=0))
        held = [d.downlink_pending_ms for d in depths]
        resampler.add_metric(["sum"], sum(held))
        resampler.add_metric(["max"], max(held, default=0.0))
        yield queue
        yield resampler


class _DialplanCollector(Collector):
    """Whether the newest dialplan edit was accepted, and how many were rejected: read from the store
    at scrape time. A rejected edit keeps the last good plans serving, so it is reported here, not by
    failing /readyz."""

    def __init__(self, source: Callable[[], tuple[bool, int]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        healthy, failures = self._source()
        yield GaugeMetricFamily(
            "gateway_dialplans_healthy",
            "1 when the newest dialplan edit is in force, 0 while it is rejected (the last good plans serve)",
            value=1 if healthy else 0,
        )
        yield CounterMetricFamily(
            "gateway_dialplan_reload_failures", "Dialplan reloads rejected since start-up", value=failures
        )


class GatewayMetrics:
    """Every series the gateway exports. Labels are low-cardinality: dialplan names, tools, causes."""

    def __init__(self, depths: Callable[[], Iterable[CallDepths]] | None = None) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.active_calls = Gauge("gateway_active_calls", "Calls in progress", registry=r)
        #: Set once by the app: which of a fleet's processes run the NumPy resampler (no compiler at
        #: install), costing more CPU per call.
        self.build = Info(
            "gateway_build",
            "This process: gateway version, Python version, and the resampler's inner loop (c or numpy)",
            registry=r,
        )
        self.calls = Counter(
            "gateway_calls",
            "Finished calls by who ended them (caller, bot, gemini, gateway, admin) and dialplan",
            ["outcome", "dialplan"],
            registry=r,
        )
        self.calls_refused = Counter(
            "gateway_calls_refused",
            "New calls refused at admission, by cause: capacity (a configured limit), draining "
            "(shutting down) or overload (CPU or event-loop lag past its threshold)",
            ["cause"],
            registry=r,
        )
        self.call_failures = Counter(
            "gateway_call_failures",
            "Unexpected errors that ended a call through the fallback, by the call task that raised them",
            ["task"],
            registry=r,
        )
        self.rejected_streams = Counter(
            "gateway_media_streams_rejected",
            "Media streams refused before a call started (bad token, protocol error, no start)",
            ["reason"],
            registry=r,
        )
        self.greeting_latency = Histogram(
            "gateway_greeting_latency_seconds",
            "Media stream start to the first bot audio queued to the caller",
            ["dialplan"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reply_latency = Histogram(
            "gateway_reply_latency_seconds",
            "End of the caller's speech (last voiced frame) to the first audio of the bot's reply",
            ["dialplan"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter(
            "gateway_barge_ins", "Bot replies the caller interrupted", ["dialplan"], registry=r
        )
        self.tool_calls = Counter(
            "gateway_tool_calls",
            "Tool calls by tool and result (ok, error, timeout, cancelled, unavailable)",
            ["tool", "result"],
            registry=r,
        )
        self.tool_duration = Histogram(
            "gateway_tool_call_duration_seconds",
            "How long tool calls took",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=r,
        )
        self.reconnects = Counter(
            "gateway_gemini_reconnects", "Gemini Live reconnects by cause", ["cause"], registry=r
        )
        self.go_aways = Counter("gateway_gemini_go_aways", "goAway notices from Gemini", registry=r)
        self.media_frames = Counter(
            "gateway_media_frames",
            "20 ms phone frames by direction (in: from the caller; out: to the caller)",
            ["direction"],
            registry=r,
        )
        self.frames_dropped = Counter(
            "gateway_frames_dropped",
            "Audio frames dropped: gemini_queue_full (caller audio the Live session could not take "
            "in time) or barge_in (bot audio generated but never heard)",
            ["reason"],
            registry=r,
        )
        self.tokens = Counter(
            "gateway_gemini_tokens", "Tokens Gemini reported, by kind and dialplan", ["kind", "dialplan"],
            registry=r,
        )  # fmt: skip
        self.records_written = Counter(
            "gateway_records_written", "Call-record operations committed to the store", registry=r
        )
        self.records_dropped = Counter(
            "gateway_records_dropped",
            "Call-record operations dropped because the store stayed unreachable",
            registry=r,
        )
        self.record_write_errors = Counter(
            "gateway_record_write_errors", "Failed call-record commits (retried)", registry=r
        )
        self.loop_lag = Histogram(
            "gateway_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 0.25 s: the first sign of overload",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.records_store_up = Gauge(
            "gateway_records_store_up",
            "1 while call records are being written, 0 while the record store is failing",
            registry=r,
        )
        self.records_pending = Gauge(
            "gateway_records_pending", "Call-record operations waiting to be written", registry=r
        )
        self.records_orphans_closed = Counter(
            "gateway_records_orphans_closed",
            "Call records closed for a gateway that never closed them, by check: lease (a replica "
            "stopped heartbeating), startup (an earlier process on this host), shutdown (end unwritten)",
            ["check"],
            registry=r,
        )
        if depths is not None:
            r.register(_DepthCollector(depths))

    def watch_dialplans(self, source: Callable[[], tuple[bool, int]]) -> None:
        """Export the dialplan store's state: ``source`` returns (healthy, rejected reloads)."""
        self.registry.register(_DialplanCollector(source))

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)
