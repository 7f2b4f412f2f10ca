"""``mrqart import`` on archives the synthetic scanner writes."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mrqart.importer import SeriesFiles, group, import_paths, read_series, walk
from mrqart.store import Store
from mrqart.synth import PROTOCOL, write_dicom, write_session

WHEN = dt.datetime(2024, 10, 16, 16, 50, 16)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store(":memory:") as s:
        yield s


@pytest.fixture
def inline() -> Iterator[ThreadPoolExecutor]:
    # One thread: the same code path as the process pool without forking.
    with ThreadPoolExecutor(1) as pool:
        yield pool


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sessions of the whole protocol (a few files per series), plus junk."""
    root = tmp_path_factory.mktemp("archive")
    first = write_session(root, when=WHEN, scale=0.02)
    write_session(root, when=WHEN + dt.timedelta(days=1), scale=0.02, subject="sub02",
                  wrong={"rest": {"TR": 2000.0}})
    (first / "001_000099_000001.dcm").write_bytes(b"")  # a series whose only file is empty
    (first / "notes.txt").write_text("operator notes\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.dcm").write_bytes(b"")
    return root


def test_walk_and_group_by_scanner_name(tmp_path: Path) -> None:
    for name in ("001_000002_000010.dcm", "001_000002_000009.dcm", "001_000003_000001.dcm",
                 "IM0001", ".DS_Store"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "001_000002_000001.dcm").write_bytes(b"")
    series, loose = group(walk([tmp_path]))
    d, sub = str(tmp_path), str(tmp_path / "sub")
    assert series == [
        SeriesFiles(d, 2, (f"{d}/001_000002_000009.dcm", f"{d}/001_000002_000010.dcm")),
        SeriesFiles(d, 3, (f"{d}/001_000003_000001.dcm",)),
        SeriesFiles(sub, 2, (f"{sub}/001_000002_000001.dcm",)),
    ]
    assert loose == [f"{d}/IM0001"]


@pytest.mark.parametrize(
    ("echoes", "reads_at_most"),
    [
        ([1] * 6, 3),  # single echo: first, second (a repeat), last
        ([1, 2, 3] * 4, 5),  # interleaved: 1 2 3 1, then last
        ([1] * 4 + [2] * 4 + [3] * 4, 5),  # in blocks: first, second, last, block starts
        ([1], 1),
    ],
)
def test_read_series_finds_every_echo(tmp_path: Path, echoes: list[int],
                                      reads_at_most: int, monkeypatch: pytest.MonkeyPatch) -> None:
    times = {1: 14.2, 2: 35.9, 3: 57.6}
    files = []
    for i, echo in enumerate(echoes, start=1):
        path = tmp_path / f"001_000005_{i:06d}.dcm"
        write_dicom(path, EchoNumber=echo, TE=times[echo], InstanceNumber=i)
        files.append(str(path))
    from mrqart import importer

    reads: list[str] = []
    real = importer.read_header

    def counting(path: str) -> object:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(importer, "read_header", counting)
    result = read_series(files)
    assert [h["EchoNumber"] for h in result.headers] == sorted(set(echoes))
    assert [h["TE"] for h in result.headers] == [times[e] for e in sorted(set(echoes))]
    assert result.n_files == len(echoes) and result.unreadable == ()
    assert len(reads) <= reads_at_most


def test_read_series_skips_unreadable_first_file(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"\0" * 200)
    write_dicom(tmp_path / "b.dcm")
    result = read_series([str(tmp_path / "a.dcm"), str(tmp_path / "b.dcm")])
    assert len(result.headers) == 1
    assert [u.path for u in result.unreadable] == [str(tmp_path / "a.dcm")]


def test_import_archive(archive: Path, store: Store, inline: ThreadPoolExecutor) -> None:
    calls: list[tuple[int, int]] = []
    report = import_paths([archive], store, executor=inline,
                          progress=lambda done, total: calls.append((done, total)))
    n_series = len(PROTOCOL)
    assert report.added == 2 * n_series and report.skipped == 0
    assert sorted(os.path.basename(u.path) for u in report.unreadable) == [
        "001_000099_000001.dcm", "notes.txt"]
    assert calls[-1] == (report.n_files, report.n_files)
    assert report.n_files == sum(1 for _ in walk([archive]))

    # rest: one session with TR 1300, one with 2000: a tie keeps the set recorded first
    rest = store.param_sets("mrqart_test", "REST")
    assert sorted(s["params"]["TR"] for s in rest) == [1300.0, 2000.0]
    assert rest[0]["established"] and not rest[1]["established"]
    assert [h["set_id"] for h in store.history("mrqart_test", "REST")] == [rest[0]["id"]]
    # multi-echo series: TE is the list of its echo times
    assert store.param_sets("MRQART_test", "me_bold")[0]["params"]["TE"] == [14.2, 35.9, 57.6]
    # the field map's magnitude (two echoes) and phase share a description, not a template
    magnitude = store.param_sets("MRQART_test", "gre_field_mapping")
    assert [s["params"]["TE"] for s in magnitude] == [[4.92, 7.38]]
    phase = store.param_sets("MRQART_test", "gre_field_mapping (phase)")
    assert [s["params"]["TE"] for s in phase] == [7.38]
    rows = store.series_on("20241016")
    assert {r["source"] for r in rows} == {"import"}
    me = next(r for r in rows if r["header"]["SequenceName"] == "me_bold")
    assert me["n_files"] == 3 * max(1, round(200 * 0.02))


def test_reimport_adds_nothing(archive: Path, store: Store, inline: ThreadPoolExecutor) -> None:
    first = import_paths([archive], store, executor=inline)
    again = import_paths([archive], store, executor=inline)
    assert (again.added, again.skipped) == (0, first.added)
    counts = [s["count"] for t in store.templates()
              for s in store.param_sets(t["project"], t["sequence_name"])]
    assert sum(counts) == first.added


def test_loose_files_grouped_by_series_uid(tmp_path: Path, store: Store,
                                           inline: ThreadPoolExecutor) -> None:
    session = write_session(tmp_path / "src", when=WHEN, scale=0.02)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, f in enumerate(sorted(session.iterdir())):
        shutil.copy(f, flat / f"IM{i:04d}")
    report = import_paths([flat], store, executor=inline)
    assert (report.added, report.unreadable) == (len(PROTOCOL), ())
    assert store.param_sets("MRQART_test", "me_bold")[0]["params"]["TE"] == [14.2, 35.9, 57.6]


def test_import_with_the_process_pool(archive: Path, store: Store) -> None:
    report = import_paths([archive], store)
    assert report.added == 2 * len(PROTOCOL)


def test_interrupted_import_keeps_what_it_committed(tmp_path: Path, store: Store,
                                                    inline: ThreadPoolExecutor) -> None:
    for n in range(1, 41):  # 40 single-file series: a chunk of 32, then 8
        write_dicom(tmp_path / f"001_{n:06d}_000001.dcm", SeriesNumber=n)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_paths([tmp_path], store, executor=inline, progress=interrupt)
    assert len(store.series_on("20241016")) == 32
    report = import_paths([tmp_path], store, executor=inline)
    assert (report.added, report.skipped) == (8, 32)


def test_enhanced_files_count_their_frames_as_live_does(tmp_path: Path, store: Store,
                                                        inline: ThreadPoolExecutor) -> None:
    # The same protocol written as classic single-frame files and as XA enhanced files
    # (several frames a file): the learnt counts must be images, as the live service
    # counts them, or a live XA session would look incomplete against its own history.
    classic = write_session(tmp_path / "classic", when=WHEN, scale=0.05)
    enhanced = write_session(tmp_path / "xa", when=WHEN, scale=0.05, vendor="xa")
    assert len(list(enhanced.iterdir())) < len(list(classic.iterdir()))
    import_paths([tmp_path / "classic"], store, executor=inline)
    with Store(":memory:") as xa_store:
        import_paths([tmp_path / "xa"], xa_store, executor=inline)
        counts = [{(s["series_number"], s["n_files"]) for s in db.series_on("20241016")}
                  for db in (store, xa_store)]
    assert counts[0] == counts[1]
    assert len(counts[0]) == len(PROTOCOL)
