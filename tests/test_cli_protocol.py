"""``mrqart protocol show|pin|unpin`` through ``cli.main`` with a temporary database."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from mrqart.cli import main, parse_series_list
from mrqart.store import Store
from mrqart.synth import DEFAULT_FIELDS, PROTOCOL, write_session

SERIES = [(s["fields"].get("SequenceName", s["name"]), s["n_files"]) for s in PROTOCOL]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "mrqart.sqlite"


def record(db: Path, session: str, series: list[tuple[str, int]], day: int = 20) -> None:
    with Store(db) as store:
        for number, (name, n_files) in enumerate(series, start=1):
            store.record_series({**DEFAULT_FIELDS, "SequenceName": name, "SeriesNumber": number,
                                 "StudyUID": session, "AcqDate": f"202611{day}"},
                                n_files=n_files)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rest", [{"sequence_name": "rest", "n_files": None}]),
        ("localizer:3, rest:300 ,dwi", [{"sequence_name": "localizer", "n_files": 3},
                                        {"sequence_name": "rest", "n_files": 300},
                                        {"sequence_name": "dwi", "n_files": None}]),
        # only a trailing number is a count: a description may hold a colon
        ("fmap:phase:72", [{"sequence_name": "fmap:phase", "n_files": 72}]),
        ("ratio:a", [{"sequence_name": "ratio:a", "n_files": None}]),
    ],
)
def test_parse_series_list(text: str, expected: list[dict[str, Any]]) -> None:
    assert parse_series_list(text) == expected


@pytest.mark.parametrize("text", ["", "rest,,dwi", "rest:0", ":3"])
def test_parse_series_list_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_series_list(text)


def test_show_learnt_from_imported_sessions(tmp_path: Path, db: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two small sessions from the synthetic scanner, imported: the protocol is theirs."""
    for day in (20, 21):
        write_session(tmp_path / "archive", when=dt.datetime(2026, 11, day, 9), scale=0.02)
    assert main(["import", str(tmp_path / "archive"), "--db", str(db)]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "protocol", "show", "mrqart_TEST", "--db", str(db))
    assert code == 0
    assert out.splitlines()[0] == "protocol of mrqart_TEST, learnt from its 2 most recent sessions:"
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [row[1] for row in rows] == [name for name, _ in SERIES]
    code, out, _ = run(capsys, "protocol", "show", "MRQART_test", "--json", "--db", str(db))
    shown = json.loads(out)
    assert shown["pinned"] is False and shown["n_sessions"] == 2
    assert [e["sequence_name"] for e in shown["expected"]] == [name for name, _ in SERIES]


def test_show_without_history(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "protocol", "show", "Nobody", "--db", str(db))
    assert code == 0 and out.startswith("no protocol learnt for Nobody yet")


def test_pin_series_show_unpin(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(db, "s1", [("localizer", 3), ("rest", 300)])
    code, out, _ = run(capsys, "protocol", "pin", "MRQART_test", "--series",
                       "t1:192,rest", "--by", "dr who", "--db", str(db))
    assert (code, out) == (0, "pinned 2 series as the protocol of MRQART_test\n")
    with Store(db) as store:
        pinned = store.protocol_pinned_by("MRQART_test")
    assert pinned is not None and pinned["by"] == "dr who"
    code, out, _ = run(capsys, "protocol", "show", "MRQART_test", "--db", str(db))
    assert out.splitlines() == [f"protocol of MRQART_test, pinned by dr who on {pinned['at']}:",
                                "#  SERIES  FILES", "1  t1      192", "2  rest    any"]
    code, out, _ = run(capsys, "protocol", "unpin", "MRQART_test", "--db", str(db))
    assert "learnt from history again" in out
    code, out, _ = run(capsys, "protocol", "show", "MRQART_test", "--json", "--db", str(db))
    assert json.loads(out)["expected"] == [{"sequence_name": "localizer", "n_files": 3},
                                           {"sequence_name": "rest", "n_files": 300}]
    code, out, _ = run(capsys, "protocol", "unpin", "MRQART_test", "--db", str(db))
    assert out == "MRQART_test had no pinned protocol\n"


def test_pin_from_session(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(db, "1.2.3", [("localizer", 3), ("rest", 120)])
    assert main(["protocol", "pin", "MRQART_test", "--from-session", "1.2.3", "--db", str(db)]) == 0
    with Store(db) as store:
        assert store.pinned_protocol("MRQART_test") == [
            {"sequence_name": "localizer", "n_files": 3}, {"sequence_name": "rest",
                                                           "n_files": 120}]
    code, _, err = run(capsys, "protocol", "pin", "MRQART_test", "--from-session", "9.9",
                       "--db", str(db))
    assert code == 2 and "no series recorded for session 9.9" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["protocol"],  # an action is required
        ["protocol", "pin", "P"],  # a source is required
        ["protocol", "pin", "P", "--series", "a", "--from-session", "s"],  # only one
        ["protocol", "pin", "P", "--series", "rest:0"],
    ],
)
def test_usage_errors(db: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--db", str(db)])
    assert exit_.value.code == 2
    assert "usage: mrqart protocol" in capsys.readouterr().err
