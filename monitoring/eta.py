"""How far along a piece of work is and when it will end: from the rate so far and the work left,
not from how many parts are left (parts differ a hundredfold in size). One logic for the
terminal's progress lines and the dashboard."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    done: int
    expected: int | None  # None: the source does not say how much there is
    rate: float  # units a second, over the work's whole elapsed time
    eta_s: float | None  # None: unknown (no total, or nothing done yet)
    ended: bool = False

    @property
    def percent(self) -> int | None:
        """Whole percent done; never 100 before the work ended (the total may be an estimate)."""
        if not self.expected:
            return None
        return min(int(100 * self.done / self.expected), 100 if self.ended else 99)


def estimate(*, done: int, expected: int | None, elapsed_s: float | None, ended: bool) -> Estimate:
    rate = done / elapsed_s if elapsed_s and elapsed_s > 0 else 0.0
    if ended:
        return Estimate(done, expected if expected is not None else done, rate, 0.0, ended=True)
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


def duration_words(seconds: float) -> str:
    """4 s, 2 min 05 s, 1 h 03 min: short enough for a progress line."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
