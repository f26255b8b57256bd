"""The demo's clock: an estimate before each stage, a better one after its first timed steps, and a warning with the
reason when the whole demo will take longer than it promises.

Design notes
- Before a stage runs, its time is the reference machine's time for that stage (`REFERENCE_SECONDS`, measured with
  the shipped recipes, per precision) scaled by how much slower or faster this machine has been so far (the ratio of
  measured to reference seconds over the stages timed here). So the projection improves as stages finish.
- A training stage refines its own estimate from its first timed steps (the very first step is left out: it pays
  for allocation and kernel selection): elapsed + remaining steps x mean step time. That also updates the speed
  ratio, so the projected total is printed again.
- The warning names the cause it can see: the speed ratio against the reference machine, and whether bf16 was left
  out because this CPU would emulate it.
"""

from __future__ import annotations

import time

PROMISED_MINUTES = 30
# stages shorter than this on the reference machine (building the data, the chat) say more about disk and start-up
# than about compute speed: they are not used to scale the others
MIN_EVIDENCE_SECONDS = 30
# Seconds per stage of `make demo` with the shipped recipes on the reference machine (2 cores, AMD EPYC with
# AVX512-BF16), per precision the demo may pick: full runs and timed steps, dated in docs/demo.md. Update them when a
# recipe changes what a stage costs.
REFERENCE_MACHINE = "2-core AMD EPYC with native bf16"
REFERENCE_SECONDS = {
    "fp32": {"data": 7, "tower": 127, "stage1-pretrain": 552, "stage2-finetune": 1150, "eval": 150, "chat": 4},
    "bf16": {"data": 7, "tower": 127, "stage1-pretrain": 552, "stage2-finetune": 831, "eval": 150, "chat": 4},
}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


class DemoClock:
    """Keeps the measured seconds of finished stages and projects the rest from the reference profile."""

    def __init__(self, stages: list[str], precision: str, precision_reason: str = "", print_fn=print):
        self.stages = list(stages)
        self.reference = REFERENCE_SECONDS[precision]
        self.precision, self.precision_reason = precision, precision_reason
        self.done: dict[str, float] = {}  # stage -> measured seconds (reused stages are not timed here)
        self.timed: dict[str, float] = {}  # stage -> measured seconds of stages that ran here (speed evidence)
        self.current: tuple[str, float] | None = None  # the running stage and its refined estimate
        self.print = print_fn
        self._warned = False

    def speed_ratio(self) -> float:
        """Measured / reference seconds over what was timed here (1.0 before anything was): > 1 means slower."""
        measured = dict(self.timed)
        if self.current is not None:
            measured[self.current[0]] = self.current[1]
        measured = {name: seconds for name, seconds in measured.items()
                    if self.reference[name] >= MIN_EVIDENCE_SECONDS}
        reference = sum(self.reference[name] for name in measured)
        return sum(measured.values()) / reference if reference else 1.0

    def projected_total(self) -> float:
        """Seconds the whole demo will take: finished stages as measured, the running one as estimated, the rest
        as the reference scaled by the speed ratio."""
        ratio = self.speed_ratio()
        total = 0.0
        for name in self.stages:
            if name in self.done:
                total += self.done[name]
            elif self.current is not None and self.current[0] == name:
                total += self.current[1]
            else:
                total += self.reference[name] * ratio
        return total

    def so_far(self) -> float:
        return sum(self.done.values())

    def before(self, name: str) -> str:
        """The line printed before stage `name` runs; warns when the projection passes the promise."""
        estimate = self.reference[name] * self.speed_ratio()
        self.current = None
        line = (f"  expected ~{minutes(estimate)}; demo so far {minutes(self.so_far())}, "
                f"projected total {minutes(self.projected_total())}")
        self.print(line)
        self._maybe_warn()
        return line

    def refine(self, name: str, steps_done: int, total_steps: int, elapsed: float, step_seconds: float) -> str:
        """After a stage's first timed steps: its estimate from them, the updated projection (and a warning)."""
        estimate = elapsed + step_seconds * max(total_steps - steps_done, 0)
        self.current = (name, estimate)
        line = (f"  {name}: ~{minutes(estimate)} ({total_steps} steps at {step_seconds:.2f} s/step); demo so far "
                f"{minutes(self.so_far() + elapsed)}, projected total {minutes(self.projected_total())}")
        self.print(line)
        self._maybe_warn()
        return line

    def finish(self, name: str, seconds: float, reused: bool = False) -> None:
        self.current = None
        self.done[name] = seconds
        if not reused:
            self.timed[name] = seconds

    def warning(self) -> str | None:
        """Why the demo will pass its promised time, or None when it will not."""
        total = self.projected_total()
        if total <= PROMISED_MINUTES * 60:
            return None
        ratio = self.speed_ratio()
        causes = []
        if ratio >= 1.1:
            causes.append(f"this machine runs the demo's stages {ratio:.1f}x as long as the reference "
                          f"({REFERENCE_MACHINE}): fewer or slower cores, or other programs using them")
        fp32, bf16 = (sum(REFERENCE_SECONDS[name].values()) for name in ("fp32", "bf16"))
        if self.precision == "fp32" and fp32 > bf16:
            reason = f" ({self.precision_reason})" if self.precision_reason else ""
            causes.append(f"it trains in fp32{reason}, which takes {minutes(fp32)} on the reference machine, "
                          f"{minutes(bf16)} with bf16")
        if not causes:
            causes.append("the recipes' steps take that long here")
        return (f"warning: the demo will take about {minutes(total)}, more than the {PROMISED_MINUTES} minutes it "
                f"is meant to: " + "; ".join(causes))

    def _maybe_warn(self) -> None:
        message = self.warning()
        if message and not self._warned:
            self._warned = True
            self.print(message)


class StepTimer:
    """Calls `clock.refine` once, after `timed_steps` steps past the first (and at least `min_seconds` of them). Any
    training loop can drive it: `start()` before the first step (else the first call starts it), then
    `step(steps_done, total_steps)` after each."""

    def __init__(self, clock: DemoClock, name: str, timed_steps: int = 5, min_seconds: float = 10.0):
        self.clock, self.name = clock, name
        self.timed_steps, self.min_seconds = timed_steps, min_seconds
        self.begin = self.first_step_end = self.first_step = None
        self.reported = False

    def start(self) -> None:
        self.begin = time.perf_counter()

    def step(self, steps_done: int, total_steps: int) -> None:
        now = time.perf_counter()
        if self.begin is None:
            self.begin = now
        if self.first_step_end is None:
            self.first_step_end, self.first_step = now, steps_done
            return
        timed = steps_done - self.first_step
        if self.reported or timed < self.timed_steps or now - self.first_step_end < self.min_seconds:
            return
        self.reported = True
        self.clock.refine(self.name, steps_done, total_steps, now - self.begin, (now - self.first_step_end) / timed)


def step_estimate_callback(clock: DemoClock, name: str, **timer_kwargs):
    """A transformers TrainerCallback that drives a StepTimer over the Trainer's steps."""
    from transformers import TrainerCallback

    class StepEstimate(TrainerCallback):
        timer = StepTimer(clock, name, **timer_kwargs)

        def on_train_begin(self, args, state, control, **kwargs):
            self.timer.start()

        def on_step_end(self, args, state, control, **kwargs):
            self.timer.step(state.global_step, state.max_steps)

    return StepEstimate()
