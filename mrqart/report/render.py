"""The report as JSON, plain text and HTML (one self-contained page, inline CSS).

Every value from a header or a person is escaped (``html.escape``) before it goes into
HTML; plots come in as finished markup from ``plots`` (SVG) or as ``cid:`` addresses
(e-mail), never built from untrusted text here.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from mrqart.report.model import (
    Ack,
    Counts,
    Difference,
    ProjectHistory,
    ProjectReport,
    Report,
    SeriesLine,
    SessionReport,
    summary,
)
from mrqart.rules.check import fmt


def to_json(report: Report | ProjectHistory) -> str:
    """One line of JSON (``jq`` makes it pretty): the C encoder, a day of 2,000 series."""
    return json.dumps(report.to_json(), ensure_ascii=False)


# -- plain text -----------------------------------------------------------------------------

_MARK = {"conform": "ok", "differ": "XX", "no_template": "??", "accepted": "ac"}


def _streak_text(d: Difference) -> str:
    return f", {d.streak} scan days in a row" if d.streak > 1 else ""


def when(at: str) -> str:
    """An ISO 8601 time as the report writes it: "2026-11-30 11:40"."""
    return at[:16].replace("T", " ")


def _ack_when(ack: Ack) -> str:
    """When, and who where the store knows: "2026-11-30 11:40 by ana"."""
    return when(ack.at) + (f" by {ack.by}" if ack.by else "")


def _ack_text(ack: Ack | None) -> str:
    return f'; acknowledged: "{ack.reason}" ({_ack_when(ack)})' if ack else ""


def series_verdict(line: SeriesLine) -> str:
    """What a series line says after its name, in the text and HTML reports alike."""
    if line.status == "differ":
        return "; ".join(d.text + _streak_text(d) for d in line.differences)
    if line.status == "accepted" and line.accepted is not None:
        a = line.accepted
        return f"accepted as the new reference: {a.reason} ({a.text}, {when(a.at)})"
    return {"conform": "conforms", "no_template": "no template yet (not onboarded)",
            "accepted": "accepted as the new reference"}[line.status]


def _session_title(s: SessionReport) -> str:
    return f"{s.date} {s.time}  {s.station}  {s.subject}  ({s.session})"


def _text_project(p: ProjectReport) -> list[str]:
    out = [f"{p.project}: {summary(p.counts)}"]
    if p.streaks:
        out.append("  failing on consecutive scan days:")
        out += [f"    {s.sequence_name} {s.param}: {s.days} scan days since {s.since} "
                f"(expected {fmt(s.expected)}, got {fmt(s.got)})" for s in p.streaks]
    if p.accepted_changes:
        out.append("  accepted template changes:")
        out += [f'    {when(a.at)} {a.sequence_name} by {a.by}: "{a.reason}"'
                + "".join(f"; {d.text}" for d in a.changes) for a in p.accepted_changes]
    for s in p.sessions:
        out.append(f"  session {_session_title(s)}")
        out += [f"    {_MARK[line.status]} {line.series_number} {line.sequence_name}: "
                f"{series_verdict(line)}" + "".join(_ack_text(a) for a in line.acks)
                for line in s.series]
        out += [f"    !! {a.text}{_ack_text(a.ack)}" for a in s.alerts]
        if s.missing:
            out.append(f"    !! missing: {', '.join(s.missing)}{_ack_text(s.missing_ack)}")
    return out


def to_text(report: Report) -> str:
    """The report as plain text (the e-mail's text part, ``--format text``)."""
    lines = [report.subject(), ""]
    for p in report.projects:
        lines += [*_text_project(p), ""]
    if not report.projects:
        lines.append("no series were acquired in this period")
    return "\n".join(lines).rstrip() + "\n"


# -- HTML -----------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:70em}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.2em;margin:1.4em 0 .3em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:1em 0 .3em}
.summary{font-weight:600}
table{border-collapse:collapse;margin:.3em 0 1em}
td,th{padding:.2em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #eee}
tr.differ td{background:#fde8e8}tr.differ .verdict{color:#b00020;font-weight:600}
tr.no_template .verdict{color:#666}tr.accepted .verdict{color:#1a5fb4}
tr.alert td{background:#fff4e0}.ack{color:#2e7d32}
nav a,nav form{margin-right:1em}nav{margin:.3em 0 1em}
figure{display:inline-block;margin:.2em 1em .8em 0}figcaption{font-size:.85em;color:#555}
figure svg,figure img{max-width:100%;height:auto}
""".strip()


@dataclass(frozen=True)
class Figure:
    """A plot ready for the page: inline SVG markup, or an image address (``cid:...``)."""

    caption: str
    svg: str = ""
    src: str = ""

    def html(self) -> str:
        body = self.svg or f'<img src="{escape(self.src)}" alt="{escape(self.caption)}">'
        return f"<figure>{body}<figcaption>{escape(self.caption)}</figcaption></figure>"


def project_url(project: str) -> str:
    """The service's page of a project (any printable name, slashes included)."""
    return "/projects/" + quote(project, safe="")


def _page(title: str, body: list[str]) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _ack_html(ack: Ack | None) -> str:
    if ack is None:
        return ""
    return (f' <span class="ack">acknowledged: {escape(ack.reason)} '
            f"({escape(_ack_when(ack))})</span>")


def _row(cls: str, cells: Sequence[str]) -> str:
    return f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _session_html(s: SessionReport) -> list[str]:
    title = f"{s.date} {s.time} · {s.station} · {s.subject}"
    out = [f"<h3>Session {escape(title)}</h3>",
           "<table><tr><th>#</th><th>series</th><th>time</th><th>files</th><th>verdict</th></tr>"]
    for line in s.series:
        verdict = f'<span class="verdict">{escape(series_verdict(line))}</span>'
        verdict += "".join(_ack_html(a) for a in line.acks)
        out.append(_row(line.status, [str(line.series_number), escape(line.sequence_name),
                                      escape(line.time), str(line.n_files), verdict]))
    for a in s.alerts:
        out.append(_row("alert", ["" if a.series_number is None else str(a.series_number),
                                  escape(a.kind), "", "", escape(a.text) + _ack_html(a.ack)]))
    if s.missing:
        out.append(_row("alert missing", ["", "missing", "", "",
                                          escape(", ".join(s.missing)) + _ack_html(s.missing_ack)]))
    out.append("</table>")
    return out


def _counts_html(c: Counts) -> str:
    return f'<p class="summary">{escape(summary(c))}</p>'


def to_html(
    report: Report,
    *,
    figures: Mapping[str, Sequence[Figure]] | None = None,
    links: bool = False,
) -> str:
    """The report as one HTML page. ``figures``: plots per project, shown under its
    heading. ``links`` (the service's /reports page): the previous and next day, a date
    picker, and each project's name linking to its history page."""
    body = [f"<h1>mrqart compliance report, {escape(report.period.label)}</h1>"]
    if links:
        body.append(_day_nav(report.period.last))
    body.append(_counts_html(report.counts))
    if not report.projects:
        body.append("<p>No series were acquired in this period.</p>")
    for p in report.projects:
        name = escape(p.project)
        if links:
            name = f'<a href="{escape(project_url(p.project))}">{name}</a>'
        body += [f"<h2>{name}</h2>", _counts_html(p.counts)]
        body += [f.html() for f in (figures or {}).get(p.project, ())]
        if p.streaks:
            body.append("<h3>Failing on consecutive scan days</h3><ul>")
            body += [f"<li>{escape(s.sequence_name)} {escape(s.param)}: {s.days} scan days since "
                     f"{escape(s.since)} (expected {escape(fmt(s.expected))}, got "
                     f"{escape(fmt(s.got))})</li>" for s in p.streaks]
            body.append("</ul>")
        if p.accepted_changes:
            body.append("<h3>Accepted template changes</h3><ul>")
            body += [f"<li>{escape(when(a.at))} {escape(a.sequence_name)} by "
                     f"{escape(a.by)}: {escape(a.reason)}"
                     + "".join(f"; {escape(d.text)}" for d in a.changes) + "</li>"
                     for a in p.accepted_changes]
            body.append("</ul>")
        for s in p.sessions:
            body += _session_html(s)
    return _page(report.subject(), body)


def _day_nav(day: dt.date) -> str:
    prev, next_ = day - dt.timedelta(1), day + dt.timedelta(1)
    return (f'<nav><a href="/reports?day={prev.isoformat()}">&larr; {prev.isoformat()}</a>'
            f'<a href="/reports?day={next_.isoformat()}">{next_.isoformat()} &rarr;</a>'
            f'<form method="get" action="/reports" style="display:inline">'
            f'<input type="date" name="day" value="{day.isoformat()}">'
            f'<button type="submit">show</button></form></nav>')


def history_html(history: ProjectHistory, figures: Mapping[str, Sequence[Figure]]) -> str:
    """A project's history page: per series, its plots (``figures`` by series name, and
    ``""`` for the weekly conformance rate) and a line of counts."""
    h = history
    body = [f"<h1>{escape(h.project)}</h1>",
            f"<nav><a href=\"/reports\">daily reports</a>{escape(h.period.label)}</nav>"]
    body += [f.html() for f in figures.get("", ())]
    if not h.series:
        body.append("<p>No series of this project in this period.</p>")
    for s in h.series:
        body.append(f"<h2>{escape(s.sequence_name)}</h2>")
        varied = ", ".join(p.param for p in s.params) or "none"
        body.append(f"<p>{s.n_series} series, {s.n_differ} differed; parameters that varied: "
                    f"{escape(varied)}</p>")
        body += [f.html() for f in figures.get(s.sequence_name, ())]
    return _page(f"mrqart: {h.project}", body)
