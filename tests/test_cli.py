"""``mrqart import``, ``check`` and ``templates`` through ``cli.main`` with a temporary database."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from mrqart.cli import main
from mrqart.rules.check import template_name
from mrqart.synth import PROTOCOL, write_dicom, write_session

WHEN = dt.datetime(2024, 10, 16, 16, 50, 16)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "new-dir" / "mrqart.sqlite"  # the parent does not exist yet


@pytest.fixture
def imported(tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """The database after importing one small session; returns the session directory."""
    session = write_session(tmp_path / "archive", when=WHEN, scale=0.02)
    assert main(["import", str(tmp_path / "archive"), "--db", str(db)]) == 0
    capsys.readouterr()
    return session


def test_import_summary_and_rerun(imported: Path, db: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    (imported / "broken.dcm").write_bytes(b"DICM")
    assert main(["import", str(imported), "--db", str(db)]) == 0
    out, err = capsys.readouterr()
    assert f"0 series added, {len(PROTOCOL)} already recorded (skipped), 1 unreadable files" in out
    assert "broken.dcm: not DICOM" in out
    assert "files/s" in err


def test_import_missing_path(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(tmp_path / "nope"), "--db", str(db)]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_check_exit_status(imported: Path, db: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    good = next(imported.glob("001_000005_*.dcm"))  # rest
    bad = tmp_path / "bad.dcm"
    write_dicom(bad, SequenceName="rest", TR=2000.0)
    unknown = tmp_path / "unknown.dcm"
    write_dicom(unknown, SequenceName="never_seen")
    junk = tmp_path / "junk.dcm"
    junk.write_text("not dicom")

    assert main(["check", str(good), str(unknown), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert f"{good}: conform (MRQART_test / rest)" in out
    assert f"{unknown}: no template (MRQART_test / never_seen)" in out

    assert main(["check", str(good), str(bad), str(junk), "--db", str(db)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: nonconform (MRQART_test / rest)\n    TR should be 1300 but is 2000\n" in out

    assert main(["check", str(good), str(junk), "--db", str(db)]) == 2
    assert f"{junk}: unreadable: not DICOM" in capsys.readouterr().out


def test_check_json_and_rules(imported: Path, db: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.dcm"
    write_dicom(bad, SequenceName="rest", TR=1303.0)
    assert main(["check", "--json", str(bad), "--db", str(db)]) == 1
    [verdict] = json.loads(capsys.readouterr().out)
    assert verdict["path"] == str(bad) and verdict["status"] == "nonconform"
    assert verdict["errors"] == {"TR": {"expect": 1300.0, "have": 1303.0}}

    rules = tmp_path / "rules.toml"
    rules.write_text("[TR]\ntol = 5\n")
    assert main(["check", str(bad), "--rules", str(rules), "--db", str(db)]) == 0
    rules.write_text("[TR]\ntolerance = 5\n")
    assert main(["check", str(bad), "--rules", str(rules), "--db", str(db)]) == 2
    assert "unknown field 'tolerance'" in capsys.readouterr().err


def test_templates_list(imported: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["ID", "SERIES", "VOTES", "STATE", "PROJECT", "SEQUENCE"]
    assert any("me_bold" in line and "14.2, 35.9, 57.6" in line for line in lines)
    assert main(["templates", "--json", "--db", str(db)]) == 0
    templates = json.loads(capsys.readouterr().out)
    # the field map's phase series has a template of its own (check.template_name)
    names = {template_name(p["fields"]) for p in PROTOCOL}
    assert "gre_field_mapping (phase)" in names
    assert {t["sequence_name"] for t in templates} == names


def test_templates_empty(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "--db", str(db)]) == 0
    assert "no templates yet" in capsys.readouterr().out


def test_templates_pin_set_and_unpin(imported: Path, db: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    # a second session whose rest had TR 2000: two parameter sets for rest
    write_session(tmp_path / "archive2", scale=0.02, wrong={"rest": {"TR": 2000.0}})
    assert main(["import", str(tmp_path / "archive2"), "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["templates", "--db", str(db), "--json", "sets", "mrqart_test", "REST"]) == 0
    sets = json.loads(capsys.readouterr().out)
    assert len(sets) == 2
    second = sets[1]["id"]
    assert main(["templates", "pin", "MRQART_test", "rest", "--set", str(second),
                 "--db", str(db)]) == 0
    assert f"pinned parameter set {second}" in capsys.readouterr().out
    assert main(["templates", "sets", "MRQART_test", "rest", "--db", str(db)]) == 0
    first_row = capsys.readouterr().out.splitlines()[1].split()
    assert first_row[:4] == [str(second), "1", "1", "pinned"]
    assert main(["templates", "unpin", "MRQART_test", "rest", "--db", str(db)]) == 0
    assert "unpinned" in capsys.readouterr().out
    assert main(["templates", "pin", "MRQART_test", "t1_mprage", "--set", str(second),
                 "--db", str(db)]) == 2
    assert "no parameter set" in capsys.readouterr().err


def test_templates_pin_from_file(imported: Path, db: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    ref = tmp_path / "ref.dcm"
    write_dicom(ref, SequenceName="rest", TR=1500.0)
    assert main(["templates", "pin", "MRQART_test", "rest", "--from-file", str(ref),
                 "--db", str(db)]) == 0
    capsys.readouterr()
    probe = tmp_path / "probe.dcm"
    write_dicom(probe, SequenceName="rest", TR=1300.0)
    assert main(["check", str(probe), "--db", str(db)]) == 1
    assert "TR should be 1500 but is 1300" in capsys.readouterr().out
    assert main(["templates", "pin", "Other", "rest", "--from-file", str(ref),
                 "--db", str(db)]) == 2
    assert "not Other x rest" in capsys.readouterr().err


def test_templates_pin_needs_a_source(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["templates", "pin", "P", "S", "--db", str(db)])
    assert info.value.code == 2
    assert "one of the arguments --set --from-file is required" in capsys.readouterr().err


def test_progress_bar_redraws_one_line() -> None:
    import io

    from mrqart.cli import _Progress

    stream = io.StringIO()
    bar = _Progress(stream)
    bar(0, 10)
    bar(5, 10)  # within 0.1 s of the last draw: skipped
    bar(10, 10)  # the end is always drawn
    bar.close()
    draws = stream.getvalue().split("\r")[1:]
    assert len(draws) == 2
    assert draws[-1].startswith("[" + "#" * 30 + "] 10/10 files ") and draws[-1].endswith("\n")


def test_database_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "db.sqlite"
    db.write_bytes(b"this is not an sqlite database" * 100)
    assert main(["templates", "--db", str(db)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mrqart templates: file is not a database")
    assert f"mrqart database: {db}" in err and "Traceback" not in err
