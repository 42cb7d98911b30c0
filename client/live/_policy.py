"""What decides how a live frame is masked, and when it leaves: pure decisions, no threads,
frames or sockets, the clock injected (tests drive it with a fake one).

The engine holds each frame at most the delay budget. A frame leaves with

* ``detected``: its own detection came back in time; masks = the raw detections plus the
  constant-velocity predictions of every other live track (the tracker adds, never removes);
* ``tracked``: it was not sent to the detector (detection runs on every ``stride``-th frame,
  the stride adapting to the detector's speed); masks = track predictions grown with
  staleness, and, when a later frame's detection came back while it waited, those boxes
  carried back to it (live mode's only look-ahead, bounded by the delay);
* ``late``: its detection was not back by the deadline (or failed); masks = predictions
  grown by a safety margin (``late_margin``);
* ``policy``: masked whole (:class:`Whole` says why): the detector has not answered yet since
  the start, or has been gone (failing, or silent past its usual time) for longer than the
  delay (an outage: with ``OutagePolicy.STOP`` the stream stops); every frame from a hard cut
  (a new shot: no track of the old one says where its faces are) until a detection of a frame
  at or after the cut has come back (the first frame after a cut is sent to the detector at
  once); and every frame whose surrounding detections are further apart than the trust
  horizon (``LiveConfig.trust_s``, ``extrapolate_s``): fail closed when the detector cannot
  keep up. A frame is never passed through unmasked.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from fractions import Fraction

from veil.core import backoff

from ._config import LiveConfig, OutagePolicy

__all__ = [
    "Cadence",
    "Clock",
    "Decision",
    "DetectorHealth",
    "Health",
    "LivePolicy",
    "Mode",
    "Outage",
    "TrustHorizon",
    "Whole",
]

#: Seconds on a monotonic clock (``time.monotonic`` in the engine).
Clock = Callable[[], float]


class Mode(StrEnum):
    """How a frame's masks were decided (see the module docstring)."""

    DETECTED = "detected"
    TRACKED = "tracked"
    LATE = "late"
    POLICY = "policy"


class Whole(Enum):
    """Why a frame is masked whole (mode ``policy``)."""

    NOT_YET = "not yet"  # the detector has not answered since the start
    OUTAGE = "outage"  # gone for longer than the delay: the one cause OutagePolicy.STOP stops on
    CUT = "cut"  # a hard cut, no detection back since
    UNTRUSTED = "untrusted"  # the detections around it are further apart than the trust horizon


class Health(Enum):
    """The detector's state as the record tells it; each arrow is a record event::

        UP --a failure (detector_error)--> FAILING
        UP, FAILING --gone longer than the delay, at a frame sent (detector_gone)--> GONE
        FAILING, GONE --an answer (detector_back)--> UP

    Gone means failing, or silent past max(delay, 3 x its usual time) with a job in flight.
    A failure while gone by silence starts a run of failures (``detector_error``) and stays
    GONE.
    """

    UP = "up"
    FAILING = "failing"
    GONE = "gone"


@dataclass(frozen=True, kw_only=True)
class Outage:
    """The detector gone for longer than the delay, at a frame."""

    gone_s: float
    error: str  # its last error, or "no answer"
    first: bool  # the first frame masked for this outage (the record's detector_gone)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """How one frame is masked: its mode, and for a frame masked whole, why (``reason`` is
    the record's words for it)."""

    mode: Mode
    whole: Whole | None = None
    reason: str | None = None
    outage: Outage | None = None


class DetectorHealth:
    """The detector's outage state machine (:class:`Health`), the backoff after a failure and
    its usual answer time. One job in flight at a time. Pure: every method is given ``now``."""

    def __init__(self, *, delay_s: float) -> None:
        self._delay = delay_s
        self.state = Health.UP
        self.answered_once = False
        self.last_error = ""  # kept after it is back: a later silence is reported with it
        #: its usual answer time, seconds (moving average)
        self.detect_s = 0.0
        self._failing_since: float | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._gone_at: float | None = None
        self._in_flight: float | None = None  # when the job in flight was sent

    def idle(self, now: float) -> bool:
        """Whether a job may be sent: none in flight, and not backing off after a failure."""
        return self._in_flight is None and now >= self._retry_at

    def sent(self, now: float) -> None:
        self._in_flight = now

    def failed(self, error: str, now: float) -> bool:
        """A job failed (retried after a backoff). True when the failure starts a run of them
        (the record's ``detector_error``)."""
        self._in_flight = None
        self._failures += 1
        self.last_error = error
        self._retry_at = now + backoff(self._failures + 1, initial=0.1, multiplier=2.0, ceiling=5.0)
        if self._failing_since is not None:
            return False
        self._failing_since = now
        if self.state is Health.UP:
            self.state = Health.FAILING
        return True

    def answered(self, seconds: float, now: float) -> float | None:
        """A job came back after ``seconds``. Returns how long the detector was down when it
        was failing or gone (the record's ``detector_back``), else None."""
        self._in_flight = None
        down = None
        if self.state is not Health.UP:
            since = [t for t in (self._failing_since, self._gone_at) if t is not None]
            down = now - min(since, default=now)
            self._gone_at = None
        self.state = Health.UP
        self._failing_since = None
        self._failures = 0
        self.answered_once = True
        alpha = 0.2 if self.detect_s else 1.0
        self.detect_s += alpha * (seconds - self.detect_s)
        return down

    def gone_for(self, now: float) -> float | None:
        """How long the detector has been gone: failing, or silent past its usual time."""
        if self._failing_since is not None:
            return now - self._failing_since
        if self._in_flight is not None:
            silent_after = self._in_flight + max(self._delay, 3 * self.detect_s)
            if now > silent_after:
                return now - silent_after
        return None

    def gone(self, since: float) -> bool:
        """Declares it gone since ``since``; True the first time (the record's
        ``detector_gone``)."""
        if self.state is Health.GONE:
            return False
        self.state = Health.GONE
        self._gone_at = since
        return True

    def next_answer_at(self, now: float, frame_s: float) -> float | None:
        """When the next answer should be back (None: not to be counted on): the one in
        flight at its usual time, or, when idle, one sent a frame from now (or when the
        backoff ends)."""
        if not self.answered_once or self._failing_since is not None:
            return None
        if self._in_flight is not None:
            due = self._in_flight + self.detect_s
            return due if due >= now else None
        return max(now, self._retry_at) + frame_s + self.detect_s


class TrustHorizon:
    """The frames whose detection came back, and which frames they vouch for: a frame is
    masked from its detection or from track predictions only when the detections around it
    are at most ``between`` frames apart (``LiveConfig.trust_s``), and a frame after the
    newest one at most ``after`` frames after it (``extrapolate_s``)."""

    def __init__(self, *, between: int, after: int) -> None:
        self.between, self.after = between, after
        self._done: deque[int] = deque(maxlen=1024)  # in order: one job in flight at a time

    @property
    def newest(self) -> int | None:
        return self._done[-1] if self._done else None

    def detected(self, index: int) -> None:
        if not self._done or index > self._done[-1]:
            self._done.append(index)

    def untrusted(self, index: int) -> str | None:
        """Why frame ``index`` may not be masked from its detection or predictions (None: it
        may). The detections that came back around it must be at most the trust horizon
        apart: its own and the one before (a face the detector misses in one is then still
        in the other one's track predictions), the two it lies between, or, for a frame after
        the newest one, that one and the one before it, the frame itself being within the
        extrapolation horizon of the newest."""
        trust, after, done = self.between, self.after, self._done
        k = bisect.bisect_left(done, index)
        own = k < len(done) and done[k] == index
        before = done[k - 1] if k > 0 else None
        later = done[k + 1 if own else k] if (k + 1 if own else k) < len(done) else None
        if own:
            # confirmed by the one before: a face leaving the frame (ever more cut by its
            # edge) or ever smaller is missed late, not early; the later one, if back, adds
            # its tracks (carried back) too
            if before is not None and index - before <= trust:
                return None
            gap = None if before is None else index - before
            return f"untrusted: the detection before its own {gap} frames before (trust {trust})"
        if later is not None:
            if before is not None and later - before <= trust:
                return None
            gap = None if before is None else later - before
            return f"untrusted: between detections {gap} frames apart (trust {trust})"
        if before is None:
            return "untrusted: no detection before it"
        gap = before - done[k - 2] if k > 1 else None
        if index - before <= after and gap is not None and gap <= trust:
            return None
        return (
            f"untrusted: {index - before} frames after the newest detection (extrapolate "
            f"{after}), {gap} frames after the one before (trust {trust})"
        )


class Cadence:
    """Which frames go to the detector. The worker takes the newest frame whenever it is
    free, so the stride follows the detector's speed; a minimum stride rises when frames leave
    late because the CPU is short (detection and encoding share it), never above the trust
    horizon (frames would be masked whole), and falls again when there is slack. The first
    frame after a hard cut goes at once."""

    def __init__(self, *, delay_s: float, cap: int) -> None:
        self._delay = delay_s
        self._cap = cap
        self.min_stride = 1
        self.last: int | None = None  # the last frame sent

    def due(self, index: int, cut: int | None) -> bool:
        """Whether frame ``index`` may go (``cut``: the last hard cut at or before it)."""
        last = self.last
        fresh_cut = cut is not None and (last is None or last < cut)
        return last is None or index - last >= self.min_stride or fresh_cut

    def sent(self, index: int) -> int | None:
        """Frame ``index`` went; returns the stride from the one before (None: the first)."""
        stride = None if self.last is None else index - self.last
        self.last = index
        return stride

    def adapt(self, latency: float) -> None:
        if latency > 1.5 * self._delay:
            self.min_stride = min(self.min_stride + 1, self._cap)
        elif latency < 0.7 * self._delay and self.min_stride > 1:
            self.min_stride -= 1


class LivePolicy:
    """Every decision of a live run about detection and masking, for a stream at ``rate``
    frames per second: what goes to the detector, when a held frame leaves, and how it is
    masked (:meth:`decide`). Reads ``clock`` once per call."""

    def __init__(self, config: LiveConfig, rate: Fraction, clock: Clock) -> None:
        between, after = config.trust_frames(rate)
        self._delay = config.delay_s
        self._on_outage = config.on_outage
        self._clock = clock
        self._frame_s = float(1 / rate)
        self.health = DetectorHealth(delay_s=config.delay_s)
        self.horizon = TrustHorizon(between=between, after=after)
        self.cadence = Cadence(delay_s=config.delay_s, cap=between)
        self._cuts: deque[int] = deque(maxlen=64)  # hard cuts seen (frame indices, in order)

    # ----- detection

    def cut(self, index: int) -> None:
        """Frame ``index`` starts a new shot."""
        self._cuts.append(index)

    def cut_before(self, index: int) -> int | None:
        """The last hard cut at or before frame ``index`` (None: none seen)."""
        return next((cut for cut in reversed(self._cuts) if cut <= index), None)

    def wants(self, index: int) -> bool:
        """Whether frame ``index`` (not sent yet) goes to the detector now."""
        return self.health.idle(self._clock()) and self.cadence.due(index, self.cut_before(index))

    def sent(self, index: int) -> int | None:
        """Frame ``index`` went to the detector; returns the stride (None: the first)."""
        self.health.sent(self._clock())
        return self.cadence.sent(index)

    def failed(self, error: str) -> bool:
        """A detection failed; True when it starts a run of failures."""
        return self.health.failed(error, self._clock())

    def answered(self, index: int, seconds: float) -> float | None:
        """Frame ``index``'s detection came back; returns how long the detector was down, if
        it was."""
        self.horizon.detected(index)
        return self.health.answered(seconds, self._clock())

    # ----- sending frames

    def ready(self, deadline: float, *, settled: bool, submitted: bool) -> bool:
        """Whether a held frame leaves now: its detection is back or failed (``settled``), its
        deadline has come, or, not sent to the detector itself, the next detection will not
        be back before its deadline. Otherwise it waits: a face that detection finds is then
        masked in this frame too (predicted back: the lead-in)."""
        now = self._clock()
        if settled or now >= deadline:
            return True
        if submitted:
            return False  # its own detection is on the way
        expected = self.health.next_answer_at(now, self._frame_s)
        return expected is None or expected > deadline

    def decide(self, index: int, *, detected: bool, submitted: bool, failed: bool) -> Decision:
        """How frame ``index`` is masked, as it leaves: ``detected``, its detection is back;
        ``submitted``, it was sent to the detector; ``failed``, that detection failed."""
        now = self._clock()
        gone = self.health.gone_for(now)
        untrusted = self.horizon.untrusted(index)
        if detected and untrusted is None:
            return Decision(mode=Mode.DETECTED)
        if not self.health.answered_once:
            return Decision(mode=Mode.POLICY, whole=Whole.NOT_YET, reason="no detection yet")
        if gone is not None and gone > self._delay:
            error = self.health.last_error or "no answer"
            outage = Outage(gone_s=gone, error=error, first=self.health.gone(now - gone))
            reason = f"detector unavailable for {gone:.2f} s ({error})"
            return Decision(mode=Mode.POLICY, whole=Whole.OUTAGE, reason=reason, outage=outage)
        cut = self.cut_before(index)
        newest = self.horizon.newest
        if cut is not None and (newest is None or newest < cut):
            reason = f"cut at frame {cut}, not detected since"
            return Decision(mode=Mode.POLICY, whole=Whole.CUT, reason=reason)
        if untrusted is not None:
            return Decision(mode=Mode.POLICY, whole=Whole.UNTRUSTED, reason=untrusted)
        if submitted or failed or gone is not None:
            return Decision(mode=Mode.LATE)
        return Decision(mode=Mode.TRACKED)

    def stops(self, decision: Decision) -> bool:
        """Whether the run stops after this frame (``OutagePolicy.STOP``, an outage): a frame
        masked whole for any other reason, beyond the trust horizon say, never stops it."""
        return decision.whole is Whole.OUTAGE and self._on_outage is OutagePolicy.STOP

    def adapt(self, latency: float) -> None:
        """A frame left ``latency`` seconds after it arrived: adapt the stride."""
        self.cadence.adapt(latency)
