"""``mrqart simulate``: argument parsing and a small session on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrqart.cli import main, parse_wrong
from mrqart.headers import read_header


@pytest.mark.parametrize(
    ("items", "wrong"),
    [
        ([], {}),
        (["rest:TR=2000"], {"rest": {"TR": 2000.0}}),
        (["rest:TR=2000", "rest:PED_major=ROW"], {"rest": {"TR": 2000.0, "PED_major": "ROW"}}),
    ],
)
def test_parse_wrong(items: list[str], wrong: dict) -> None:
    assert parse_wrong(items) == wrong


@pytest.mark.parametrize("item", ["rest", "rest:TR", ":TR=1", "rest:=1"])
def test_parse_wrong_refuses_malformed(item: str) -> None:
    with pytest.raises(ValueError, match="SERIES:PARAM=VALUE"):
        parse_wrong([item])


def test_simulate_writes_a_session_with_the_wrong_parameter(tmp_path: Path) -> None:
    assert main(["simulate", str(tmp_path), "--scale", "0.02", "--rate", "0",
                 "--wrong", "rest:TR=2000"]) == 0
    (session,) = tmp_path.iterdir()
    trs = {}
    for f in sorted(session.iterdir()):
        h = read_header(f)
        assert isinstance(h, dict), h
        trs[h["SeriesNumber"]] = (h["SequenceName"], h["TR"])
    assert len(trs) == 7
    assert [name for name, tr in trs.values() if tr == 2000.0] == ["rest"]


def test_simulate_refuses_unknown_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", str(tmp_path), "--wrong", "nope:TR=1"]) == 2
    assert "no series" in capsys.readouterr().err
