"""The pure session state: which files need a header, counting, eviction, views."""

from __future__ import annotations

import pytest

from mrqart.live import session
from mrqart.live.session import Known, NeedHeader, SessionState, series_from_name


@pytest.mark.parametrize(
    ("name", "series"),
    [
        ("001_000017_000066.dcm", 17),
        ("/s/20241016.X/001_000003_000001.dcm", 3),
        ("001_000017_000066", 17),
        ("MR.1.3.12.2.1107.5.2.43", None),
        ("001_000017.dcm", None),
        ("image.dcm", None),
    ],
)
def test_series_from_name(name: str, series: int | None) -> None:
    assert series_from_name(name) == series


def header(series: int = 17, study: str = "1.2.3", station: str = "AWP1", seq: str = "rest") -> dict:
    return {"StudyUID": study, "SeriesNumber": series, "Station": station, "SequenceName": seq}


RESULT = {"conforms": True, "errors": {}, "input": {}, "template": {}, "status": "conform"}


def test_first_file_needs_a_header_then_names_suffice() -> None:
    state = SessionState()
    first = "/in/sess/001_000017_000001.dcm"
    assert state.route(first) == NeedHeader()
    key = state.key_for(first, header())
    state.add_series(key, header(), RESULT, first, now=1.0)
    assert state.route("/in/sess/001_000017_000002.dcm") == Known(key)
    # a new series in the same directory still needs its header
    assert state.route("/in/sess/001_000018_000001.dcm") == NeedHeader()
    # the same series number in another session directory is another series
    assert state.route("/in/other/001_000017_000002.dcm") == NeedHeader()


def test_counts_distinct_files_and_marks_them_dirty() -> None:
    state = SessionState()
    path = "/in/sess/001_000017_000001.dcm"
    key = state.key_for(path, header())
    state.add_series(key, header(), RESULT, path, now=1.0)
    assert state.add_file(key, "/in/sess/001_000017_000002.dcm", now=2.0) == 2
    assert state.add_file(key, "/in/sess/001_000017_000002.dcm", now=3.0) is None  # seen before
    assert [s.key for s in state.take_dirty()] == [key]
    assert state.take_dirty() == []


def test_unparseable_names_key_on_the_header() -> None:
    state = SessionState()
    key = state.key_for("/in/sess/MR.1", header(series=5))
    assert key == "1.2.3:5"
    assert state.route("/in/sess/MR.2") == NeedHeader()


def test_restore_keeps_counts_from_going_back() -> None:
    state = SessionState()
    row = {"station": "AWP1", "session": "1.2.3", "header": header(), "n_files": 300}
    state.restore([row], [RESULT])
    key = state.key_for("/in/sess/001_000017_000001.dcm", header())
    assert state.knows(key)
    assert state.add_file(key, "/in/sess/001_000017_000001.dcm", now=1.0) is None
    assert state.series_of("AWP1")[0]["n_files"] == 300


def test_views_newest_first_and_latest_per_station() -> None:
    state = SessionState()
    for n in (1, 2, 3):
        path = f"/in/sess/001_{n:06d}_000001.dcm"
        h = header(series=n, seq=f"s{n}")
        state.add_series(state.key_for(path, h), h, {**RESULT, "input": h}, path, now=float(n))
    assert [s["series_number"] for s in state.series_of("AWP1")] == [3, 2, 1]
    assert state.latest()["AWP1"]["content"]["input"]["SequenceName"] == "s3"
    assert state.stations()[0]["n_series"] == 3
    assert state.series_of("nope") is None


def test_old_series_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "MAX_SERIES_PER_STATION", 5)
    state = SessionState()
    for n in range(1, 9):
        path = f"/in/sess/001_{n:06d}_000001.dcm"
        state.add_series(state.key_for(path, header(series=n)), header(series=n), RESULT, path, 1.0)
    assert [s["series_number"] for s in state.series_of("AWP1")] == [8, 7, 6, 5, 4]
    assert not state.knows("1.2.3:1")


@pytest.mark.parametrize(
    ("names", "count"),
    [
        ([], 0),
        (["001_000017_000001.dcm", "001_000017_000002.dcm", "001_000017_000001.dcm"], 2),
        (["MR.1", "MR.2", "MR.1"], 2),
        (["001_000017_000009.dcm", "MR.9", "001_000017_000009.dcm"], 2),
        ([f"001_000017_{i:06d}.dcm" for i in range(1, 1001)] * 2, 1000),
        (["001_000017_9999999.dcm", "001_000017_9999999.dcm"], 1),  # past MAX_IMAGE: a name
    ],
)
def test_file_set_counts_distinct_names(names: list[str], count: int) -> None:
    files = session.FileSet()
    added = [files.add(n) for n in names]
    assert len(files) == count == sum(added)
