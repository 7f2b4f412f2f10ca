"""The checking rules, one table row per rule and edge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mrqart.rules.check import (
    DEFAULT_RULES,
    NULL,
    PARAMS,
    Rule,
    RulesFileError,
    check,
    describe,
    fmt,
    load_rules,
)

TEMPLATE: dict[str, Any] = {
    "Project": "Brain^Wellness", "SequenceName": "RewardedAnti", "iPAT": "p2",
    "Comments": "Unaliased MB3/PE4/LB SENSE1", "SequenceType": "epfid2d1_88",
    "PED_major": "COL", "Phase": 1, "TR": 1300.0, "TE": 30.0, "Matrix": [88, 88],
    "PixelResol": [2.2727, 2.2727], "BWP": 1924.0, "BWPPE": 28.409, "FA": 60.0,
    "TA": "TA 06:31", "FoV": "FoV 200*200", "SequenceFile": "%CustomerSeq%\\cmrr_mbep2d_bold",
}
MULTI_ECHO = {**TEMPLATE, "TE": [14.2, 38.93]}


def test_params_are_the_seventeen_invariants() -> None:
    assert len(PARAMS) == 17 == len(set(PARAMS))
    assert set(TEMPLATE) == set(PARAMS) == set(DEFAULT_RULES)


@pytest.mark.parametrize(
    ("param", "have", "conforms"),
    [
        # TR: numeric, equal within (strictly less than) 1 ms
        ("TR", 1300.0, True),
        ("TR", 1300.9, True),
        ("TR", 1299.1, True),
        ("TR", 1301.0, False),
        ("TR", 2000.0, False),
        ("TR", "1300", True),  # a numeric string is a number
        ("TR", NULL, False),
        # TE single-echo template: within 0.05 ms
        ("TE", 30.04, True),
        ("TE", 30.06, False),
        # number lists: element-wise within 1e-3, same length
        ("PixelResol", [2.27273, 2.2727], True),
        ("PixelResol", [2.274, 2.2727], False),
        ("PixelResol", [2.2727], False),
        ("PixelResol", NULL, False),
        ("Matrix", [88, 88], True),
        ("Matrix", [88, 96], False),
        # strings: white space runs collapsed, case ignored
        ("Comments", "unaliased  MB3/PE4/LB\tSENSE1 ", True),
        ("Comments", "Unaliased MB3/PE4/LB SENSE2", False),
        ("Project", "brain^wellness", True),
        ("PED_major", "ROW", False),
        ("iPAT", "P2", True),
        # other numbers: within 1e-3
        ("FA", 60.0004, True),
        ("FA", 61.0, False),
        ("Phase", 1, True),
        ("Phase", 0, False),
        ("BWP", 1924, True),
        # "null" only equals "null" outside live context
        ("FoV", NULL, False),
        ("TA", NULL, False),
        ("BWPPE", NULL, False),
        ("SequenceFile", "%CustomerSeq%\\cmrr_mbep2d_bold", True),
    ],
)
def test_rule_offline(param: str, have: Any, conforms: bool) -> None:
    result = check({**TEMPLATE, param: have}, TEMPLATE)
    assert result["conforms"] is conforms
    assert result["status"] == ("conform" if conforms else "nonconform")
    expected = {} if conforms else {param: {"expect": TEMPLATE[param], "have": have}}
    assert result["errors"] == expected


@pytest.mark.parametrize(
    ("param", "conforms"),
    [("FoV", True), ("TA", True), ("BWPPE", True), ("TR", False), ("PixelResol", False)],
)
def test_live_may_miss_fov_ta_bwppe(param: str, conforms: bool) -> None:
    assert check({**TEMPLATE, param: NULL}, TEMPLATE, live=True)["conforms"] is conforms


def test_live_does_not_excuse_a_wrong_value() -> None:
    assert not check({**TEMPLATE, "FoV": "FoV 220*220"}, TEMPLATE, live=True)["conforms"]


def test_missing_header_key_is_null() -> None:
    header = {k: v for k, v in TEMPLATE.items() if k != "FA"}
    assert check(header, TEMPLATE)["errors"] == {"FA": {"expect": 60.0, "have": NULL}}


@pytest.mark.parametrize(
    ("te", "conforms"),
    [
        (14.2, True),
        (38.95, True),
        (14.26, False),
        (26.0, False),  # between the echoes: not any TE the series ever had
        ([14.2, 38.93], True),  # a header carrying the whole echo list
        ([14.2, 38.93, 60.0], False),
    ],
)
def test_multi_echo_te_is_a_set(te: Any, conforms: bool) -> None:
    assert check({**MULTI_ECHO, "TE": te}, MULTI_ECHO)["conforms"] is conforms


def test_list_any_of_only_for_te() -> None:
    # Matrix [88, 88] in the template is one value, not two alternatives.
    assert not check({**TEMPLATE, "Matrix": 88}, TEMPLATE)["conforms"]


def test_no_template_is_neutral() -> None:
    result = check(TEMPLATE, None)
    assert result == {"conforms": True, "errors": {}, "input": TEMPLATE, "template": {},
                      "status": "no_template"}


def test_result_is_json_native_and_a_copy() -> None:
    header = {**TEMPLATE, "TR": 2000.0, "SubID": "sub1"}
    result = check(header, TEMPLATE)
    assert json.loads(json.dumps(result)) == result
    assert result["input"] == header and result["input"] is not header


def test_only_template_params_are_compared() -> None:
    template = {k: v for k, v in TEMPLATE.items() if k != "TR"}
    assert check({**TEMPLATE, "TR": 9.0}, template)["conforms"]


@pytest.mark.parametrize(
    ("errors", "sentences"),
    [
        ({}, []),
        ({"TR": {"expect": 1300.0, "have": 2000.0}}, ["TR should be 1300 but is 2000"]),
        ({"TE": {"expect": [14.2, 38.93], "have": 26.5}},
         ["TE should be 14.2, 38.93 but is 26.5"]),
        ({"FoV": {"expect": "FoV 200*200", "have": NULL},
          "Matrix": {"expect": [88, 88], "have": [96, 96]},
          "Comments": {"expect": NULL, "have": "x"}},
         ["FoV should be FoV 200*200 but is missing", "Matrix should be 88 × 88 but is 96 × 96",
          "Comments should be — but is x"]),
    ],
)
def test_describe(errors: dict[str, Any], sentences: list[str]) -> None:
    assert describe(errors) == sentences


@pytest.mark.parametrize(
    ("value", "param", "text"),
    [
        (1300.0, None, "1300"), (2.5, None, "2.5"), (3, None, "3"), ("p2", None, "p2"),
        (2.2916666269302, None, "2.2917"), (0.00004, None, "0"), (-1.5, None, "-1.5"),
        ([1.0, 2.25], "TE", "1, 2.25"), ([2.2916666, 2.2916666], "PixelResol", "2.2917 × 2.2917"),
        (NULL, "FoV", "—"), (None, None, "—"),
    ],
)
def test_fmt_matches_the_page(value: Any, param: str | None, text: str) -> None:
    assert fmt(value, param) == text


def test_load_rules_overrides_per_parameter(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[TR]\ntol = 5\n[Comments]\nignore = true\n[FoV]\nlive_null_ok = false\n')
    rules = load_rules(path)
    assert rules["TR"] == Rule(tol=5.0)
    assert rules["TE"] == DEFAULT_RULES["TE"]
    header = {**TEMPLATE, "TR": 1304.0, "Comments": "other", "FoV": NULL}
    assert check(header, TEMPLATE, rules, live=True)["errors"] == {
        "FoV": {"expect": "FoV 200*200", "have": NULL}
    }
    assert set(check(header, TEMPLATE, live=True)["errors"]) == {"TR", "Comments"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[TR]\ntolerance = 2\n", "unknown field 'tolerance'"),
        ("[TR]\ntol = 'two'\n", "tol must be float"),
        ("[FoV]\nignore = 1\n", "ignore must be bool"),
        ("TR = 2\n", "must be a table"),
    ],
)
def test_load_rules_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RulesFileError, match=message):
        load_rules(path)


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ({"SequenceName": "gre_field_mapping", "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]},
         "gre_field_mapping (phase)"),
        ({"SequenceName": "gre_field_mapping", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]},
         "gre_field_mapping"),
        ({"SequenceName": "rest", "ImageType": "null"}, "rest"),
        ({"SequenceName": "rest"}, "rest"),
        ({}, "null"),
    ],
)
def test_template_name_keeps_phase_images_apart(header: dict, name: str) -> None:
    from mrqart.rules.check import template_name

    assert template_name(header) == name
