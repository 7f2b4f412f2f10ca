"""read_header: round trips through the generator, real Siemens files, and bad input."""

from __future__ import annotations

import collections
import gzip
import json
import os
import random
import struct
import warnings
from pathlib import Path
from typing import Any

import nibabel
import pydicom
import pytest
from pydicom.dataset import Dataset

from mrqart import synth
from mrqart.headers import HEADER_KEYS, NULL, Unreadable, read_header
from mrqart.headers import siemens_csa as csa
from mrqart.headers.elements import DERIVED_KEYS

with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import ascconv, csareader

NIBABEL_DATA = Path(os.path.dirname(nibabel.__file__)) / "nicom" / "tests" / "data"
MR_SMALL = pydicom.data.get_testdata_file("MR_small.dcm", download=False)


def written(tmp_path: Path, name: str = "x.dcm", **fields: Any) -> Path:
    path = tmp_path / name
    synth.write_dicom(path, **fields)
    return path


def header(path: Path) -> dict[str, Any]:
    result = read_header(path)
    assert isinstance(result, dict), result
    return result


# --- round trips through the generator ------------------------------------------------

# One non-default value per header key (a different type where the key allows one).
OTHER_VALUES: dict[str, Any] = {
    "Phase": 0,
    "iPAT": "p3",
    "AcqTime": "081502.517500",
    "AcqDate": "20250102",
    "SeriesNumber": 42,
    "SubID": "sub^02",
    "Comments": "MB4 PE3",
    "Operator": "Doe^Jane",
    "Station": "AWP99999",
    "Project": "Other^Project",
    "SequenceName": "ABCD_T1w",
    "SequenceType": "*tfl3d1_16ns",
    "PED_major": "ROW",
    "TR": 2000.0,
    "TE": 2.98,
    "FA": 8.5,
    "Matrix": [0, 256, 240, 0],
    "PixelResol": [0.8, 0.8125],
    "BWP": 240.0,
    "BWPPE": 3.906,
    "TA": "TA 05:12",
    "FoV": "FoV 256*240",
    "Shims": [2, -1, 0, 12345, -300, 0, 7, -8, 9, 123254321],
    "SequenceFile": "%SiemensSeq%/tfl",
    "Manufacturer": "Siemens Healthineers",
    "SoftwareVersions": "syngo MR XA30",
    "StudyUID": "1.2.3.4.5",
    "SeriesUID": "1.2.3.4.5.6",
    "EchoNumber": 3,
    "InstanceNumber": 1234,
    "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"],
}  # and the derived keys (DERIVED_KEYS), which the generator computes


def test_defaults_round_trip(tmp_path: Path) -> None:
    result = header(written(tmp_path))
    assert result == synth.DEFAULT_FIELDS
    assert list(result) == list(HEADER_KEYS)
    assert json.loads(json.dumps(result)) == result  # JSON-native all the way


# Keys stored in an element of their own (Frames, EchoTimes, not_recorded are derived).
STORED_KEYS = [k for k in HEADER_KEYS if k not in DERIVED_KEYS]
# A single-frame file's EchoTimes is [TE]: changing TE changes it too.
FOLLOWS = {"TE": lambda te: {"EchoTimes": [te] if te != NULL else NULL}}


@pytest.mark.parametrize("key", STORED_KEYS)
def test_every_field_round_trips(tmp_path: Path, key: str) -> None:
    result = header(written(tmp_path, **{key: OTHER_VALUES[key]}))
    assert result[key] == OTHER_VALUES[key]
    assert type(result[key]) is type(OTHER_VALUES[key])
    also = FOLLOWS[key](OTHER_VALUES[key]) if key in FOLLOWS else {}
    assert {k: v for k, v in result.items() if k != key} == {
        k: also.get(k, v) for k, v in synth.DEFAULT_FIELDS.items() if k != key
    }


@pytest.mark.parametrize("key", STORED_KEYS)
def test_missing_field_is_null(tmp_path: Path, key: str) -> None:
    result = header(written(tmp_path, **{key: NULL}))
    assert result[key] == NULL
    for other, value in (FOLLOWS[key](NULL) if key in FOLLOWS else {}).items():
        assert result[other] == value


@pytest.mark.parametrize("key", DERIVED_KEYS)
def test_derived_keys_are_not_written(tmp_path: Path, key: str) -> None:
    with pytest.raises(TypeError, match="derived"):
        written(tmp_path, **{key: synth.DEFAULT_FIELDS[key]})


@pytest.mark.parametrize(
    ("vb", "tabs"), [(False, False), (False, True), (True, False), (True, True)]
)
def test_ascconv_versions_and_separators(tmp_path: Path, vb: bool, tabs: bool) -> None:
    shims = OTHER_VALUES["Shims"]
    path = tmp_path / "x.dcm"
    synth.write_dicom(path, ascconv_vb=vb, ascconv_tabs=tabs, Shims=shims)
    result = header(path)
    assert result["Shims"] == shims
    assert result["SequenceFile"] == synth.DEFAULT_FIELDS["SequenceFile"]


@pytest.mark.parametrize(
    "shims",
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 123255223],  # ASCCONV names only the frequency
        [3, -1, 0, 1, 0, 0, 0, 0, -2, 1],
        [0xFF, 2**31 - 1, -(2**31), 0, 1, 2, 3, 4, 5, 297_210_000],
    ],
)
def test_zero_shims_left_out_of_ascconv_read_as_zero(tmp_path: Path, shims: list[int]) -> None:
    path = written(tmp_path, Shims=shims)
    # The writer leaves zeros out, as Siemens does; alShimCurrent[2] is Shims[6].
    assert (b"alShimCurrent[2]" in path.read_bytes()) == (shims[6] != 0)
    assert header(path)["Shims"] == shims


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a\tb", "a b"), ("line1\nline2", "line1 line2"), ("x\r\n\ty", "x y"), ("  ", NULL)],
)
def test_comments_on_one_line(tmp_path: Path, text: str, expected: str) -> None:
    assert header(written(tmp_path, Comments=text))["Comments"] == expected


@pytest.mark.parametrize("block", [0x10, 0x11, 0x42, 0xFF])
def test_private_blocks_found_by_creator(tmp_path: Path, block: int) -> None:
    path = tmp_path / "x.dcm"
    synth.write_dicom(path, private_block=block)
    assert header(path) == synth.DEFAULT_FIELDS


def test_other_creator_in_block_0x10(tmp_path: Path) -> None:
    def other_vendor_first(ds: Dataset) -> None:
        # Siemens files carry "SIEMENS MEDCOM HEADER2" next to the CSA block; put it first.
        ds.add_new(0x00290010, "LO", "SIEMENS MEDCOM HEADER2")
        ds.add_new(0x00291010, "OB", b"SV10 not the CSA you want")
        ds.add_new(0x00291020, "OB", b"### ASCCONV BEGIN ###\nsAdjData.uiAdjShimMode = 0x9\n")

    path = rewritten(tmp_path, other_vendor_first, private_block=0x11)
    assert header(path) == synth.DEFAULT_FIELDS


def test_private_elements_need_their_creator(tmp_path: Path) -> None:
    path = written(tmp_path)
    data = path.read_bytes()
    # Same length, so the file stays valid: the first creator is (0019,0010).
    path.write_bytes(data.replace(b"SIEMENS MR HEADER", b"ACME MR HEADER   ", 1))
    result = header(path)
    assert result["BWPPE"] == NULL
    assert result["TA"] == synth.DEFAULT_FIELDS["TA"]  # (0051) block keeps its creator


def rewritten(tmp_path: Path, change: Any, *, implicit: bool = False, **options: Any) -> Path:
    """A generated file re-saved by pydicom after `change(ds)`."""
    source = tmp_path / "source.dcm"
    synth.write_dicom(source, **options)
    ds = pydicom.dcmread(source)
    change(ds)
    path = tmp_path / "rewritten.dcm"
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def add_sequence(ds: Dataset, *, undefined: bool = False) -> None:
    items = []
    for uid in ("1.2.3", "1.2.4"):
        item = Dataset()
        item.ReferencedSOPInstanceUID = uid
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        item.is_undefined_length_sequence_item = undefined
        items.append(item)
    nested = Dataset()
    nested.CodeValue = "113691"
    nested.is_undefined_length_sequence_item = undefined
    items[1].PurposeOfReferenceCodeSequence = [nested]
    items[1]["PurposeOfReferenceCodeSequence"].is_undefined_length = undefined
    ds.ReferencedImageSequence = items
    ds["ReferencedImageSequence"].is_undefined_length = undefined


def add_undefined_length_sequence(ds: Dataset) -> None:
    add_sequence(ds, undefined=True)


def add_large_private_element(ds: Dataset) -> None:
    # Larger than read_header's first read, before the groups it needs.
    block = ds.private_block(0x0011, "MRQART TEST", create=True)
    block.add_new(0x10, "OB", b"\x01" * 400_000)


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize(
    "change",
    [lambda ds: None, add_sequence, add_undefined_length_sequence, add_large_private_element],
)
def test_pydicom_rewrites_read_the_same(tmp_path: Path, change: Any, implicit: bool) -> None:
    assert header(rewritten(tmp_path, change, implicit=implicit)) == synth.DEFAULT_FIELDS


# --- the ASCCONV parser on its own ---------------------------------------------------

KEYS = (
    "sGRADSPEC.lOffsetX",
    "sGRADSPEC.alShimCurrent[0]",
    "sAdjData.uiAdjShimMode",
    "tSequenceFileName",
)


def ascconv_block(*lines: str) -> bytes:
    return ("### ASCCONV BEGIN ###\n" + "\n".join(lines) + "\n### ASCCONV END ###").encode()


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (ascconv_block("sGRADSPEC.lOffsetX                       = -7806"), {KEYS[0]: "-7806"}),
        (ascconv_block("sGRADSPEC.lOffsetX\t = \t-7806"), {KEYS[0]: "-7806"}),
        (ascconv_block("sGRADSPEC.lOffsetX=12"), {KEYS[0]: "12"}),
        # A longer key that starts with a wanted one is another key.
        (ascconv_block("sGRADSPEC.lOffsetXY = 1", "sGRADSPEC.lOffsetX = 2"), {KEYS[0]: "2"}),
        (ascconv_block("sAdjData.uiAdjShimModeX = 0x1"), {}),
        # Other keys of the same structure before and between the wanted ones.
        (
            ascconv_block(
                "sGRADSPEC.ucMode = 0x11",
                "sGRADSPEC.lOffsetX = -1",
                "sGRADSPEC.bShimCurrentValid = 1",
                "sGRADSPEC.alShimCurrent[0] = 867",
                "sTXSPEC.asNucleusInfo[0].lFrequency = 123251815",
                "sAdjData.uiAdjShimMode = 0x2",
            ),
            {KEYS[0]: "-1", KEYS[1]: "867", KEYS[2]: "0x2"},
        ),
        (
            ascconv_block('tSequenceFileName = ""%SiemensSeq%\\ep2d_diff""'),
            {KEYS[3]: '""%SiemensSeq%\\ep2d_diff""'},
        ),
        # Keys after the END marker are not the protocol's.
        (ascconv_block("ulVersion = 1") + b"\nsGRADSPEC.lOffsetX = 5\n", {}),
    ],
)
def test_ascconv_values(block: bytes, expected: dict[str, str]) -> None:
    span = csa.ascconv_span(block)
    assert span is not None
    assert csa.ascconv_values(block, span, KEYS) == expected


@pytest.mark.parametrize(
    "block",
    [b"", b"no protocol here", b"### ASCCONV BEGIN ###\nsGRADSPEC.lOffsetX = 1\n"],
)
def test_ascconv_span_needs_both_markers(block: bytes) -> None:
    assert csa.ascconv_span(block) is None


# --- real files -----------------------------------------------------------------------


def expected_from_pydicom_and_nibabel(path: Path) -> dict[str, Any]:
    """Header values read independently with pydicom, nibabel's CSA and ASCCONV parsers."""
    ds = pydicom.dcmread(path)
    expected: dict[str, Any] = {
        "SubID": str(ds.PatientName),
        "Station": ds.StationName,
        "SequenceName": ds.SeriesDescription,
        "SequenceType": ds.SequenceName,
        "TR": float(ds.RepetitionTime),
        "TE": float(ds.EchoTime),
        "FA": float(ds.FlipAngle),
        "Matrix": list(ds.AcquisitionMatrix),
        "PixelResol": [float(v) for v in ds.PixelSpacing],
        "BWP": float(ds.PixelBandwidth),
        "SeriesNumber": int(ds.SeriesNumber),
        "InstanceNumber": int(ds.InstanceNumber),
        "StudyUID": ds.StudyInstanceUID,
    }
    image = csareader.get_csa_header(ds, "image")
    expected["Phase"] = csareader.get_scalar(image, "PhaseEncodingDirectionPositive")
    expected["iPAT"] = csareader.get_scalar(image, "ImaPATModeText") or NULL
    try:
        expected["BWPPE"] = ds.private_block(0x0019, "SIEMENS MR HEADER")[0x28].value
    except KeyError:
        expected["BWPPE"] = NULL
    series = csareader.get_csa_header(ds, "series")
    if series is None:
        expected["Shims"] = expected["SequenceFile"] = NULL
    else:
        text = series["tags"]["MrPhoenixProtocol"]["items"][0]
        block = text[text.index("### ASCCONV BEGIN") : text.index("### ASCCONV END") + 19]
        prot, _ = ascconv.parse_ascconv(block, str_delim='""')
        grad = prot["sGRADSPEC"]
        expected["Shims"] = [
            prot["sAdjData"]["uiAdjShimMode"],
            *(grad["lOffset" + axis] for axis in "XYZ"),
            *grad["alShimCurrent"],
            prot["sTXSPEC"]["asNucleusInfo"][0]["lFrequency"],
        ]
        expected["SequenceFile"] = prot["tSequenceFileName"].replace("\\", "/")
    # read_header gives "null" for empty values too (the siemens_dwi files have no name).
    return {k: NULL if v == "" else v for k, v in expected.items()}


@pytest.mark.parametrize(
    "name",
    ["0.dcm", "1.dcm", "csa_slice_norm.dcm", "siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"],
)
def test_real_siemens_files(tmp_path: Path, name: str) -> None:
    path = NIBABEL_DATA / name
    if path.suffix == ".gz":
        path = tmp_path / path.stem
        path.write_bytes(gzip.decompress((NIBABEL_DATA / name).read_bytes()))
    result = header(path)
    expected = expected_from_pydicom_and_nibabel(path)
    assert {k: result[k] for k in expected} == expected
    assert list(result) == list(HEADER_KEYS)
    assert json.loads(json.dumps(result)) == result


def test_real_vb_file_has_shims_and_sequence_file() -> None:
    # Guards the comparison above against both sides being "null".
    result = header(NIBABEL_DATA / "0.dcm")
    assert len(result["Shims"]) == 10
    assert result["SequenceFile"].endswith("/ep2d_diff")
    assert result["TA"].startswith("TA ")


def test_non_siemens_file_has_standard_fields_and_null_csa() -> None:
    ds = pydicom.dcmread(MR_SMALL)
    result = header(Path(MR_SMALL))
    for key in ("Phase", "iPAT", "Shims", "SequenceFile", "BWPPE", "TA", "FoV"):
        assert result[key] == NULL
    assert result["SubID"] == str(ds.PatientName)
    assert result["TR"] == float(ds.RepetitionTime)
    assert result["PixelResol"] == [float(v) for v in ds.PixelSpacing]
    assert result["Manufacturer"] == ds.Manufacturer


# --- bad input ------------------------------------------------------------------------


def make_bad(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "bad.dcm"
    good = written(tmp_path, "good.dcm").read_bytes()
    if kind == "missing":
        return path  # deleted between the event and the read
    content = {
        "zero-byte": b"",
        "truncated mid-header": good[:3000],
        "truncated in the CSA": good[: good.index(b"### ASCCONV BEGIN")],
        "text": b"not a DICOM file, just some notes\n" * 10,
        "random bytes": bytes((i * 7919 + 13) % 256 for i in range(5000)),
        "short": b"DICM",
        "big endian": good.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.2\x00"),
    }[kind]
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "FileNotFoundError"),
        ("zero-byte", "empty"),
        ("truncated mid-header", "truncated"),
        ("truncated in the CSA", "truncated"),
        ("text", "not DICOM"),
        ("random bytes", "not DICOM"),
        ("short", "not DICOM"),
        ("big endian", "unsupported: transfer syntax explicit VR big endian"),
    ],
)
def test_bad_input_is_unreadable(tmp_path: Path, kind: str, reason: str) -> None:
    path = make_bad(kind, tmp_path)
    result = read_header(path)
    assert isinstance(result, Unreadable)
    assert result.path == str(path)
    assert reason in result.reason


def test_mutated_files_never_raise(tmp_path: Path) -> None:
    good = written(tmp_path, "good.dcm").read_bytes()
    rng = random.Random(20241016)
    path = tmp_path / "mutant.dcm"
    kinds: collections.Counter[str] = collections.Counter()
    for _ in range(300):
        data = bytearray(good)
        pos = rng.randrange(132, len(data))
        match rng.randrange(3):
            case 0:  # flip bytes
                for _ in range(rng.randrange(1, 20)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            case 1:  # an undefined length somewhere
                data[pos : pos + 4] = b"\xff\xff\xff\xff"
            case _:  # cut a piece out
                del data[pos : pos + rng.randrange(1, 50)]
        path.write_bytes(data)
        result = read_header(path)
        assert isinstance(result, dict | Unreadable)
        kinds[type(result).__name__] += 1
    assert kinds["dict"] and kinds["Unreadable"]  # both outcomes were exercised


def test_directory_is_unreadable(tmp_path: Path) -> None:
    result = read_header(tmp_path)
    assert isinstance(result, Unreadable)
    assert "IsADirectoryError" in result.reason


def test_without_pixel_data_is_valid(tmp_path: Path) -> None:
    data = written(tmp_path).read_bytes()
    path = tmp_path / "nopixels.dcm"
    path.write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00")])
    assert header(path) == synth.DEFAULT_FIELDS


def corrupt(data: bytes, marker: bytes, replacement: bytes) -> bytes:
    assert marker in data
    return data.replace(marker, replacement, 1)


def long_pat_item(data: bytes) -> bytes:
    # x1 of the first item header (the item length) sits 84 + 4 bytes after the name.
    pos = data.index(b"ImaPATModeText\x00") + 88
    return data[:pos] + struct.pack("<i", 10**6) + data[pos + 4 :]


SHIM_MODE_LINE = f"{'sAdjData.uiAdjShimMode':<40} = 0x1".encode()
TR_ELEMENT = b"\x18\x00\x80\x00DS\x04\x001300"  # (0018,0080) RepetitionTime


@pytest.mark.parametrize(
    ("damage", "nulls"),
    [
        # Not CSA at all (same length): Phase and iPAT cannot be read.
        (lambda d: corrupt(d, b"SV10", b"XXXX"), {"Phase", "iPAT"}),
        # An item length pointing past the end of the CSA.
        (long_pat_item, {"iPAT"}),
        # No ASCCONV END marker: Shims and SequenceFile cannot be read.
        (lambda d: corrupt(d, b"### ASCCONV END", b"### ASCCONV XXX"), {"Shims", "SequenceFile"}),
        # A shim value that is not a number.
        (lambda d: corrupt(d, SHIM_MODE_LINE, SHIM_MODE_LINE.replace(b"0x", b"?x")), {"Shims"}),
        # A TR that is not a number spoils only TR.
        (lambda d: corrupt(d, TR_ELEMENT, TR_ELEMENT.replace(b"1300", b"13x0")), {"TR"}),
    ],
)
def test_broken_parts_are_null_others_kept(tmp_path: Path, damage: Any, nulls: set[str]) -> None:
    path = written(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    result = header(path)
    assert {k for k, v in result.items() if v == NULL} == nulls
    assert {k: v for k, v in result.items() if k not in nulls} == {
        k: v for k, v in synth.DEFAULT_FIELDS.items() if k not in nulls
    }
