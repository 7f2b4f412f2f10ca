"""The day after: the compliance report of a period (HTML, JSON, text, e-mail) and the
history of a project (plots). Reads the store; never imports trio or the live service.

- ``model``: the report's data from the store (pure apart from the store calls).
- ``render``: the model as HTML (inline CSS), JSON and plain text.
- ``plots``: matplotlib figures (SVG for the page, PNG for e-mail); imported lazily.
- ``mail``: the report as a multipart e-mail through SMTP.
"""

from mrqart.report.model import (
    Exclusions,
    Period,
    Reader,
    Report,
    build_report,
    load_exclusions,
    project_history,
)

__all__ = [
    "Exclusions", "Period", "Reader", "Report", "build_report", "load_exclusions", "project_history",
]
