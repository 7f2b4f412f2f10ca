"""What the service's pages and the e-mail show: the report or a project's history, its
plots, rendered. Blocking (store reads, matplotlib): the service calls these from a
worker thread."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from mrqart.report import plots
from mrqart.report.model import (
    DEFAULT_EXCLUSIONS,
    Exclusions,
    Period,
    Point,
    Reader,
    Report,
    Store,
)
from mrqart.report.render import Figure, history_html, to_html
from mrqart.rules.check import DEFAULT_RULES, Rules

#: The history plotted beside a report: the days up to its last day.
REPORT_HISTORY_DAYS = 28
#: Plots in a report (a page or an e-mail stays light on a bad day): the series that
#: differed most often in it.
MAX_REPORT_PLOTS = 6
#: A project page's history unless the URL says since when.
PROJECT_HISTORY_DAYS = 365


@dataclass(frozen=True)
class Plot:
    """One rendered plot of a report: ``data`` is SVG or PNG bytes."""

    project: str
    name: str
    caption: str
    data: bytes


def day_link(point: Point) -> str:
    """Where a plotted point leads: the report of its day."""
    return f"/reports?day={point.date}"


def report_plots(reader: Reader, report: Report, fmt: plots.Format, *,
                 links: bool = False) -> list[Plot]:
    """The history of the series that differed in the report, over
    ``REPORT_HISTORY_DAYS``: the ``MAX_REPORT_PLOTS`` that differed most often."""
    window = Period(report.period.last - dt.timedelta(REPORT_HISTORY_DAYS - 1), report.period.last)
    differed = Counter((project.project, line.sequence_name) for project in report.projects
                       for s in project.sessions for line in s.series if line.status == "differ")
    chosen: dict[str, list[str]] = {}
    for (project, name), _ in differed.most_common(MAX_REPORT_PLOTS):
        chosen.setdefault(project, []).append(name)
    out = []
    for project, names in chosen.items():
        for series in reader.history(project, window, only=names).series:
            data = plots.series_figure(series, fmt, link=day_link if links else None)
            if data is not None:
                out.append(Plot(project, series.sequence_name,
                                f"{series.sequence_name}, {window.label}", data))
    return out


def report_page(
    store: Store, period: Period, *, rules: Rules = DEFAULT_RULES,
    exclusions: Exclusions = DEFAULT_EXCLUSIONS,
) -> str:
    """The /reports page: the report of ``period`` with links and SVG plots."""
    reader = Reader(store, rules=rules, exclusions=exclusions)
    report = reader.report(period)
    figures: dict[str, list[Figure]] = {}
    for plot in report_plots(reader, report, "svg", links=True):
        figures.setdefault(plot.project, []).append(
            Figure(plot.caption, svg=plots.svg_markup(plot.data)))
    return to_html(report, figures=figures, links=True)


def project_page(
    store: Store, project: str, period: Period, *, rules: Rules = DEFAULT_RULES,
    exclusions: Exclusions = DEFAULT_EXCLUSIONS,
) -> str:
    """The /projects/<project> page: per series, its varied parameters over ``period``,
    and the conformance rate per week."""
    history = Reader(store, rules=rules, exclusions=exclusions).history(project, period)
    figures: dict[str, list[Figure]] = {}
    weeks = plots.weeks_figure(history.weeks, "svg")
    if weeks is not None:
        figures[""] = [Figure("series that conformed, per week", svg=plots.svg_markup(weeks))]
    for series in history.series:
        svg = plots.series_figure(series, "svg", link=day_link)
        if svg is not None:
            figures[series.sequence_name] = [Figure(
                f"{series.sequence_name}: " + ", ".join(p.param for p in series.params)
                + "; a blue ring marks a series accepted as the new reference, a dashed line "
                "the moment it was accepted", svg=plots.svg_markup(svg))]
    return history_html(history, figures)


def project_period(since: str | None, today: dt.date | None = None) -> Period:
    """A project page's period: ``since`` (as ``Period.parse`` reads it) to today, else
    the last ``PROJECT_HISTORY_DAYS``."""
    today = today or dt.date.today()
    if since is None:
        return Period(today - dt.timedelta(PROJECT_HISTORY_DAYS - 1), today)
    return Period.parse(since=since, today=today)
