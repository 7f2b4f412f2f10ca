"""Compare one series' header with its project's template: the rules and the verdict.

Pure: no I/O except ``load_rules`` reading a TOML file.

Every parameter has one ``Rule`` in ``DEFAULT_RULES``; a TOML file overrides it
per parameter::

    [TR]
    tol = 2.0            # ms; values are equal when |expect - have| < tol
    [Comments]
    ignore = true        # never compare this parameter
    [FoV]
    live_null_ok = false

How two values are compared follows their JSON type, so one comparator serves
every parameter:

- numbers: equal when ``|expect - have| < rule.tol`` (strictly less);
- lists of numbers (Matrix, PixelResol): same length and every element within tol;
- strings: equal after collapsing runs of white space and ignoring case;
- ``rule.any_of`` (TE): a list in the template is a set of alternatives; the
  header passes when its value is within tol of one of them. A multi-echo
  template holds the echo times of that one parameter set, never every TE seen.
- a parameter the header lists in ``not_recorded`` (the scanner never records it,
  e.g. Philips phase polarity) is never compared;
- a template value may be a constraint from a template file (``{"min", "max"}``,
  ``{"any_of", "tolerance"}`` or ``{"value", "tolerance"}``, see ``_meets``);
- ``"null"`` (missing) equals only ``"null"``, except that in live context
  (``live=True``) a parameter with ``rule.live_null_ok`` may be missing from the
  header: the scanner's online export leaves FoV, TA and BWPPE out of some files.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from os import PathLike
from types import MappingProxyType
from typing import Any

NULL = "null"

# The invariant parameters: what must not change between two acquisitions of the
# same sequence in one project. Subject, date, operator, shims... vary by design.
PARAMS: tuple[str, ...] = (
    "Project", "SequenceName", "iPAT", "Comments", "SequenceType", "PED_major", "Phase",
    "TR", "TE", "Matrix", "PixelResol", "BWP", "BWPPE", "FA", "TA", "FoV", "SequenceFile",
)


@dataclass(frozen=True)
class Rule:
    """How one parameter is compared.

    tol: numbers (and each element of a number list) are equal when their
      difference is strictly less than tol.
    any_of: a list in the template is a set of alternatives (multi-echo TE).
    live_null_ok: in live context a missing ("null") header value is no error.
    ignore: the parameter is not compared at all.
    """

    tol: float = 1e-3
    any_of: bool = False
    live_null_ok: bool = False
    ignore: bool = False


Rules = Mapping[str, Rule]

DEFAULT_RULES: Rules = MappingProxyType({
    **{p: Rule() for p in PARAMS},
    # The original truncated TR to int: differences under 1 ms are how exports
    # round, not protocol changes.
    "TR": Rule(tol=1.0),
    # Live and offline exports round TE differently; echo spacing is >> 0.05 ms.
    "TE": Rule(tol=0.05, any_of=True),
    "FoV": Rule(live_null_ok=True),
    "TA": Rule(live_null_ok=True),
    "BWPPE": Rule(live_null_ok=True),
})


#: The rules file's table for the daily report (mrqart.report.model), not a parameter.
REPORT_TABLE = "report"


class RulesFileError(ValueError):
    """A rules TOML file names an unknown field or gives a value of the wrong type."""


_RULE_FIELDS = tuple(f.name for f in fields(Rule))


def load_rules(path: str | PathLike[str], base: Rules = DEFAULT_RULES) -> Rules:
    """Rules from ``base`` with the per-parameter overrides of the TOML file at ``path``.

    Each top-level table is a parameter name; its keys are ``Rule`` fields. A
    parameter not in ``base`` is added (compared with the default rule plus its
    overrides). Raises ``RulesFileError`` (a ValueError) naming the file for an
    unknown field or a value of the wrong type, ``tomllib.TOMLDecodeError`` for
    bad TOML, and ``OSError`` when the file cannot be read.
    """
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    rules = dict(base)
    for param, table in doc.items():
        if param == REPORT_TABLE:
            continue
        if not isinstance(table, dict):
            raise RulesFileError(f"{path}: [{param}] must be a table of rule fields")
        for key, value in table.items():
            if key not in _RULE_FIELDS:
                raise RulesFileError(
                    f"{path}: [{param}] unknown field {key!r} (known: {', '.join(_RULE_FIELDS)})"
                )
            want = float if key == "tol" else bool
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want):
                raise RulesFileError(
                    f"{path}: [{param}] {key} must be {want.__name__}, not {value!r}"
                )
            table[key] = value
        rules[param] = replace(rules.get(param, Rule()), **table)
    return MappingProxyType(rules)


def _number(v: Any) -> float | None:
    """``v`` as a float when it is a JSON number or a numeric string, else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            x = float(v)
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def template_name(header: Mapping[str, Any]) -> str:
    """The name a series' template is kept under: its (0008,103E) SeriesDescription, with
    " (phase)" for phase images. Siemens field maps write the magnitude and the phase
    series under one description with different echo times; one template for both would
    flag one of them in every session."""
    name = str(header.get("SequenceName", NULL))
    image_type = header.get("ImageType")
    if isinstance(image_type, list) and len(image_type) > 2 and image_type[2] == "P":
        return f"{name} (phase)"
    return name


def squash(text: str) -> str:
    """``text`` with runs of white space collapsed to one space and the ends stripped."""
    return " ".join(text.split())


def _text(v: Any) -> str:
    return squash(str(v)).casefold()


def same(expect: Any, have: Any, tol: float) -> bool:
    """Whether two header values are equal under the comparison described in the module doc."""
    if isinstance(expect, list) or isinstance(have, list):
        return (
            isinstance(expect, list) and isinstance(have, list) and len(expect) == len(have)
            and all(same(e, h, tol) for e, h in zip(expect, have))
        )
    # "null" stays a string so it only ever equals "null".
    if isinstance(expect, (int, float)) or isinstance(have, (int, float)):
        e, h = _number(expect), _number(have)
        if e is not None and h is not None:
            return abs(e - h) < tol
    return _text(expect) == _text(have)


def _meets(constraint: Mapping[str, Any], have: Any, rule: Rule) -> bool:
    """A template value that is a constraint from a template file (rules/template_file.py):
    ``{"min", "max"}`` a range, inclusive; ``{"any_of", "tolerance"}`` one of the values;
    ``{"value", "tolerance"}`` one value with its own tolerance."""
    tol = constraint.get("tolerance", rule.tol)
    if "min" in constraint or "max" in constraint:
        x = _number(have)
        return x is not None and constraint.get("min", -math.inf) <= x <= constraint.get(
            "max", math.inf)
    if "any_of" in constraint:
        return any(same(e, have, tol) for e in constraint["any_of"])
    return "value" in constraint and same(constraint["value"], have, tol)


def _conforms(expect: Any, have: Any, rule: Rule) -> bool:
    if isinstance(expect, dict):
        return _meets(expect, have, rule)
    if rule.any_of and isinstance(expect, list) and not isinstance(have, list):
        return any(same(e, have, rule.tol) for e in expect)
    return same(expect, have, rule.tol)


def check(
    header: Mapping[str, Any],
    template: Mapping[str, Any] | None,
    rules: Rules = DEFAULT_RULES,
    *,
    live: bool = False,
) -> dict[str, Any]:
    """The verdict for one header against its template (a CheckResult dict).

    Returns ``{"conforms", "errors", "input", "template", "status"}``; ``errors``
    maps each differing parameter to ``{"expect": template value, "have": header
    value}``. Only parameters present in the template are compared.

    With no template (``None``) there is nothing to contradict: ``conforms`` is
    True, ``errors`` empty, ``template`` ``{}`` and ``status`` ``"no_template"``,
    which the page shows as neutral and ``mrqart check`` does not count as a
    failure. Otherwise ``status`` is ``"conform"`` or ``"nonconform"``.
    """
    if template is None:
        return {"conforms": True, "errors": {}, "input": dict(header), "template": {},
                "status": "no_template"}
    errors: dict[str, dict[str, Any]] = {}
    # A field the scanner never records (header "not_recorded", e.g. Philips shims) is
    # not missing: it is never flagged.
    not_recorded = header.get("not_recorded")
    unknowable = set(not_recorded) if isinstance(not_recorded, list) else set()
    for param, rule in rules.items():
        if rule.ignore or param not in template or param in unknowable:
            continue
        expect, have = template[param], header.get(param, NULL)
        if live and rule.live_null_ok and have == NULL:
            continue
        if not _conforms(expect, have, rule):
            errors[param] = {"expect": expect, "have": have}
    return {
        "conforms": not errors, "errors": errors, "input": dict(header),
        "template": dict(template), "status": "nonconform" if errors else "conform",
    }


# Number lists shown as dimensions ("96 × 96"); other lists as "a, b".
_DIMENSIONS = frozenset({"Matrix", "PixelResol"})


def fmt(value: Any, param: str | None = None) -> str:
    """A header value as the page (static/js/format.js ``fmt``) writes it: "—" when
    missing, integral numbers without ".0", others to at most 4 decimals, lists
    joined with " × " (Matrix, PixelResol) or ", "."""
    if value is None or value == NULL:
        return "—"
    if isinstance(value, list):
        return (" × " if param in _DIMENSIONS else ", ").join(fmt(v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        x = float(f"{value:.4f}")  # JS: String(parseFloat(v.toFixed(4)))
        return str(int(x)) if x.is_integer() else repr(x)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def describe(errors: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One sentence per error, in order, as the page writes them:
    ``"TR should be 1300 but is 2000"``, ``"FoV should be FoV 200*200 but is missing"``."""
    return [
        f"{p} should be {fmt(e['expect'], p)} but "
        + ("is missing" if e["have"] in (None, NULL) else f"is {fmt(e['have'], p)}")
        for p, e in errors.items()
    ]
