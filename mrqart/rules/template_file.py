"""The template file: a project's templates as JSON, to carry them to another site
(``mrqart templates export PROJECT > project.json``, ``mrqart templates import``).

Pure: dicts in, dicts out. The shape follows dicompare's schema files (an object of
acquisitions, each a list of field constraints with ``value``/``tolerance``/``min``/
``max``/``contains_any``), with mrqart's parameter names and history::

    {
      "format": "mrqart-templates", "version": 1,
      "project": "MRQART_test", "exported_at": "2026-11-30T11:00:00+00:00",
      "acquisitions": {
        "rest": {
          "votes": 3,
          "fields": [
            {"field": "Project", "dicom": "(0008,1030) StudyDescription", "value": "MRQART_test"},
            {"field": "TR", "dicom": "(0018,0080) RepetitionTime", "value": 1300.0, "tolerance": 1.0},
            {"field": "TE", "dicom": "(0018,0081) EchoTime", "contains_any": [14.2, 35.9], "tolerance": 0.05},
            {"field": "FA", "dicom": "(0018,1314) FlipAngle", "min": 50, "max": 55},
            ...
          ],
          "history": [{"kind", "at", "by", "reason", "params"}, ...]
        }
      }
    }

A field's constraint is one of:

- ``{"value": v}`` exact (strings compare ignoring case and runs of white space);
- ``{"value": v, "tolerance": t}`` a number (or each number of a list) within ``t``;
- ``{"contains_any": [...], "tolerance": t}`` one of the allowed values;
- ``{"min": a, "max": b}`` a range, inclusive (either end may be left out).

Export writes the tolerance of the rules in effect (``check.DEFAULT_RULES`` unless a
rules file is given) so the file says how it was compared. On import, a constraint
that the rules would apply anyway (the same tolerance; a TE list) is stored as the
plain value; anything else is kept as the constraint itself in the template
(``check`` understands ``{"value", "tolerance"}``, ``{"any_of", "tolerance"}`` and
``{"min", "max"}`` template values), so the importing site compares as the file says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mrqart.rules.check import DEFAULT_RULES, NULL, PARAMS, Rules
from mrqart.rules.templates import CHANGE_KINDS

FORMAT = "mrqart-templates"
VERSION = 1

#: Where each parameter comes from, for readers of the file (and for mapping
#: dicompare's DICOM keywords, see the README).
SOURCES: Mapping[str, str] = {
    "Project": "(0008,1030) StudyDescription",
    "SequenceName": "(0008,103E) SeriesDescription",
    "iPAT": "CSA image ImaPATModeText",
    "Comments": "(0020,4000) ImageComments",
    "SequenceType": "(0018,0024) SequenceName",
    "PED_major": "(0018,1312) InPlanePhaseEncodingDirection",
    "Phase": "CSA image PhaseEncodingDirectionPositive",
    "TR": "(0018,0080) RepetitionTime",
    "TE": "(0018,0081) EchoTime",
    "Matrix": "(0018,1310) AcquisitionMatrix",
    "PixelResol": "(0028,0030) PixelSpacing",
    "BWP": "(0018,0095) PixelBandwidth",
    "BWPPE": "(0019,xx28) Siemens BandwidthPerPixelPhaseEncode",
    "FA": "(0018,1314) FlipAngle",
    "TA": "(0051,xx0A) Siemens TA",
    "FoV": "(0051,xx0C) Siemens FoV",
    "SequenceFile": "CSA ASCCONV tSequenceFileName",
}


class TemplateFileError(ValueError):
    """A template file that does not follow the format (the message says where)."""


@dataclass(frozen=True)
class Entry:
    """One template read from a file, as ``Store.adopt`` takes it."""

    sequence_name: str
    params: dict[str, Any]
    votes: int
    history: tuple[dict[str, Any], ...]


def _field(param: str, value: Any, rules: Rules) -> dict[str, Any]:
    out: dict[str, Any] = {"field": param, "dicom": SOURCES.get(param, "")}
    rule = rules.get(param)
    if isinstance(value, dict):  # a constraint imported from a file: written as it is
        constraint = dict(value)
        if "any_of" in constraint:
            constraint["contains_any"] = constraint.pop("any_of")
        return {**out, **constraint}
    if rule is not None and rule.any_of and isinstance(value, list):
        return {**out, "contains_any": value, "tolerance": rule.tol}
    numeric = isinstance(value, (int, float)) or (
        isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value))
    if numeric and not isinstance(value, bool) and rule is not None:
        return {**out, "value": value, "tolerance": rule.tol}
    return {**out, "value": value}


def to_document(
    project: str, templates: Iterable[Mapping[str, Any]], rules: Rules = DEFAULT_RULES,
    *, now: datetime | None = None,
) -> dict[str, Any]:
    """The file of a project's templates (``Store.project_templates``)."""
    when = (now or datetime.now().astimezone()).isoformat(timespec="seconds")
    acquisitions = {}
    for t in templates:
        acquisitions[t["sequence_name"]] = {
            "votes": t.get("votes", 1),
            "fields": [_field(p, v, rules) for p, v in t["params"].items()
                       if not (rules.get(p) and rules[p].ignore)],
            "history": [{k: h[k] for k in ("kind", "at", "by", "reason", "params")}
                        for h in t.get("history", ())],
        }
    return {"format": FORMAT, "version": VERSION, "project": project, "exported_at": when,
            "acquisitions": acquisitions}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TemplateFileError(f"{where}: expected a number, got {value!r}")
    return value


def _value(field: Mapping[str, Any], rules: Rules, where: str) -> Any:
    """A field's constraint as a template value: plain when the rules compare it that
    way anyway, else the constraint dict ``check`` understands."""
    param = field["field"]
    rule = rules.get(param)
    tol = field.get("tolerance")
    if tol is not None:
        _number(tol, f"{where} tolerance")
    if "min" in field or "max" in field:
        bounds = {k: _number(field[k], f"{where} {k}") for k in ("min", "max") if k in field}
        if len(bounds) == 2 and bounds["min"] > bounds["max"]:
            raise TemplateFileError(f"{where}: min is above max")
        return bounds
    same_tol = tol is None or (rule is not None and abs(tol - rule.tol) < 1e-12)
    if "contains_any" in field:
        allowed = field["contains_any"]
        if not isinstance(allowed, list) or not allowed:
            raise TemplateFileError(f"{where}: contains_any must be a non-empty list")
        if rule is not None and rule.any_of and same_tol:
            return allowed
        return {"any_of": allowed, **({} if tol is None else {"tolerance": tol})}
    if "value" not in field:
        raise TemplateFileError(f"{where}: give value, contains_any, or min/max")
    if same_tol:
        return field["value"]
    return {"value": field["value"], "tolerance": tol}


def from_document(doc: Any, rules: Rules = DEFAULT_RULES) -> list[Entry]:
    """The templates of a file; TemplateFileError naming the place of the first problem.
    A parameter the file leaves out is expected to be missing (``"null"``)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TemplateFileError(f'not a template file: "format" is not "{FORMAT}"')
    if doc.get("version") != VERSION:
        raise TemplateFileError(f"version {doc.get('version')!r}; this mrqart reads {VERSION}")
    acquisitions = doc.get("acquisitions")
    if not isinstance(acquisitions, dict) or not acquisitions:
        raise TemplateFileError('"acquisitions" must be a non-empty object')
    entries = []
    for name, acq in acquisitions.items():
        where = f"acquisitions[{name!r}]"
        if not isinstance(acq, dict) or not isinstance(acq.get("fields"), list):
            raise TemplateFileError(f"{where}: needs a list of fields")
        params: dict[str, Any] = dict.fromkeys(PARAMS, NULL)
        for i, field in enumerate(acq["fields"]):
            if not isinstance(field, dict) or field.get("field") not in PARAMS:
                raise TemplateFileError(
                    f"{where}.fields[{i}]: field must be one of {', '.join(PARAMS)}")
            params[field["field"]] = _value(field, rules, f"{where}.fields[{i}]")
        if params["Project"] == NULL:
            params["Project"] = doc.get("project", NULL)
        if params["SequenceName"] == NULL:
            params["SequenceName"] = name.removesuffix(" (phase)")
        votes = acq.get("votes", 1)
        if type(votes) is not int or votes < 0:
            raise TemplateFileError(f"{where}.votes: a count, got {votes!r}")
        history = acq.get("history", [])
        if not isinstance(history, list):
            raise TemplateFileError(f"{where}.history: a list")
        for i, h in enumerate(history):
            if not (isinstance(h, dict) and h.get("kind") in CHANGE_KINDS
                    and all(isinstance(h.get(k), str) for k in ("at", "by", "reason"))
                    and (h.get("params") is None or isinstance(h["params"], dict))):
                raise TemplateFileError(
                    f"{where}.history[{i}]: needs kind ({', '.join(CHANGE_KINDS)}), at, by, "
                    "reason (strings) and params (an object or null)")
        entries.append(Entry(name, params, votes, tuple(history)))
    return entries
