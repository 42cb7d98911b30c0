"""``veil live``'s policy (``veil.live._policy``) on its own: no sockets, no frames, a fake
clock. What decides that a live frame is masked from its detection, from predictions, or
whole, when the detector is declared gone and back, and what stops a run (issue 15)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from veil.live import LiveConfig, OutagePolicy
from veil.live._policy import (
    Cadence,
    DetectorHealth,
    Health,
    LivePolicy,
    Mode,
    TrustHorizon,
    Whole,
)

RATE = Fraction(25)  # trust horizons (3, 1) frames with the default trust_s, extrapolate_s


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _policy(
    clock: FakeClock, *, on_outage: OutagePolicy = OutagePolicy.MASK, delay_s: float = 0.2
) -> LivePolicy:
    return LivePolicy(LiveConfig(delay_s=delay_s, on_outage=on_outage), RATE, clock)


def _detect(policy: LivePolicy, clock: FakeClock, index: int, seconds: float = 0.02) -> None:
    """Frame ``index`` sent to the detector and back after ``seconds``."""
    policy.sent(index)
    clock.advance(seconds)
    assert policy.answered(index, seconds) is None


def _running(clock: FakeClock, **kwargs: object) -> LivePolicy:
    """A policy whose detector answered frames 0, 1 and 2, each in 20 ms."""
    policy = _policy(clock, **kwargs)  # type: ignore[arg-type]
    for index in range(3):
        _detect(policy, clock, index)
    return policy


# --------------------------------------------------------------------------------------------
# the trust horizon


@pytest.mark.parametrize(
    ("rate", "trust_s", "extrapolate_s", "frames"),
    [
        (Fraction(25), 0.12, 0.04, (3, 1)),
        (Fraction(30000, 1001), 0.12, 0.04, (3, 1)),
        (Fraction(60), 0.12, 0.04, (7, 2)),
        (Fraction(10), 0.12, 0.04, (1, 0)),  # at least one frame between, may be 0 after
        (Fraction(25), 0.12, 0.0, (3, 0)),
        (Fraction(25), 0.4, 0.4, (10, 10)),
    ],
)
def test_trust_horizon_in_whole_frames(
    rate: Fraction, trust_s: float, extrapolate_s: float, frames: tuple[int, int]
) -> None:
    config = LiveConfig(trust_s=trust_s, extrapolate_s=extrapolate_s)
    assert config.trust_frames(rate) == frames


@pytest.mark.parametrize(
    ("done", "index", "why"),
    [
        # its own detection and the one before it at most 3 frames apart
        ([0, 3], 3, None),
        ([0, 4], 4, "untrusted: the detection before its own 4 frames before (trust 3)"),
        ([0], 0, "untrusted: the detection before its own None frames before (trust 3)"),
        # between two detections (the later one's boxes carried back)
        ([0, 3], 1, None),
        ([0, 5], 2, "untrusted: between detections 5 frames apart (trust 3)"),
        ([5], 2, "untrusted: between detections None frames apart (trust 3)"),
        # after the newest: within 1 frame of it, and it within 3 of the one before
        ([0, 3], 4, None),
        (
            [0, 3],
            5,
            "untrusted: 2 frames after the newest detection (extrapolate 1), 3 frames after "
            "the one before (trust 3)",
        ),
        (
            [0, 4],
            5,
            "untrusted: 1 frames after the newest detection (extrapolate 1), 4 frames after "
            "the one before (trust 3)",
        ),
        (
            [3],
            4,
            "untrusted: 1 frames after the newest detection (extrapolate 1), None frames "
            "after the one before (trust 3)",
        ),
        ([], 0, "untrusted: no detection before it"),
    ],
)
def test_trust_horizon_decisions(done: list[int], index: int, why: str | None) -> None:
    horizon = TrustHorizon(between=3, after=1)
    for frame in done:
        horizon.detected(frame)
    assert horizon.untrusted(index) == why


def test_a_detection_back_out_of_order_is_not_a_newer_one() -> None:
    horizon = TrustHorizon(between=3, after=1)
    for frame in (0, 3, 2):
        horizon.detected(frame)
    assert horizon.newest == 3
    assert horizon.untrusted(2) is None  # between 0 and 3, not its own


# --------------------------------------------------------------------------------------------
# how a frame is masked


def test_no_detection_yet_masks_whole() -> None:
    clock = FakeClock()
    policy = _policy(clock)
    decision = policy.decide(0, detected=False, submitted=True, failed=False)
    assert (decision.mode, decision.whole, decision.reason) == (
        Mode.POLICY,
        Whole.NOT_YET,
        "no detection yet",
    )
    assert not policy.stops(decision)


def test_modes_within_the_horizon() -> None:
    clock = FakeClock()
    policy = _running(clock)
    # its own detection, the one before 1 frame earlier
    assert policy.decide(2, detected=True, submitted=True, failed=False).mode is Mode.DETECTED
    # not sent to the detector, 1 frame after the newest: predictions
    assert policy.decide(3, detected=False, submitted=False, failed=False).mode is Mode.TRACKED
    # sent, its detection not back by its deadline (or failed): grown predictions
    assert policy.decide(3, detected=False, submitted=True, failed=False).mode is Mode.LATE
    assert policy.decide(3, detected=False, submitted=True, failed=True).mode is Mode.LATE
    # beyond the extrapolation horizon: whole, and not an outage
    decision = policy.decide(4, detected=False, submitted=False, failed=False)
    assert (decision.mode, decision.whole) == (Mode.POLICY, Whole.UNTRUSTED)
    assert decision.reason is not None and decision.reason.startswith("untrusted: 2 frames")


def test_a_detection_beyond_the_horizon_is_not_trusted_either() -> None:
    clock = FakeClock()
    policy = _policy(clock)
    _detect(policy, clock, 0)
    _detect(policy, clock, 5)
    decision = policy.decide(5, detected=True, submitted=True, failed=False)
    assert (decision.mode, decision.whole) == (Mode.POLICY, Whole.UNTRUSTED)


def test_a_hard_cut_masks_whole_until_a_detection_at_or_after_it_is_back() -> None:
    """Issue 18: the old shot's tracks say nothing of the new one's faces."""
    clock = FakeClock()
    policy = _running(clock)
    policy.cut(3)
    for index in (3, 4):
        decision = policy.decide(index, detected=False, submitted=False, failed=False)
        assert (decision.mode, decision.whole) == (Mode.POLICY, Whole.CUT)
        assert decision.reason == "cut at frame 3, not detected since"
    # the first frame after the cut goes to the detector at once, whatever the stride
    policy.cadence.min_stride = 3
    assert policy.wants(3)
    _detect(policy, clock, 3)
    assert policy.decide(3, detected=True, submitted=True, failed=False).mode is Mode.DETECTED
    assert policy.decide(4, detected=False, submitted=False, failed=False).mode is Mode.TRACKED


# --------------------------------------------------------------------------------------------
# the detector failing, silent, and back: the outage state machine


def test_detector_failing_then_back() -> None:
    clock = FakeClock()
    policy = _running(clock, delay_s=0.5)  # frames 0..2 detected
    health = policy.health
    assert health.state is Health.UP
    policy.sent(3)
    clock.advance(0.05)
    assert policy.failed("DetectorError: refused") is True  # the record's detector_error
    assert health.state is Health.FAILING
    # backing off: nothing is sent until the retry time (0.2 s after the first failure)
    assert not policy.wants(4)
    clock.advance(0.1)
    assert not policy.wants(4)
    clock.advance(0.15)
    assert policy.wants(4)
    policy.sent(4)
    assert policy.failed("DetectorError: refused") is False  # the same run of failures
    # failing for less than the delay: predictions, grown (its frame's detection failed)
    decision = policy.decide(3, detected=False, submitted=True, failed=True)
    assert decision.mode is Mode.LATE
    # failing for longer than the delay: an outage, masked whole, declared once
    clock.advance(0.3)  # 0.55 s since the first failure
    first = policy.decide(5, detected=False, submitted=False, failed=False)
    assert (first.mode, first.whole) == (Mode.POLICY, Whole.OUTAGE)
    assert first.reason == "detector unavailable for 0.55 s (DetectorError: refused)"
    assert first.outage is not None and first.outage.first  # the record's detector_gone
    assert first.outage.error == "DetectorError: refused"
    assert health.state is Health.GONE
    clock.advance(0.04)
    again = policy.decide(6, detected=False, submitted=False, failed=False)
    assert again.outage is not None and not again.outage.first
    assert again.reason == "detector unavailable for 0.59 s (DetectorError: refused)"
    # back: how long it was down, from its first failure (the record's detector_back)
    clock.advance(1.0)
    policy.sent(7)
    clock.advance(0.01)
    assert policy.answered(7, 0.01) == pytest.approx(1.6)
    assert health.state is Health.UP
    assert policy.answered(8, 0.01) is None  # back once only


def test_a_silent_detector_is_gone_after_its_usual_time_and_the_delay() -> None:
    """Silent (a hung call, a dead server): gone once max(delay, 3 x its usual time) has
    passed with a job in flight, an outage once that lasts longer than the delay."""
    clock = FakeClock()
    policy = _running(clock)  # its usual time 20 ms: silent after the delay, 0.2 s
    policy.sent(3)
    clock.advance(0.15)
    assert policy.health.gone_for(clock.now) is None
    assert policy.decide(3, detected=False, submitted=True, failed=False).mode is Mode.LATE
    clock.advance(0.1)  # silent 0.05 s past its time: gone, not yet an outage
    assert policy.health.gone_for(clock.now) == pytest.approx(0.05)
    assert policy.decide(3, detected=False, submitted=True, failed=False).mode is Mode.LATE
    clock.advance(0.2)
    decision = policy.decide(4, detected=False, submitted=False, failed=False)
    assert decision.whole is Whole.OUTAGE
    assert decision.reason == "detector unavailable for 0.25 s (no answer)"
    assert policy.health.state is Health.GONE
    # a failure while gone is recorded (it starts a run of failures), the state stays gone
    assert policy.failed("TimeoutError: deadline") is True
    assert policy.health.state is Health.GONE
    clock.advance(0.5)
    policy.sent(9)
    clock.advance(0.01)
    # down from when it went silent (0.2 s after frame 3 was sent), not from the failure
    assert policy.answered(9, 0.01) == pytest.approx(0.76)


def test_the_last_error_names_a_later_silence_too() -> None:
    clock = FakeClock()
    policy = _running(clock)
    policy.sent(3)
    policy.failed("DetectorError: once")
    clock.advance(0.3)
    policy.sent(4)
    clock.advance(0.02)
    assert policy.answered(4, 0.02) == pytest.approx(0.32)  # back
    policy.sent(5)
    clock.advance(0.45)
    decision = policy.decide(5, detected=False, submitted=True, failed=False)
    assert decision.reason == "detector unavailable for 0.25 s (DetectorError: once)"


@pytest.mark.parametrize(
    ("on_outage", "stops"), [(OutagePolicy.MASK, False), (OutagePolicy.STOP, True)]
)
def test_outage_policies_mask_or_stop(on_outage: OutagePolicy, stops: bool) -> None:
    """Both mask the frame whole; only ``stop`` stops the run, and only on an outage."""
    clock = FakeClock()
    policy = _running(clock, on_outage=on_outage)
    untrusted = policy.decide(9, detected=False, submitted=False, failed=False)
    assert untrusted.whole is Whole.UNTRUSTED and not policy.stops(untrusted)
    policy.cut(10)
    cut = policy.decide(10, detected=False, submitted=False, failed=False)
    assert cut.whole is Whole.CUT and not policy.stops(cut)
    policy.sent(3)
    policy.failed("DetectorError: gone")
    clock.advance(0.3)
    outage = policy.decide(3, detected=False, submitted=True, failed=True)
    assert (outage.mode, outage.whole) == (Mode.POLICY, Whole.OUTAGE)
    assert policy.stops(outage) is stops


# --------------------------------------------------------------------------------------------
# when frames go to the detector, and when held frames leave


def test_one_job_in_flight_and_the_stride() -> None:
    clock = FakeClock()
    policy = _policy(clock)
    assert policy.wants(0)
    assert policy.sent(0) is None  # the first: no stride yet
    assert not policy.wants(1)  # one in flight
    clock.advance(0.02)
    policy.answered(0, 0.02)
    policy.cadence.min_stride = 3
    assert not policy.wants(2)
    assert policy.wants(3)
    assert policy.sent(3) == 3


def test_the_stride_adapts_to_latency_never_beyond_the_horizon() -> None:
    cadence = Cadence(delay_s=0.2, cap=3)
    for _ in range(5):
        cadence.adapt(0.31)  # later than 1.5 x the delay
    assert cadence.min_stride == 3
    cadence.adapt(0.2)  # between: unchanged
    assert cadence.min_stride == 3
    cadence.adapt(0.13)  # slack
    cadence.adapt(0.13)
    cadence.adapt(0.13)
    assert cadence.min_stride == 1


def test_a_held_frame_waits_only_for_a_detection_due_before_its_deadline() -> None:
    clock = FakeClock()
    policy = _running(clock)  # its usual time 20 ms, idle
    deadline = clock.now + 0.2
    # idle: the next detection (a frame from now, then 20 ms) is due before the deadline
    assert not policy.ready(deadline, settled=False, submitted=False)
    assert policy.ready(clock.now + 0.05, settled=False, submitted=False)
    # its own detection back or failed: it leaves; its own on the way: it waits
    assert policy.ready(deadline, settled=True, submitted=True)
    assert not policy.ready(deadline, settled=False, submitted=True)
    # the deadline came
    clock.advance(0.2)
    assert policy.ready(deadline, settled=False, submitted=True)


def test_a_held_frame_does_not_wait_on_a_failing_detector() -> None:
    clock = FakeClock()
    policy = _running(clock)
    policy.sent(3)
    policy.failed("DetectorError: x")
    assert policy.ready(clock.now + 0.2, settled=False, submitted=False)


def test_a_held_frame_does_not_wait_before_the_first_answer() -> None:
    clock = FakeClock()
    policy = _policy(clock)
    assert policy.ready(clock.now + 0.2, settled=False, submitted=False)


def test_health_is_pure() -> None:
    """The state machine reads no clock: the same calls at the same times, the same answers."""
    runs = []
    for _ in range(2):
        health = DetectorHealth(delay_s=0.2)
        health.sent(1.0)
        health.answered(0.05, 1.05)
        health.sent(2.0)
        trace = [health.gone_for(t) for t in (2.1, 2.2, 2.3)]
        trace.append(health.gone(2.2))
        trace.append(health.answered(0.5, 2.5))
        runs.append(trace)
    assert runs[0] == runs[1]
    assert runs[0][:2] == [None, None]
    assert runs[0][2] == pytest.approx(0.1)
    assert runs[0][3] is True
    assert runs[0][4] == pytest.approx(0.3)
