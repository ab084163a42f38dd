"""Server-rendered SVG charts of resource use: no JavaScript, no CDN.

One picture from the same samples as the numbers beside it: the machine's CPU, this run's own
CPU (never above the machine's) and memory against their ceilings (left axis, percent),
concurrency as a step line (right axis: what resources allow, the figure of the concurrency
events, and under it the provider calls allowed in flight), throttle episodes as shaded bands
from their start to their end, and point events as ticks along the time axis, which covers the
whole run in clock time. Each pixel column keeps the lowest and the highest of its samples (a
sample keeps the highest reading since the one before), so no peak is lost between two points.
Every element carries its figures on hover.
"""

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 760, 270, 52, 52, 12, 58
COLOURS = {
    "cpu": "#d9534f", "own": "#e67e22", "memory": "#337ab7", "concurrency": "#5cb85c", "rss": "#8e44ad",
    "band": "#f0ad4e", "rate": "#5bc0de",
}
EVENT_COLOURS = {"brake": "#d9534f", "stop": "#000", "emergency": "#d9534f", "pause": "#f0ad4e", "collect": "#8e44ad"}


@dataclass(frozen=True)
class Point:
    t: float  # seconds from the start
    cpu: float  # the machine's, percent
    memory: float
    concurrency: int | None = None  # None: no concurrency line
    rss: float | None = None  # resident memory, percent of its ceiling; None: no RSS line
    own: float | None = None  # this run's own CPU, percent of the machine; None: no line
    cpu_peak: float | None = None  # the machine's highest reading since the point before (None: cpu)
    calls: int | None = None  # provider calls allowed in flight; None: no such line


@dataclass(frozen=True)
class Mark:
    t: float
    kind: str
    text: str


@dataclass(frozen=True)
class Band:
    start: float
    end: float
    kind: str  # "throttle" or "rate"
    text: str


def _x(t: float, span: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (t / span if span else 0)


def _y(percent: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - min(max(percent, 0), 100) / 100)


def time_ticks(span: float, start: datetime | None = None) -> list[float]:
    """Five to ten round steps (1, 2, 5 × 10^n seconds, or 15 s, 30 s, minutes) across the span: from
    0, or, with a start in clock time, at round clock times."""
    raw = span / 6 if span > 0 else 1
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if start is None:
        return [n * step for n in range(int(span / step + 1e-9) + 1)]
    if step >= 1:
        step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 86400) if s >= raw)
    first = (-start.timestamp()) % step  # seconds from the start to the first round clock time
    return [first + n * step for n in range(int((span - first) / step + 1e-9) + 1)]


def time_label(seconds: float, start: datetime | None = None, tenths: bool = False) -> str:
    """A tick's label: clock time (with tenths of a second on an axis of less than a few seconds),
    else the seconds since the start."""
    if start is not None:
        moment = start + timedelta(seconds=seconds)
        return moment.strftime("%H:%M:%S") + (f".{moment.microsecond // 100_000}" if tenths else "")
    if seconds < 60:
        return f"{seconds:g} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def columns(points: Sequence[Point], span: float, value, peak=None) -> list[tuple[float, float, float, float]]:
    """(x, mean, lowest, highest) of the points in each pixel column, left to right: a column keeps
    its extremes whatever the number of points (`peak`: the highest a point saw, when it says)."""
    grouped: dict[int, list[Point]] = defaultdict(list)
    for p in points:
        grouped[round(_x(p.t, span))].append(p)
    out = []
    for x in sorted(grouped):
        values = [value(p) for p in grouped[x]]
        highs = [max(v, peak(p)) if peak and peak(p) is not None else v for v, p in zip(values, grouped[x])]
        out.append((float(x), sum(values) / len(values), min(values), max(highs)))
    return out


def _means(cols, colour: str, title: str, dash: str = "") -> str:
    """A line through each pixel column's mean."""
    return _line(((x, _y(mean)) for x, mean, _, _ in cols), colour, title, dash)


def _range(cols, colour: str, title: str) -> str:
    """A column's lowest to highest as a shaded range, for a series whose points may hide peaks."""
    if not any(high > low for _, _, low, high in cols):
        return ""
    top = " ".join(f"{x:.1f},{_y(high):.1f}" for x, _, _, high in cols)
    bottom = " ".join(f"{x:.1f},{_y(low):.1f}" for x, _, low, _ in reversed(cols))
    if len(cols) == 1:  # one column: a vertical stroke
        x, _, low, high = cols[0]
        return f'<line class="range" x1="{x:.1f}" x2="{x:.1f}" y1="{_y(low):.1f}" y2="{_y(high):.1f}" stroke="{colour}" stroke-width="3" stroke-opacity="0.35"><title>{escape(title)}</title></line>'
    return f'<polygon class="range" fill="{colour}" fill-opacity="0.2" stroke="none" points="{top} {bottom}"><title>{escape(title)}</title></polygon>'


def _line(values, colour: str, title: str, dash: str = "", width: float = 1.6) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in values)
    return f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="{width}" {dash} points="{coords}"><title>{escape(title)}</title></polyline>'


def resource_chart(
    points: Sequence[Point], marks: Sequence[Mark], *, cpu_ceiling: float, memory_ceiling: float, bands: Sequence[Band] = (),
    label: str = "Resources over the run", start: datetime | None = None, span: float | None = None,
) -> SafeString:
    """`start`: the clock time of t = 0 (the axis then reads clock time); `span`: the seconds the
    axis covers (the whole run), else as far as the points, marks and bands go."""
    if not points:
        return mark_safe('<p class="help">No resource samples for this run.</p>')
    span = max(span or 0.0, max(p.t for p in points), max((m.t for m in marks), default=0), max((b.end for b in bands), default=0), 1e-3)
    with_concurrency = any(p.concurrency is not None for p in points)
    top_concurrency = max(max((p.concurrency or 0) for p in points), max((p.calls or 0) for p in points), 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ballast-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'role="img" aria-label="{escape(label)}">',
    ]
    for band in bands:  # under everything else
        x0, x1 = _x(band.start, span), _x(max(band.end, band.start), span)
        parts.append(
            f'<rect class="episode" x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 1.5):.1f}" height="{plot_h}" '
            f'fill="{COLOURS["rate" if band.kind == "rate" else "band"]}" fill-opacity="0.18">'
            f"<title>{escape(band.kind)} {band.start:.1f}–{band.end:.1f} s: {escape(band.text)}</title></rect>"
        )
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>')
    for percent in (0, 25, 50, 75, 100):  # left axis
        y = _y(percent)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{percent}%</text>')
    parts.append(
        f'<text class="axis-title" x="12" y="{TOP + plot_h / 2:.1f}" font-size="10" text-anchor="middle" '
        f'transform="rotate(-90 12 {TOP + plot_h / 2:.1f})">% of the machine</text>'
    )
    if with_concurrency:  # right axis
        step = max(1, math.ceil(top_concurrency / 4))
        for value in range(0, top_concurrency + 1, step):
            parts.append(f'<text x="{WIDTH - RIGHT + 4}" y="{_y(100 * value / top_concurrency) + 3:.1f}" font-size="10">{value}</text>')
        parts.append(
            f'<text class="axis-title" x="{WIDTH - 10}" y="{TOP + plot_h / 2:.1f}" font-size="10" text-anchor="middle" '
            f'transform="rotate(90 {WIDTH - 10} {TOP + plot_h / 2:.1f})">concurrency</text>'
        )
    ticks = time_ticks(span, start)
    tenths = len(ticks) > 1 and ticks[1] - ticks[0] < 1
    for t in ticks:  # time axis
        x = _x(t, span)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 4}" stroke="#999"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" font-size="10" text-anchor="middle">{time_label(t, start, tenths)}</text>')
    axis = "time" if start is not None else "time since the start"
    parts.append(f'<text class="axis-title" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - BOTTOM + 27}" font-size="10" text-anchor="middle">{axis}</text>')
    for ceiling, name in ((cpu_ceiling, "cpu"), (memory_ceiling, "memory")):
        parts.append(
            f'<line class="ceiling" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_y(ceiling):.1f}" y2="{_y(ceiling):.1f}" '
            f'stroke="{COLOURS[name]}" stroke-dasharray="5,4" stroke-width="1"><title>{name} ceiling {ceiling:.0f}%</title></line>'
        )
    cpu = columns(points, span, lambda p: p.cpu, lambda p: p.cpu_peak)
    parts.append(_range(cpu, COLOURS["cpu"], f"machine CPU, lowest to highest reading: peak {max(c[3] for c in cpu):.0f}%"))
    parts.append(_means(cpu, COLOURS["cpu"], "machine CPU %"))
    if any(p.own is not None for p in points):
        parts.append(_means(columns(points, span, lambda p: p.own or 0.0), COLOURS["own"], "this run's CPU %", 'stroke-dasharray="4,2"'))
    parts.append(_means(columns(points, span, lambda p: p.memory), COLOURS["memory"], "memory %"))
    if any(p.rss is not None for p in points):
        parts.append(_means(columns(points, span, lambda p: p.rss or 0.0), COLOURS["rss"], "RSS % of its ceiling", 'stroke-dasharray="2,2"'))
    if with_concurrency:
        parts.append(_line(_steps(points, span, lambda p: p.concurrency or 0, top_concurrency), COLOURS["concurrency"],
                           "concurrency: what resources allow", width=1.4))
        if any(p.calls is not None for p in points):
            parts.append(_line(_steps(points, span, lambda p: p.calls or 0, top_concurrency), COLOURS["concurrency"],
                               "provider calls allowed in flight", 'stroke-dasharray="1,2"', width=1.4))
    for mark in marks:
        x = _x(mark.t, span)
        parts.append(
            f'<line class="event" x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM - 8}" y2="{HEIGHT - BOTTOM}" '
            f'stroke="{EVENT_COLOURS.get(mark.kind, "#777")}" stroke-width="2"><title>{escape(mark.kind)} at {mark.t:.1f} s: {escape(mark.text)}</title></line>'
        )
    legend = [("machine CPU", "cpu", "line")]
    legend += [("this run's CPU", "own", "line")] if any(p.own is not None for p in points) else []
    legend += [("memory", "memory", "line")]
    legend += [("RSS % of ceiling", "rss", "line")] if any(p.rss is not None for p in points) else []
    legend += [("concurrency", "concurrency", "line")] if with_concurrency else []
    legend += [("calls in flight", "concurrency", "dot")] if any(p.calls is not None for p in points) else []
    legend += [("ceilings", "cpu", "dash"), ("throttled", "band", "box")]
    legend += [("provider pushing back", "rate", "box")] if any(b.kind == "rate" for b in bands) else []
    x = LEFT
    for text, key, shape in legend:
        y = HEIGHT - 10
        if shape == "box":
            parts.append(f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{COLOURS[key]}" fill-opacity="0.35"/>')
        else:
            dash = {"dash": ' stroke-dasharray="3,2"', "dot": ' stroke-dasharray="1,2"'}.get(shape, "")
            parts.append(f'<line x1="{x}" x2="{x + 12}" y1="{y - 3}" y2="{y - 3}" stroke="{COLOURS[key]}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{x + 15}" y="{y}" font-size="10">{text}</text>')
        x += 26 + 6.2 * len(text)
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _steps(points: Sequence[Point], span: float, value, top: int) -> list[tuple[float, float]]:
    """A step line: each value held until the next point."""
    steps = []
    for previous, point in zip(points, points[1:]):
        level = _y(100 * value(previous) / top)
        steps += [(_x(previous.t, span), level), (_x(point.t, span), level)]
    steps.append((_x(points[-1].t, span), _y(100 * value(points[-1]) / top)))
    return steps


def _recent_sum(latest: dict, now: float, fresh_s: float = 2.5) -> float:
    """Add up the latest figure of each step (or process) still sampling: samples come every second."""
    return sum(value for at, value in latest.values() if now - at <= fresh_s)


def owner_chart(owner: str, *, cpu_ceiling: float, memory_ceiling: float, started_at: datetime | None = None,
                ended_at: datetime | None = None) -> SafeString:
    """The chart of everything recorded for one owner (a run): its samples, episodes and events,
    from its start to its end (else its first and last sample)."""
    from monitoring.models import ResourceSample, ThrottleEvent

    samples = list(ResourceSample.objects.filter(owner=owner).order_by("at").values(
        "at", "route", "pid", "cpu_percent", "cpu_peak_percent", "process_cpu_percent", "memory_percent", "concurrency", "calls_allowed",
    ))
    events = list(ThrottleEvent.objects.filter(owner=owner).order_by("created_at"))
    if not samples:
        return resource_chart([], [], cpu_ceiling=cpu_ceiling, memory_ceiling=memory_ceiling)
    start = min(started_at or samples[0]["at"], samples[0]["at"])
    # Steps run side by side: their concurrency adds up, each step's holding from its sample to its
    # next, until its last (its end: a route's governor samples as it closes), and so does their
    # CPU, but steps in one process share one figure, and a CPU figure is of its moment.
    ends = {s["route"]: (s["at"] - start).total_seconds() for s in samples}
    concurrency: dict[str, int] = {}
    calls: dict[str, int] = {}
    own: dict = {}
    points = []
    for s in samples:
        t = (s["at"] - start).total_seconds()
        concurrency[s["route"]] = s["concurrency"]
        if s["calls_allowed"] is not None:
            calls[s["route"]] = s["calls_allowed"]
        own[s["pid"] or s["route"]] = (t, s["process_cpu_percent"])
        going = [route for route, end in ends.items() if end >= t and route in concurrency]
        points.append(Point(
            t, s["cpu_percent"], s["memory_percent"], sum(concurrency[r] for r in going),
            own=min(_recent_sum(own, t), s["cpu_percent"]),  # processes read a moment apart: never more than the machine
            cpu_peak=s["cpu_peak_percent"], calls=sum(calls.get(r, 0) for r in going) if calls else None,
        ))
    bands, marks = [], []
    for e in events:
        t = max((e.created_at - start).total_seconds(), 0)
        if e.is_episode:
            bands.append(Band(t, t + e.duration_s, e.kind, f"{e.route}: {e.detail}"))
        else:
            marks.append(Mark(t, e.kind, f"{e.route}: {e.detail}"))
    end = ended_at or (timezone.now() if started_at else samples[-1]["at"])  # a running run: up to now
    span = (end - start).total_seconds()
    return resource_chart(points, marks, bands=bands, cpu_ceiling=cpu_ceiling, memory_ceiling=memory_ceiling,
                          start=timezone.localtime(start), span=span)
