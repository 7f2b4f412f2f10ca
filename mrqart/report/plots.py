"""History plots with matplotlib: SVG for the service's pages, PNG for e-mail.

Per series, one figure with a panel per parameter that varied: the value per session,
the template each was judged against as a step line, differing sessions in red,
accepted series ringed and accepted changes as dashed lines; and one
figure of the conformance rate per week. Each point links to that day's report.

matplotlib is imported by these functions, not by the modules that import this one
(the live path's start-up never pays for it). No pyplot: figures are plain
``matplotlib.figure.Figure`` objects rendered by the Agg (PNG) or SVG canvas, so worker
threads draw without any global GUI state.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mrqart.report.model import ParamHistory, Point, SeriesHistory, WeekRate
from mrqart.rules.check import fmt

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours: differing points, conforming points, the template line, accepted changes.
RED, GREY, TEMPLATE, ACCEPTED = "#d62728", "#4a6f8a", "#2ca02c", "#1a5fb4"
#: Panels drawn per series (the parameters that varied most often come first).
MAX_PANELS = 6
#: Group ids in the SVG (the page's tests and styles find the points by them).
DIFFER_GID, CONFORM_GID = "differ", "conform"
PANEL_SIZE = (6.4, 1.5)  # inches, one panel
DPI = 100

Format = str  # "svg" | "png"


#: Fixed margins in inches (matplotlib's automatic layouts cost two thirds of a plot's
#: time): the parameter's name and its tick labels (category names such as a sequence
#: type), the title above, the dates below.
LEFT, TOP, BOTTOM, RIGHT = 1.5, 0.3, 0.35, 0.15


def _figure(n_panels: int, panel_height: float = PANEL_SIZE[1]) -> tuple[Figure, list[Axes]]:
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    w = PANEL_SIZE[0]
    h = panel_height * n_panels + TOP + BOTTOM
    fig = Figure(figsize=(w, h), dpi=DPI)
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    fig.subplots_adjust(left=LEFT / w, right=1 - RIGHT / w, top=1 - TOP / h, bottom=BOTTOM / h,
                        hspace=0.25)
    locator = AutoDateLocator(maxticks=8)
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator, show_offset=False))
    return fig, list(axes)


def _render(fig: Figure, fmt_: Format, name: str) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    # svg.fonttype none: text stays text (escaped by matplotlib), a fraction of the size
    # of glyph paths. hashsalt: the same figure gives the same bytes, and figures of
    # different names get different element ids when several are inlined in one page.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"mrqart {name}"}):
        fig.savefig(buf, format=fmt_, metadata=_metadata(fmt_))
    return buf.getvalue()


def _metadata(fmt_: Format) -> dict[str, Any]:
    # No creation date or software stamp: reproducible output.
    return {"Date": None, "Creator": None} if fmt_ == "svg" else {"Software": None}


def svg_markup(svg: bytes) -> str:
    """An SVG document as markup to inline in an HTML page (the XML prologue dropped)."""
    text = svg.decode()
    return text[text.index("<svg"):]


def _when(p: Point) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{p.date}T{p.time or '00:00'}")


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _panel(ax: Axes, param: ParamHistory, link: Callable[[Point], str] | None,
           accepted_at: Sequence[dt.datetime]) -> None:
    points = param.points
    templates = [p.template for p in points if p.template is not None]
    if _numeric([p.value for p in points]) and _numeric([param.template, *templates]):
        def y(v: Any) -> Any:
            return v
    else:
        # strings and lists (SequenceType, Matrix): one category per written value
        def y(v: Any) -> Any:
            return fmt(v, param.param)
        ax.set_yticks(sorted({y(v) for v in (*(p.value for p in points), *templates,
                                              param.template)}))
    x = [_when(p) for p in points]
    # the template each series was judged against, as steps, then today's template
    line = [(x[i], y(p.template)) for i, p in enumerate(points) if p.template is not None]
    line.append((x[-1], y(param.template)))
    ax.plot([a for a, _ in line], [b for _, b in line], drawstyle="steps-post", color=TEMPLATE,
            linewidth=1.2, zorder=2, label="template", gid=f"template-{param.param}")
    for gid, chosen, colour, size in (
        (CONFORM_GID, [i for i, p in enumerate(points) if not p.differs], GREY, 14),
        (DIFFER_GID, [i for i, p in enumerate(points) if p.differs], RED, 22),
    ):
        if not chosen:
            continue
        # clip_on=False: the margins keep points inside, and an SVG point linked without a
        # clip path of its own is a third of the markup
        dots = ax.scatter([x[i] for i in chosen], [y(points[i].value) for i in chosen],
                          s=size, c=colour, zorder=3, gid=f"{gid}-{param.param}", label=gid,
                          clip_on=False)
        if link is not None:
            dots.set_urls([link(points[i]) for i in chosen])
    accepted = [i for i, p in enumerate(points) if p.accepted]
    if accepted:
        ax.scatter([x[i] for i in accepted], [y(points[i].value) for i in accepted], s=90,
                   facecolors="none", edgecolors=ACCEPTED, linewidths=1.5, zorder=4,
                   gid=f"accepted-{param.param}", label="accepted")
    for when in accepted_at:
        ax.axvline(when, color=ACCEPTED, linestyle="--", linewidth=1, label="accepted change")
    ax.set_ylabel(param.param, rotation=0, ha="right", va="center")
    ax.margins(x=0.02, y=0.25)
    ax.grid(axis="y", linewidth=0.3)


def series_figure(series: SeriesHistory, fmt_: Format = "svg", *,
                  link: Callable[[Point], str] | None = None) -> bytes | None:
    """The varied parameters of one series over time; None if none varied."""
    params = sorted(series.params, key=lambda p: -sum(q.differs for q in p.points))[:MAX_PANELS]
    if not params:
        return None
    accepted_at = [dt.datetime.fromisoformat(a.at[:16]) for a in series.accepted]
    fig, axes = _figure(len(params))
    for ax, param in zip(axes, params):
        _panel(ax, param, link, accepted_at)
    axes[0].set_title(f"{series.sequence_name}: red differs from the template (green)",
                      fontsize=9, loc="left")
    return _render(fig, fmt_, series.sequence_name)


def weeks_figure(weeks: Sequence[WeekRate], fmt_: Format = "svg") -> bytes | None:
    """The share of series that conformed, per week; None without weeks."""
    if not weeks:
        return None
    fig, (ax,) = _figure(1, panel_height=1.6)
    x = [dt.date.fromisoformat(w.week) for w in weeks]
    rate = [100.0 * w.conform / w.series for w in weeks]
    ax.set_gid("weeks")
    ax.bar(x, rate, width=5, color=[GREY if r == 100 else RED for r in rate])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% conform")
    ax.set_title("conformance per week", fontsize=9, loc="left")
    return _render(fig, fmt_, "weeks")
