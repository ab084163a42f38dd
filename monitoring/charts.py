"""Server-rendered SVG charts of resource use over a run: no JavaScript, no CDN."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 760, 240, 40, 40, 12, 28
COLOURS = {"cpu": "#d9534f", "memory": "#337ab7", "concurrency": "#5cb85c", "rss": "#8e44ad", "ceiling": "#999"}
EVENT_COLOURS = {"brake": "#d9534f", "stop": "#000", "emergency": "#d9534f", "throttle": "#f0ad4e", "recovery": "#5cb85c"}


@dataclass(frozen=True)
class Point:
    t: float  # seconds from the start
    cpu: float
    memory: float
    concurrency: int | None = None  # None: no concurrency line
    rss: float | None = None  # resident memory, percent of its ceiling; None: no RSS line


@dataclass(frozen=True)
class Mark:
    t: float
    kind: str
    text: str


def _x(t: float, span: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * (t / span if span else 0)


def _y(percent: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - min(max(percent, 0), 100) / 100)


def resource_chart(points: Sequence[Point], marks: Sequence[Mark], *, cpu_ceiling: float, memory_ceiling: float) -> SafeString:
    """CPU and memory (percent, left axis), their ceilings dashed, concurrency as a step line
    (right axis) and governor events as ticks along the bottom, each with its text on hover."""
    if not points:
        return mark_safe('<p class="help">No resource samples for this run.</p>')
    span = max(max(p.t for p in points), max((m.t for m in marks), default=0), 1e-3)
    top_concurrency = max(max(p.concurrency or 0 for p in points), 1)
    with_concurrency = any(p.concurrency is not None for p in points)

    def line(values, colour, dash=""):
        coords = " ".join(f"{_x(t, span):.1f},{_y(v):.1f}" for t, v in values)
        return f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" {dash} points="{coords}"/>'

    step_coords = []
    for previous, point in zip(points, points[1:]):
        level = _y(100 * (previous.concurrency or 0) / top_concurrency)
        step_coords += [f"{_x(previous.t, span):.1f},{level:.1f}", f"{_x(point.t, span):.1f},{level:.1f}"]
    step_coords.append(f"{_x(points[-1].t, span):.1f},{_y(100 * (points[-1].concurrency or 0) / top_concurrency):.1f}")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ballast-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="CPU and memory over the run">',
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" fill="none" stroke="#ccc"/>',
    ]
    for percent in (0, 50, 100):
        parts.append(f'<text x="{LEFT - 4}" y="{_y(percent) + 4:.1f}" font-size="10" text-anchor="end">{percent}%</text>')
    if with_concurrency:
        parts.append(f'<text x="{WIDTH - RIGHT + 4}" y="{_y(100) + 4:.1f}" font-size="10">{top_concurrency}</text>')
        parts.append(f'<text x="{WIDTH - RIGHT + 4}" y="{_y(0) + 4:.1f}" font-size="10">0</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" font-size="10" text-anchor="end">{span:.1f} s</text>')
    for ceiling, name in ((cpu_ceiling, "cpu"), (memory_ceiling, "memory")):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_y(ceiling):.1f}" y2="{_y(ceiling):.1f}" '
            f'stroke="{COLOURS[name]}" stroke-dasharray="5,4" stroke-width="1"><title>{name} ceiling {ceiling:.0f}%</title></line>'
        )
    parts.append(line([(p.t, p.cpu) for p in points], COLOURS["cpu"]))
    parts.append(line([(p.t, p.memory) for p in points], COLOURS["memory"]))
    with_rss = any(p.rss is not None for p in points)
    if with_rss:
        parts.append(line([(p.t, p.rss or 0) for p in points], COLOURS["rss"], 'stroke-dasharray="2,2"'))
    if with_concurrency:
        parts.append(f'<polyline fill="none" stroke="{COLOURS["concurrency"]}" stroke-width="1.4" points="{" ".join(step_coords)}"/>')
    for mark in marks:
        x = _x(mark.t, span)
        colour = EVENT_COLOURS.get(mark.kind, "#777")
        parts.append(
            f'<line class="event" x1="{x:.1f}" x2="{x:.1f}" y1="{HEIGHT - BOTTOM}" y2="{HEIGHT - BOTTOM + 8}" stroke="{colour}" stroke-width="2">'
            f"<title>{escape(mark.kind)}: {escape(mark.text)}</title></line>"
        )
    legend = [("CPU %", "cpu"), ("memory %", "memory")] + ([("concurrency", "concurrency")] if with_concurrency else [])
    legend += [("RSS % of ceiling", "rss")] if with_rss else []
    for i, (label, key) in enumerate(legend):
        x = LEFT + 10 + i * 110
        parts.append(f'<rect x="{x}" y="{HEIGHT - 12}" width="10" height="3" fill="{COLOURS[key]}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT - 8}" font-size="10">{label}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))


def owner_chart(owner: str, *, cpu_ceiling: float, memory_ceiling: float) -> SafeString:
    """The chart of everything recorded for one owner (a run): its samples and its events."""
    from .models import ResourceSample, ThrottleEvent

    samples = list(ResourceSample.objects.filter(owner=owner).order_by("at").values("at", "route", "cpu_percent", "memory_percent", "concurrency"))
    events = list(ThrottleEvent.objects.filter(owner=owner).order_by("created_at").values("created_at", "kind", "route", "detail"))
    if not samples:
        return resource_chart([], [], cpu_ceiling=cpu_ceiling, memory_ceiling=memory_ceiling)
    start = samples[0]["at"]
    latest: dict[str, int] = {}  # routes run side by side: concurrency is their sum
    points = []
    for s in samples:
        latest[s["route"]] = s["concurrency"]
        points.append(Point((s["at"] - start).total_seconds(), s["cpu_percent"], s["memory_percent"], sum(latest.values())))
    marks = [Mark(max((e["created_at"] - start).total_seconds(), 0), e["kind"], f"{e['route']}: {e['detail']}") for e in events]
    return resource_chart(points, marks, cpu_ceiling=cpu_ceiling, memory_ceiling=memory_ceiling)
