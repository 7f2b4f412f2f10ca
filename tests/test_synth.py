"""The synthetic scanner: files other readers accept, sessions in scanner order."""

from __future__ import annotations

import datetime as dt
import time
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest

from mrqart import synth
from mrqart.headers import read_header

with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import ascconv, csareader

WHEN = dt.datetime(2024, 10, 16, 16, 50, 16)


@pytest.mark.parametrize(("vb", "tabs"), [(False, False), (False, True), (True, False)])
def test_file_is_siemens_like_for_pydicom_and_nibabel(tmp_path: Path, vb: bool, tabs: bool) -> None:
    path = tmp_path / "x.dcm"
    synth.write_dicom(path, ascconv_vb=vb, ascconv_tabs=tabs)
    ds = pydicom.dcmread(path)  # strict enough to reject a malformed file meta / dataset
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.Manufacturer == "SIEMENS"
    assert ds.pixel_array.shape == (4, 4)
    assert float(ds.RepetitionTime) == synth.DEFAULT_FIELDS["TR"]
    assert ds.private_block(0x0019, "SIEMENS MR HEADER")[0x28].value == 21.18

    image = csareader.get_csa_header(ds, "image")
    assert csareader.get_scalar(image, "PhaseEncodingDirectionPositive") == 1
    assert csareader.get_scalar(image, "ImaPATModeText") == "p2"
    series = csareader.get_csa_header(ds, "series")
    text = series["tags"]["MrPhoenixProtocol"]["items"][0]
    block = text[text.index("### ASCCONV BEGIN") : text.index("### ASCCONV END") + 19]
    prot, _ = ascconv.parse_ascconv(block, str_delim='""')
    offsets = prot["sGRADSPEC"] if vb else prot["sGRADSPEC"]["asGPAData"][0]
    assert [offsets["lOffset" + a] for a in "XYZ"] == synth.DEFAULT_FIELDS["Shims"][1:4]
    assert prot["sAdjData"]["uiAdjShimMode"] == synth.DEFAULT_FIELDS["Shims"][0]
    assert prot["tSequenceFileName"] == "%CustomerSeq%\\cmrr_mbep2d_bold"
    assert ("\t" in block) == tabs

    # Real CSA sizes: nibabel's 0.dcm carries 11,560 and 80,248 bytes.
    assert 10_000 < len(ds[0x0029, 0x1010].value) < 13_000
    assert 75_000 < len(ds[0x0029, 0x1020].value) < 90_000


def test_unknown_field_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="RepetitionTime"):
        synth.write_dicom(tmp_path / "x.dcm", RepetitionTime=2000)


def test_session_dirname() -> None:
    assert synth.session_dirname(WHEN, "MRQART_test") == (
        "20241016.MRQART_test.24.10.16_16_50_16_DST_1.3.12.2.1107.5.2.43.67078"
    )


def test_session_in_scanner_order(tmp_path: Path) -> None:
    seen: list[tuple[Path, int, int]] = []
    session = synth.write_session(
        tmp_path,
        when=WHEN,
        scale=0.02,
        wrong={"rest": {"TR": 2000.0}},
        progress=lambda p, i, n: seen.append((p, i, n)),
    )
    assert session == tmp_path / synth.session_dirname(WHEN, "MRQART_test")
    files = sorted(session.iterdir())
    assert [p for p, _, _ in seen] == files  # written in scanner (= name) order
    assert [i for _, i, _ in seen] == list(range(1, len(files) + 1))
    assert {n for _, _, n in seen} == {len(files)}

    headers = [read_header(p) for p in files]
    assert all(isinstance(h, dict) for h in headers)
    by_series: dict[int, list[dict[str, Any]]] = {}
    for path, h in zip(files, headers):
        _, series, image = path.stem.split("_")
        assert int(series) == h["SeriesNumber"]
        assert int(image) == h["InstanceNumber"]
        by_series.setdefault(h["SeriesNumber"], []).append(h)

    assert len({h["StudyUID"] for h in headers}) == 1
    assert len({h["SeriesUID"] for h in headers}) == len(synth.PROTOCOL)
    for number, spec in enumerate(synth.PROTOCOL, start=1):
        series_headers = by_series[number]
        echoes = spec.get("echo_times") or (None,)
        per_echo = max(1, round(spec["n_files"] * 0.02))
        assert len(series_headers) == per_echo * len(echoes)
        assert {h["SequenceName"] for h in series_headers} == {spec["fields"]["SequenceName"]}
        if len(echoes) > 1:  # consecutive images alternate echoes
            expected = [(i % len(echoes)) + 1 for i in range(len(series_headers))]
            assert [h["EchoNumber"] for h in series_headers] == expected
            assert [h["TE"] for h in series_headers] == [echoes[e - 1] for e in expected]
        tr = 2000.0 if spec["name"] == "rest" else spec["fields"].get("TR", 1300.0)
        assert {h["TR"] for h in series_headers} == {tr}


def test_scale_keeps_one_file_per_echo(tmp_path: Path) -> None:
    session = synth.write_session(tmp_path, when=WHEN, scale=0.0)
    n_echoes = sum(len(s.get("echo_times") or (None,)) for s in synth.PROTOCOL)
    assert len(list(session.iterdir())) == n_echoes


def test_rate_paces_writing(tmp_path: Path) -> None:
    protocol = [{"name": "rest", "n_files": 30, "fields": {}}]
    start = time.monotonic()
    synth.write_session(tmp_path, when=WHEN, rate=300.0, protocol=protocol)
    # 30 files at 300/s in bursts of 30: the last burst waits until 30/300 s.
    assert time.monotonic() - start >= 0.1


def test_sessions_started_in_one_second_get_their_own_directories(tmp_path: Path) -> None:
    protocol = [{"name": "rest", "n_files": 1, "fields": {}}]
    first = synth.write_session(tmp_path, protocol=protocol)
    second = synth.write_session(tmp_path, protocol=protocol)
    assert first != second
    assert (
        read_header(next(first.iterdir()))["StudyUID"]
        != read_header(next(second.iterdir()))["StudyUID"]
    )
