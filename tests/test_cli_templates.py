"""``mrqart templates`` accept / history / sets / export / import and ``mrqart import``
learning the majority, through ``cli.main`` with temporary databases."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from mrqart.cli import main
from mrqart.rules.template_file import FORMAT, TemplateFileError, from_document
from mrqart.store import Store
from mrqart.synth import write_dicom, write_session

DATA = Path(__file__).parent / "data"
START = dt.datetime(2024, 10, 1, 9, 0, 0)
# an archive of six sessions a week apart; the first and the fourth had rest at TR 2000
WRONG = {0: {"rest": {"TR": 2000.0}}, 3: {"rest": {"TR": 2000.0}}}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    for week in range(6):
        write_session(root, when=START + dt.timedelta(weeks=week), scale=0.02,
                      wrong=WRONG.get(week))
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def rest_sessions(db: Path) -> dict[float, list[str]]:
    """The keys (SESSION:NUMBER) of the recorded rest series by TR."""
    out: dict[float, list[str]] = {}
    with Store(db) as store:
        for day in ("20241001", "20241022"):
            for row in store.series_on(day):
                if row["header"]["SequenceName"] == "rest":
                    out.setdefault(row["header"]["TR"], []).append(
                        f"{row['session']}:{row['series_number']}")
    return out


def test_import_learns_the_majority_and_sets_show_the_minority(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "db.sqlite")
    assert run(capsys, "import", str(archive), "--db", db)[0] == 0
    # the first session imported was a wrong one; the majority still wins
    status, out, _ = run(capsys, "templates", "--db", db, "--json", "sets", "MRQART_test", "rest")
    sets = json.loads(out)
    assert [(s["params"]["TR"], s["count"], s["established"]) for s in sets] == [
        (1300.0, 4, True), (2000.0, 2, False)]
    assert (sets[1]["first_seen"][:8], sets[1]["last_seen"][:8]) == ("20241001", "20241022")
    # without a name: every template with competing sets, minority rows with their dates
    status, out, _ = run(capsys, "templates", "sets", "--db", db)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "SERIES", "VOTES", "STATE"]
    assert len(lines) == 3  # header, rest's template, its minority set
    minority = lines[2].split()
    assert minority[1:3] == ["2", "2"] and "2000" in minority
    assert "2024-10-01" in lines[2] and "2024-10-22" in lines[2]
    assert "template" in lines[1]
    status, out, err = run(capsys, "templates", "sets", "MRQART_test", "--db", db)
    assert status == 2 and "both PROJECT and SEQUENCE" in err
    # the history says how the template came to be, every change with its reason
    status, out, _ = run(capsys, "templates", "--db", db, "--json", "history", "MRQART_test",
                         "rest")
    assert [(h["kind"], h["params"]["TR"], h["reason"]) for h in json.loads(out)] == [
        ("learnt", 2000.0, "first trusted series"),
        ("learnt", 1300.0, "2 trusted series against 1 for the established set"),
    ]


def test_accept_from_the_command_line(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tmp_path / "db.sqlite")
    run(capsys, "import", str(archive), "--db", db)
    key = rest_sessions(Path(db))[2000.0][0]
    status, _, err = run(capsys, "templates", "accept", key, "--reason", " ", "--db", db)
    assert status == 2 and "--reason" in err
    status, _, err = run(capsys, "templates", "accept", "nope", "--reason", "r", "--db", db)
    assert status == 2 and "SESSION:NUMBER" in err
    status, _, err = run(capsys, "templates", "accept", "nope:5", "--reason", "r", "--db", db)
    assert status == 2 and "no series 5" in err
    monkeypatch.setenv("USER", "physicist")
    monkeypatch.setenv("LOGNAME", "physicist")
    status, out, _ = run(capsys, "templates", "accept", key, "--reason", "protocol v2",
                         "--db", db)
    assert status == 0 and "by physicist: protocol v2" in out
    status, out, _ = run(capsys, "templates", "history", "MRQART_test", "rest", "--db", db)
    last = out.splitlines()[-1]
    assert "accepted" in last and "physicist" in last and "2000" in last
    assert f"protocol v2 (series 5 of {key.rpartition(':')[0]})" in last
    bad = tmp_path / "bad.dcm"
    write_dicom(bad, SequenceName="rest", TR=1300.0)
    status, out, _ = run(capsys, "check", str(bad), "--db", db)
    assert status == 1 and "TR should be 2000 but is 1300" in out


def verdicts(capsys: pytest.CaptureFixture[str], db: str, files: list[Path]) -> list[Any]:
    main(["check", "--json", *map(str, files), "--db", db])
    return [(v["status"], v.get("errors")) for v in json.loads(capsys.readouterr().out)]


def test_export_then_import_gives_the_same_verdicts(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site_a, site_b = str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")
    run(capsys, "import", str(archive), "--db", site_a)
    run(capsys, "templates", "accept", rest_sessions(Path(site_a))[2000.0][0], "--reason",
        "protocol v2", "--by", "ana", "--db", site_a)
    real = sorted(p for p in DATA.rglob("*") if p.is_file() and p.suffix in ("", ".dcm")
                  and "Ref" not in p.parts and p.name not in ("LICENSE", "README.md"))
    assert len(real) >= 10
    run(capsys, "import", *map(str, real), "--db", site_a)
    # the same files at both sites: good and wrong synthetic ones, and the real ones
    files = [next(archive.rglob("001_000005_000001.dcm")), *real]
    for tr in (1300.0, 2000.0, 2500.0):
        files.append(tmp_path / f"rest_{tr}.dcm")
        write_dicom(files[-1], SequenceName="rest", TR=tr)
    with Store(site_a) as store:
        projects = sorted({t["project"] for t in store.templates()})
    assert len(projects) > 1  # the real files name their own projects
    before = verdicts(capsys, site_a, files)
    assert {s for s, _ in before} >= {"conform", "nonconform"}

    assert run(capsys, "templates", "import", str(tmp_path / "x.json"), "--db", site_b)[0] == 2
    for n, project in enumerate(projects):
        status, out, _ = run(capsys, "templates", "export", project, "--db", site_a)
        assert status == 0
        doc = json.loads(out)
        assert doc["format"] == FORMAT and doc["project"] == project
        path = tmp_path / f"project{n}.json"
        path.write_text(out)
        status, out, _ = run(capsys, "templates", "import", str(path), "--by", "bo",
                             "--db", site_b)
        assert status == 0 and f"imported {len(doc['acquisitions'])} templates" in out
    assert verdicts(capsys, site_b, files) == before
    # the accepted history travelled with it, and the import is in it
    status, out, _ = run(capsys, "templates", "--db", site_b, "--json", "history",
                         "MRQART_test", "rest")
    history = [(h["kind"], h["by"], h["reason"]) for h in json.loads(out)]
    n = projects.index("MRQART_test")
    assert history[-2:] == [("accepted", "ana", "protocol v2"),
                            ("imported", "bo", f"imported from project{n}.json")]


def test_a_file_states_tolerances_ranges_and_allowed_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "db.sqlite")
    sample = tmp_path / "rest.dcm"
    write_dicom(sample, SequenceName="rest")
    run(capsys, "import", str(sample), "--db", db)
    out = run(capsys, "templates", "export", "MRQART_test", "--db", db)[1]
    doc = json.loads(out)
    fields = {f["field"]: f for f in doc["acquisitions"]["rest"]["fields"]}
    assert fields["TR"] == {"field": "TR", "dicom": "(0018,0080) RepetitionTime",
                            "value": 1300.0, "tolerance": 1.0}
    assert fields["SequenceType"] == {"field": "SequenceType",
                                      "dicom": "(0018,0024) SequenceName",
                                      "value": "epfid2d1_96"}
    fields["TR"] = {"field": "TR", "min": 1200, "max": 1400}
    fields["FA"] = {"field": "FA", "contains_any": [52.0, 60.0]}
    fields["BWP"] = {"field": "BWP", "value": 2264.0, "tolerance": 10.0}
    doc["acquisitions"]["rest"]["fields"] = list(fields.values())
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    other = str(tmp_path / "other.sqlite")
    assert run(capsys, "templates", "import", str(path), "--db", other)[0] == 0
    cases = [({"TR": 1390.0, "FA": 52.0, "BWP": 2270.0}, "conform"),
             ({"TR": 1450.0}, "nonconform"), ({"FA": 55.0}, "nonconform"),
             ({"BWP": 2280.0}, "nonconform")]
    for i, (fields_, expected) in enumerate(cases):
        write_dicom(tmp_path / f"{i}.dcm", SequenceName="rest", **fields_)
        assert verdicts(capsys, other, [tmp_path / f"{i}.dcm"])[0][0] == expected, fields_
    # and it exports as it came
    out = run(capsys, "templates", "export", "MRQART_test", "--db", other)[1]
    again = {f["field"]: f for f in json.loads(out)["acquisitions"]["rest"]["fields"]}
    assert again["TR"]["min"] == 1200 and again["FA"]["contains_any"] == [52.0, 60.0]
    assert again["BWP"]["tolerance"] == 10.0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"format": "dicompare"}, "not a template file"),
        ({"format": FORMAT, "version": 9}, "version 9"),
        ({"format": FORMAT, "version": 1, "acquisitions": {}}, "non-empty"),
        ({"format": FORMAT, "version": 1, "acquisitions": {"rest": {"fields": [
            {"field": "RepetitionTime", "value": 1}]}}}, "field must be one of"),
        ({"format": FORMAT, "version": 1, "acquisitions": {"rest": {"fields": [
            {"field": "TR", "min": 2, "max": 1}]}}}, "min is above max"),
        ({"format": FORMAT, "version": 1, "acquisitions": {"rest": {"fields": [
            {"field": "TR", "value": 1, "tolerance": "x"}]}}}, "expected a number"),
        ({"format": FORMAT, "version": 1, "acquisitions": {"rest": {"fields": [
            {"field": "TR"}]}}}, "give value"),
        ({"format": FORMAT, "version": 1, "acquisitions": {"rest": {"fields": [],
          "history": [{"kind": "hacked", "at": "", "by": "", "reason": ""}]}}}, "history"),
    ],
)
def test_malformed_files_are_refused(doc: Any, message: str) -> None:
    with pytest.raises(TemplateFileError, match=message):
        from_document(doc)
