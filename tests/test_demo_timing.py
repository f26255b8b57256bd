"""The demo's clock: estimates from the reference profile scaled by measured speed, refined from timed steps, and a
warning (with its cause) when the projection passes the promised 30 minutes."""

import pytest

from hf_llava import demo_timing
from hf_llava.demo_timing import DemoClock, StepTimer

PROFILE = {"data": 10, "tower": 100, "train": 500, "eval": 90}
BF16_PROFILE = {"data": 10, "tower": 100, "train": 300, "eval": 90}


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setitem(demo_timing.REFERENCE_SECONDS, "fp32", PROFILE)
    monkeypatch.setitem(demo_timing.REFERENCE_SECONDS, "bf16", BF16_PROFILE)
    monkeypatch.setattr(demo_timing, "MIN_EVIDENCE_SECONDS", 30)
    lines = []
    made = DemoClock(list(PROFILE), "fp32", "this CPU's kernels are AVX2: bf16 would be emulated", lines.append)
    made.lines = lines
    return made


def test_before_anything_is_timed_the_projection_is_the_reference(clock):
    assert clock.speed_ratio() == 1.0
    assert clock.projected_total() == sum(PROFILE.values())
    assert "expected ~0.2 min" in clock.before("data")
    assert not any(line.startswith("warning") for line in clock.lines)


def test_measured_stages_scale_the_rest(clock):
    clock.finish("data", 20.0)
    clock.finish("tower", 200.0)  # twice the reference so far
    assert clock.speed_ratio() == pytest.approx(2.0)
    assert clock.projected_total() == pytest.approx(220 + 2 * (500 + 90))


def test_reused_stages_count_in_the_total_but_not_as_speed_evidence(clock):
    clock.finish("data", 1.0, reused=True)
    assert clock.speed_ratio() == 1.0
    assert clock.projected_total() == pytest.approx(1 + 100 + 500 + 90)


def test_a_slow_machine_is_warned_once_with_the_cause(clock):
    clock.finish("data", 30.0)
    clock.finish("tower", 300.0)  # 3x slower: 30 + 300 + 3 * 590 = 2100 s > 30 min
    clock.before("train")
    warnings = [line for line in clock.lines if line.startswith("warning")]
    assert len(warnings) == 1
    assert "35.0 min" in warnings[0] and "3.0x as long" in warnings[0]
    assert "in fp32 (this CPU's kernels are AVX2" in warnings[0] and "11.7 min on the reference machine, 8.3 min with bf16" in warnings[0]
    clock.before("eval")
    assert len([line for line in clock.lines if line.startswith("warning")]) == 1


def test_refine_uses_the_stage_steps(clock):
    clock.finish("data", 10.0)
    clock.finish("tower", 100.0)
    line = clock.refine("train", steps_done=6, total_steps=100, elapsed=12.0, step_seconds=2.0)
    assert "~3.3 min (100 steps at 2.00 s/step)" in line  # 12 + 94 * 2 = 200 s
    assert clock.projected_total() == pytest.approx(10 + 100 + 200 + 90 * (300 / 600))


def test_step_timer_skips_the_first_step_and_reports_once(clock, monkeypatch):
    now = iter([0.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0])  # start, then the end of steps 1..8
    monkeypatch.setattr(demo_timing.time, "perf_counter", lambda: next(now))
    seen = []
    monkeypatch.setattr(clock, "refine", lambda *args: seen.append(args))
    timer = StepTimer(clock, "train", timed_steps=3, min_seconds=0)
    timer.start()
    for step in range(1, 9):
        timer.step(step, 100)
    # the first step (5 s: warm-up) is left out: steps 2-4 took 1 s each
    assert seen == [("train", 4, 100, 8.0, 1.0)]


def test_short_stages_are_not_speed_evidence(clock):
    clock.finish("data", 100.0)  # 10x its reference: a slow disk, not slow compute
    assert clock.speed_ratio() == 1.0


def test_fp32_recipes_past_the_promise_are_warned_without_blaming_the_machine(monkeypatch):
    monkeypatch.setitem(demo_timing.REFERENCE_SECONDS, "fp32", {"train": 2000})
    monkeypatch.setitem(demo_timing.REFERENCE_SECONDS, "bf16", {"train": 1000})
    lines = []
    DemoClock(["train"], "fp32", "bf16 would be emulated", lines.append).before("train")
    assert "in fp32 (bf16 would be emulated), which takes 33.3 min" in lines[-1] and "as long as" not in lines[-1]
