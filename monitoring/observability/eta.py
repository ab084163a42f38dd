"""How far along a piece of work is and when it will end: from its recent rate and the work left,
not from how many parts are left (parts differ a hundredfold in size), nor from the average since
it started (a step slows as it goes: that average was 3x optimistic on a 20,000-user sync). One
logic for the terminal's progress lines, the admin and the dashboard."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    done: int
    expected: int | None  # None: the source does not say how much there is
    rate: float  # units a second: lately while it runs, over its whole time once it ended
    eta_s: float | None  # None: unknown (no total, or nothing done yet)
    ended: bool = False

    @property
    def percent(self) -> int | None:
        """Whole percent done; never 100 before the work ended (the total may be an estimate)."""
        if not self.expected:
            return None
        return min(int(100 * self.done / self.expected), 100 if self.ended else 99)


def estimate(*, done: int, expected: int | None, elapsed_s: float | None, ended: bool, recent_rate: float | None = None) -> Estimate:
    """`recent_rate`: the work's rate lately (None: unknown yet; then the average since it began)."""
    rate = done / elapsed_s if elapsed_s and elapsed_s > 0 else 0.0
    if ended:
        return Estimate(done, expected if expected is not None else done, rate, 0.0, ended=True)
    if recent_rate:
        rate = recent_rate
    if expected is None or rate <= 0:
        return Estimate(done, expected, rate, None)
    # A total from an earlier sync may be passed: then the work is nearly done, not overdue.
    return Estimate(done, expected, rate, max(expected - done, 0) / rate)


def remaining_s(estimates: list[Estimate]) -> float | None:
    """When work going on side by side ends: its slowest part's ETA (None while any is unknown)."""
    etas = [e.eta_s for e in estimates]
    if not etas or any(eta is None for eta in etas):
        return None
    return max(etas)


def run_remaining_s(running: list[Estimate], to_come_s: list[float | None]) -> float | None:
    """When a run ends: the parts running side by side (the slowest of them), then the parts still
    to come one after another, each as long as it took last time (None while any is unknown)."""
    now = remaining_s(running) if running else 0.0
    if now is None or any(seconds is None for seconds in to_come_s):
        return None
    return now + sum(to_come_s)


def duration_words(seconds: float) -> str:
    """4 s, 2 min 05 s, 1 h 03 min: short enough for a progress line."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
