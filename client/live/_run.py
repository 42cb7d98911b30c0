"""``run_live``: one live run, from URLs to a finished output, record and summary, however it
ends (the source's end, SIGINT/SIGTERM through ``stop``, an outage with ``--on-outage stop``,
an error)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from veil.core import Detector, DetectorError
from veil.mask import single_threaded_opencv

from ._config import LiveConfig
from ._endpoints import redact, sink_endpoint, source_endpoint
from ._engine import Ending, EndKind, Engine
from ._record import Header, RecordWriter, Summary
from ._stats import LiveStats, _start_metrics

logger = logging.getLogger(__name__)

__all__ = ["run_live"]


def run_live(
    source: str,
    sink: str,
    *,
    detector: Detector,
    config: LiveConfig | None = None,
    record: Path | None = None,
    metrics: str | None = None,
    stop: threading.Event | None = None,
    detector_json: dict[str, Any] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Anonymise ``source`` to ``sink`` until the source ends or ``stop`` is set.

    The record (JSON Lines) is flushed and the sink finalised however the run ends. Returns
    the summary (also the record's last line). Raises ``DetectorError`` when the detector is
    gone and ``config.on_outage`` is ``stop`` (after finishing the output).
    """
    config = config or LiveConfig()
    stop = stop or threading.Event()
    single_threaded_opencv()
    source_ep = source_endpoint(source, read_timeout_s=config.read_timeout_s)
    sink_ep = sink_endpoint(sink)
    stats = LiveStats()
    writer = RecordWriter(record)
    server = _start_metrics(metrics, stats) if metrics else None
    writer.write(
        Header(
            source=redact(source),
            sink=redact(sink),
            config=config,
            detector=detector_json or detector.info.to_json(),
        )
    )
    engine = Engine(source_ep, sink_ep, detector, config, writer, stats, stop)
    reason = "error"
    ending: Ending | None = None
    error: BaseException | None = None
    try:
        if on_ready is not None:
            on_ready()
        ending = engine.run()
        reason = ending.reason
    except BaseException as exc:
        error = exc
        reason = f"error: {exc}"
        raise
    finally:
        try:
            engine.close()
        except Exception as exc:
            if error is None:
                raise
            logger.error("finishing the sink failed too: %s", exc)
        finally:
            summary = Summary(stats=stats.snapshot(), ended=reason)
            writer.write(summary)
            writer.close()
            if server is not None:
                server.shutdown()
    logger.info("live run ended (%s): %s", reason, summary.body())
    if ending is not None and ending.kind is EndKind.OUTAGE:
        raise DetectorError(f"{reason} (--on-outage stop); the output so far is all masked")
    return summary.body()
