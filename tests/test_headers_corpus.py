"""read_header on real scanner files (tests/data): every field against pydicom and against
dcm2niix's JSON sidecars.

tests/data holds header-only copies of files from four public BSD-licensed dcm2niix
test sets (LICENSE beside each set; tests/data/README.md).  A disagreement fails with
the file, the field and both values.  A sidecar is matched to a file by its set,
SeriesNumber and SeriesDescription; multi-echo series have one sidecar per echo.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from sidecar import close, comparisons

from mrqart.headers import HEADER_KEYS, NULL, read_header
from mrqart.rules.check import PARAMS, check

DATA = Path(__file__).with_name("data")
FILES = sorted(p for p in DATA.glob("*/In/**/*") if p.is_file())
SETS = ("dcm_qa_nih", "dcm_qa_fmap", "dcm_qa_xa30", "dcm_qa_xa30i")


def name(path: Path) -> str:
    return str(path.relative_to(DATA))


def dataset(path: Path) -> Dataset:
    with warnings.catch_warnings():  # GE writes over-long SH values
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(path, stop_before_pixels=True)


def ours(path: Path) -> dict[str, Any]:
    result = read_header(path)
    assert isinstance(result, dict), f"{name(path)}: {result}"
    return result


def test_corpus_is_complete() -> None:
    # Guards every parametrized test below against an empty or partial copy.
    assert len(FILES) >= 20
    for data_set in SETS:
        assert (DATA / data_set / "LICENSE").read_text().startswith("BSD 2-Clause License")
        assert any(p.parts[len(DATA.parts)] == data_set for p in FILES), data_set
    vendors = {str(dataset(p).Manufacturer).split()[0].upper() for p in FILES}
    assert vendors == {"SIEMENS", "GE", "PHILIPS"}


# --- against pydicom ----------------------------------------------------------------------


def macro(ds: Dataset, keyword: str) -> Dataset | None:
    """An enhanced file's functional-group macro: first frame's, else the shared one."""
    for group in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = ds.get(group)
        if items and keyword in items[0] and len(items[0][keyword].value):
            return items[0][keyword][0]
    return None


def from_groups(ds: Dataset, keyword: str, element: str) -> Any:
    item = macro(ds, keyword)
    return item.get(element) if item is not None else None


def private(ds: Dataset, group: int, creator: str, offset: int, nested_in: str | None = None) -> Any:
    """A private value by creator: top level, or nested as the XA blocks are."""
    source = ds
    if nested_in is not None:
        items = ds.get(nested_in)
        if not items:
            return None
        source = items[0]
        try:
            holder = source.private_block(group, creator)
        except KeyError:
            return None
        source = source[holder.get_tag(0xFE)].value[0]
    try:
        block = source.private_block(group, creator)
    except KeyError:
        return None
    tag = block.get_tag(offset)
    return source[tag].value if tag in source else None


def number(value: Any) -> Any:
    if value is None or value == "":
        return NULL
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return [float(v) for v in value]
    return float(value)


def expected_from_pydicom(ds: Dataset) -> dict[str, Any]:
    """What read_header must give, read independently with pydicom."""
    enhanced = "SharedFunctionalGroupsSequence" in ds
    out: dict[str, Any] = {
        "SeriesNumber": int(ds.SeriesNumber),
        "InstanceNumber": int(ds.InstanceNumber),
        "StudyUID": ds.StudyInstanceUID,
        "SeriesUID": ds.SeriesInstanceUID,
        "SequenceName": ds.get("SeriesDescription") or NULL,
        "Station": ds.get("StationName") or NULL,
        "Manufacturer": ds.Manufacturer,
        "ImageType": list(ds.ImageType),
        "Frames": int(ds.get("NumberOfFrames") or 1),
    }
    if enhanced:
        tr = from_groups(ds, "MRTimingAndRelatedParametersSequence", "RepetitionTime")
        fa = from_groups(ds, "MRTimingAndRelatedParametersSequence", "FlipAngle")
        direction = from_groups(ds, "MRFOVGeometrySequence", "InPlanePhaseEncodingDirection")
        spacing = from_groups(ds, "PixelMeasuresSequence", "PixelSpacing")
        bwp = from_groups(ds, "MRImagingModifierSequence", "PixelBandwidth")
        times = [
            float(frame.MREchoSequence[0].EffectiveEchoTime)
            for frame in ds.PerFrameFunctionalGroupsSequence
            if float(frame.MREchoSequence[0].EffectiveEchoTime) > 0
        ]
        out.update(
            TR=number(tr), FA=number(fa), PixelResol=number(spacing), BWP=number(bwp),
            PED_major={"COLUMN": "COL"}.get(direction, direction),
            TE=times[0], EchoTimes=list(dict.fromkeys(times)),
        )  # fmt: skip
    else:
        out.update(
            TR=number(ds.RepetitionTime), FA=number(ds.FlipAngle), TE=number(ds.EchoTime),
            PixelResol=number(ds.PixelSpacing), BWP=number(ds.PixelBandwidth),
            PED_major=ds.InPlanePhaseEncodingDirection, EchoTimes=[float(ds.EchoTime)],
            Matrix=[int(v) for v in ds.AcquisitionMatrix],
        )  # fmt: skip
    maker = str(ds.Manufacturer).upper()
    if maker.startswith("SIEMENS") and "SIEMENS CSA HEADER" not in str(ds.get((0x0029, 0x0010))):
        shared, frame = (
            ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
            if enhanced else (None, None)
        )  # fmt: skip
        sds = "SIEMENS MR SDS 01"
        sdi = "SIEMENS MR SDI 02"
        out["Phase"] = int(private(ds, 0x0021, sdi, 0x1C, frame))
        out["FoV"] = private(ds, 0x0021, sds, 0x5E, shared)
        bwppe = private(ds, 0x0021, sdi, 0x53, frame)
        out["BWPPE"] = NULL if bwppe is None else float(bwppe)
        if (text := private(ds, 0x0021, sds, 0x09, shared)) is not None:
            out["iPAT"] = text
        # Interoperability files: (0018,0024); enhanced: (0018,9005) PulseSequenceName.
        out["SequenceType"] = ds.get("SequenceName") or ds.get("PulseSequenceName")
    if maker.startswith("GE"):
        out["SequenceType"] = private(ds, 0x0019, "GEMS_ACQU_01", 0x9C)
        out["Shims"] = [int(private(ds, 0x0043, "GEMS_PARM_01", off)) for off in (2, 3, 4)]
    return out


@pytest.mark.parametrize("path", FILES, ids=name)
def test_every_field_agrees_with_pydicom(path: Path) -> None:
    result = ours(path)
    assert list(result) == list(HEADER_KEYS)
    assert json.loads(json.dumps(result)) == result
    expected = expected_from_pydicom(dataset(path))
    wrong = [
        f"{name(path)}: {key}: mrqart {result[key]!r} != pydicom {value!r}"
        for key, value in expected.items()
        if result[key] != value
    ]
    assert not wrong, "\n".join(wrong)


# --- against dcm2niix -----------------------------------------------------------------------


def sidecars(path: Path) -> list[dict[str, Any]]:
    ds = dataset(path)
    refs = DATA / path.relative_to(DATA).parts[0] / "Ref"
    found = []
    for ref in sorted(refs.glob("*.json")):
        doc = json.loads(ref.read_text())
        if doc.get("SeriesNumber") == int(ds.SeriesNumber) and doc.get(
            "SeriesDescription"
        ) == ds.SeriesDescription:
            found.append(doc)
    return found


@pytest.mark.parametrize("path", FILES, ids=name)
def test_every_field_agrees_with_dcm2niix(path: Path) -> None:
    header = ours(path)
    docs = sidecars(path)
    assert docs, f"{name(path)}: no dcm2niix sidecar"
    wrong, compared = [], 0
    for doc in docs:
        for field, mine, theirs, agree in comparisons(header, doc):
            compared += 1
            if not agree and field.split()[0].split("[")[0] not in header["not_recorded"]:
                wrong.append(f"{name(path)}: {field}: mrqart {mine!r} != dcm2niix {theirs!r}")
    # TE: one of the series' echoes (multi-echo series have a sidecar per echo).
    echoes = [d[k] * 1000 for d in docs for k in ("EchoTime", "EchoTime1", "EchoTime2") if k in d]
    if echoes:
        compared += 1
        if not any(close(header["TE"], te, 0.001) for te in echoes):
            wrong.append(f"{name(path)}: TE: mrqart {header['TE']!r} not in dcm2niix {echoes!r}")
    assert compared >= 6, f"{name(path)}: only {compared} fields compared"
    assert not wrong, "\n".join(wrong)


# --- what each scanner does not record ------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=name)
def test_not_recorded_fields_are_null_and_never_flagged(path: Path) -> None:
    header = ours(path)
    for key in header["not_recorded"]:
        assert key in PARAMS or key in HEADER_KEYS, key
        assert header[key] == NULL, f"{name(path)}: {key} is not_recorded but {header[key]!r}"
    template = {p: "something else" for p in PARAMS}
    errors = check(header, template)["errors"]
    assert not set(errors) & set(header["not_recorded"])
    assert set(errors) == set(PARAMS) - set(header["not_recorded"])


NULL_RATE_KEYS = [k for k in HEADER_KEYS if k not in ("Frames", "EchoTimes", "not_recorded")]


@pytest.mark.parametrize(
    ("software", "most_nulls"),
    # What the files lack: iPAT of unaccelerated series, operator, comments, project on
    # anonymised files, BWPPE of non-EPI Siemens series; EchoNumber in enhanced files;
    # the not_recorded fields of XA enhanced (TA), GE and Philips.
    [("E11", 4), ("XA30", 6), ("DV26", 8), ("MR29", 9), ("5.3", 11)],
)
def test_null_rate_per_scanner(software: str, most_nulls: int) -> None:
    headers = [ours(p) for p in FILES if software in str(dataset(p).SoftwareVersions)]
    assert headers, software
    for header in headers:
        nulls = [k for k in NULL_RATE_KEYS if header[k] == NULL]
        assert len(nulls) <= most_nulls, (software, nulls)
        # The fields the checks depend on are never null on a real scanner's file.
        for key in ("TR", "TE", "FA", "PED_major", "PixelResol", "BWP", "SequenceType"):
            assert header[key] != NULL, (software, key)
