"""The synthetic scanner: Siemens-like MR DICOM files and whole sessions, for tests and demos.

``write_dicom(path, **fields)`` writes one file whose ``mrqart.headers.read_header`` gives
back `fields` (any header key; the rest from DEFAULT_FIELDS).  Files look like a Siemens
export: explicit VR little endian, "SIEMENS MR HEADER" blocks in (0019) and (0051),
a "SIEMENS CSA HEADER" block with a ~11 KB CSA2 image header and a ~80 KB CSA2 series
header whose MrPhoenixProtocol holds an ASCCONV protocol, and 4x4 pixels.

``write_session(root, ...)`` writes one session directory the way the scanner does:
series after series, files ``001_<series>_<image>.dcm``, multi-echo images interleaved.

The encoder is our own (not pydicom's) so that thousands of files per second can be
written: the CSA blobs are built once per parameter set and cached.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from mrqart.headers import siemens_csa as csa
from mrqart.headers.elements import (
    CSA_IMAGE,
    CSA_SERIES,
    DERIVED_KEYS,
    FIELDS,
    LONG_VRS,
    NULL,
    SIEMENS_CSA,
    SIEMENS_MR,
)

__all__ = ["DEFAULT_FIELDS", "PROTOCOL", "session_dirname", "write_dicom", "write_session"]

UID_ROOT: Final = "1.3.12.2.1107.5.2.43.67078"  # Siemens root + a made-up device serial

# A BOLD-like series on a Prisma ("AWP167046") of project MRQART_test: one value
# per key of mrqart.headers.HEADER_KEYS (tests/test_dicom.py checks the round trip).
DEFAULT_FIELDS: Final[dict[str, Any]] = {
    "Phase": 1,
    "iPAT": "p2",
    "AcqTime": "165016.000000",
    "AcqDate": "20241016",
    "SeriesNumber": 1,
    "SubID": "MRQART_test_sub01",
    "Comments": "Unaliased MB3/PE4/LB SENSE1",
    "Operator": "mrqart",
    "Station": "AWP167046",
    "Project": "MRQART_test",
    "SequenceName": "rest",
    "SequenceType": "epfid2d1_96",
    "PED_major": "COL",
    "TR": 1300.0,
    "TE": 30.0,
    "FA": 60.0,
    "Matrix": [96, 0, 0, 96],
    "PixelResol": [2.2916666269302, 2.2916666269302],
    "BWP": 2264.0,
    "BWPPE": 21.18,
    "TA": "TA 06:38",
    "FoV": "FoV 2200*2200",
    "Shims": [1, 1074, -1352, -2153, 373, -134, 5, 32, -143, 123255223],
    "SequenceFile": "%CustomerSeq%/cmrr_mbep2d_bold",
    "Manufacturer": "SIEMENS",
    "SoftwareVersions": "syngo MR E11",
    "StudyUID": f"{UID_ROOT}.30000024101612345678900000001",
    "SeriesUID": f"{UID_ROOT}.2024101616501612345678901.0.0.0",
    "EchoNumber": 1,
    "InstanceNumber": 1,
    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
    "Frames": 1,
    "EchoTimes": [30.0],
    "not_recorded": [],
}


# --- DICOM encoding (explicit VR little endian) -------------------------------------

_SHORT_HEAD: Final = struct.Struct("<HH2sH")
_LONG_HEAD: Final = struct.Struct("<HH2sHI")


def _element(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element; `value` is padded to even length."""
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    if vr.encode() in LONG_VRS:
        return _LONG_HEAD.pack(tag >> 16, tag & 0xFFFF, vr.encode(), 0, len(value)) + value
    return _SHORT_HEAD.pack(tag >> 16, tag & 0xFFFF, vr.encode(), len(value)) + value


def _ds(number: float) -> str:
    # DS holds at most 16 characters; 10 significant digits keep every value we write.
    text = repr(float(number))
    text = text.removesuffix(".0")
    return text if len(text) <= 16 else f"{number:.10g}"


def _value_bytes(vr: str, value: Any) -> bytes:
    """Bytes of a header value for an element of this VR (lists are multi-valued)."""
    values = value if isinstance(value, list | tuple) else [value]
    if vr == "US":
        return struct.pack(f"<{len(values)}H", *values)
    if vr == "FD":
        return struct.pack(f"<{len(values)}d", *values)
    if vr == "DS":
        return "\\".join(_ds(v) for v in values).encode()
    if vr == "IS":
        return "\\".join(str(int(v)) for v in values).encode()
    return "\\".join(str(v) for v in values).encode("latin-1")


# Elements every MR image carries that the header dict does not read.
_FIXED: Final = (
    (0x00080005, "CS", b"ISO_IR 100"),  # SpecificCharacterSet
    (0x00080016, "UI", b"1.2.840.10008.5.1.4.1.1.4"),  # SOPClassUID: MR Image Storage
    (0x00080060, "CS", b"MR"),  # Modality
    (0x00081090, "LO", b"Prisma"),  # ManufacturerModelName
    (0x00180020, "CS", b"EP"),  # ScanningSequence
    (0x00180050, "DS", b"2.2"),  # SliceThickness
    (0x00180087, "DS", b"3"),  # MagneticFieldStrength
    (0x00200032, "DS", b"-110\\-110\\0"),  # ImagePositionPatient
    (0x00200037, "DS", b"1\\0\\0\\0\\1\\0"),  # ImageOrientationPatient
    (0x00280002, "US", struct.pack("<H", 1)),  # SamplesPerPixel
    (0x00280004, "CS", b"MONOCHROME2"),  # PhotometricInterpretation
    (0x00280010, "US", struct.pack("<H", 4)),  # Rows
    (0x00280011, "US", struct.pack("<H", 4)),  # Columns
    (0x00280100, "US", struct.pack("<H", 16)),  # BitsAllocated
    (0x00280101, "US", struct.pack("<H", 12)),  # BitsStored
    (0x00280102, "US", struct.pack("<H", 11)),  # HighBit
    (0x00280103, "US", struct.pack("<H", 0)),  # PixelRepresentation
)
_FIXED_ELEMENTS: Final = tuple((tag, _element(tag, vr, v)) for tag, vr, v in _FIXED)
_PIXELS: Final = _element(0x7FE00010, "OW", struct.pack("<16H", *range(0, 1600, 100)))
_SOP_INSTANCE: Final = 0x00080018
_META_SYNTAX: Final = b"1.2.840.10008.1.2.1"  # explicit VR little endian


def _file_meta(sop_instance: bytes, sop_class: bytes = b"1.2.840.10008.5.1.4.1.1.4") -> bytes:
    body = b"".join(
        (
            _element(0x00020001, "OB", b"\x00\x01"),  # FileMetaInformationVersion
            _element(0x00020002, "UI", sop_class),  # MediaStorageSOPClassUID
            _element(0x00020003, "UI", sop_instance),  # MediaStorageSOPInstanceUID
            _element(0x00020010, "UI", _META_SYNTAX),  # TransferSyntaxUID
            _element(0x00020012, "UI", b"1.2.826.0.1.3680043.10.0.1"),  # ImplementationClassUID
        )
    )
    return b"\x00" * 128 + b"DICM" + _element(0x00020000, "UL", struct.pack("<I", len(body))) + body


# --- CSA image and series headers ---------------------------------------------------

# Element names of a real CSA2 image header (Siemens' schema, no participant data).
_IMAGE_NAMES_TEXT: Final = (
    "EchoLinePosition EchoColumnPosition EchoPartitionPosition UsedChannelMask "
    "Actual3DImaPartNumber ICE_Dims B_value Filter1 Filter2 ProtocolSliceNumber "
    "RealDwellTime PixelFile PixelFileName SliceMeasurementDuration SequenceMask "
    "AcquisitionMatrixText MeasuredFourierLines FlowEncodingDirection FlowVenc "
    "NumberOfImagesInMosaic DiffusionGradientDirection ImageGroup SliceNormalVector "
    "DiffusionDirectionality TimeAfterStart FlipAngle SequenceName RepetitionTime EchoTime "
    "NumberOfAverages VoxelThickness VoxelPhaseFOV VoxelReadoutFOV VoxelPositionSag "
    "VoxelPositionCor VoxelPositionTra VoxelNormalSag VoxelNormalCor VoxelNormalTra "
    "VoxelInPlaneRot ImagePositionPatient ImageOrientationPatient PixelSpacing "
    "SliceLocation SliceThickness SpectrumTextRegionLabel Comp_Algorithm Comp_Blended "
    "Comp_ManualAdjusted Comp_AutoParam Comp_AdjustedParam Comp_JobID FMRIStimulInfo "
    "FlowEncodingDirectionString RepetitionTimeEffective CsiImagePositionPatient "
    "CsiImageOrientationPatient CsiPixelSpacing CsiSliceLocation CsiSliceThickness "
    "OriginalSeriesNumber OriginalImageNumber ImaAbsTablePosition NonPlanarImage "
    "MoCoQMeasure LQAlgorithm SlicePosition_PCS RBMoCoTrans RBMoCoRot MultistepIndex "
    "ImaRelTablePosition ImaCoilString RFSWDDataType GSWDDataType NormalizeManipulated "
    "BandwidthPerPixelPhaseEncode FMRIStimulLevel MosaicRefAcqTimes "
    "AutoInlineImageFilterEnabled QCData"
)
_IMAGE_NAMES: Final = tuple(_IMAGE_NAMES_TEXT.split())


@functools.lru_cache(maxsize=64)
def _image_csa(phase: Any, ipat: Any) -> bytes:
    """The CSA2 image header (~11 KB) with PhaseEncodingDirectionPositive and ImaPATModeText."""
    # Like a real one: the first ~third of the elements hold values, the rest are empty.
    elements: dict[str, tuple[str, list[str]]] = {
        name: ("IS", [str(i * 37 % 1000)] if i < 28 else []) for i, name in enumerate(_IMAGE_NAMES)
    }
    elements["ICE_Dims"] = ("LO", ["X_1_1_1_1_1_1_1_1_1_1_1_201"])
    elements["MosaicRefAcqTimes"] = ("FD", [f"{t * 62.5:.8f}" for t in range(48)])
    elements["PhaseEncodingDirectionPositive"] = ("IS", [] if phase == NULL else [str(phase)])
    elements["ImaPATModeText"] = ("LO", [] if ipat == NULL else [str(ipat)])
    return csa.encode_csa2(elements)


def _ascconv_lines(fields: Mapping[str, Any], vb: bool) -> list[tuple[str, str]]:
    """ASCCONV (key, value) pairs of a realistic protocol carrying `fields`.

    In the order scanners write them: file names, gradient system (with the shims),
    transmitter, adjustments, then timing, slices and coils.
    """
    lines = [("ulVersion", "0x14b44b6" if vb else "51130001")]
    if fields["SequenceFile"] != NULL:
        lines.append(("tSequenceFileName", f'""{fields["SequenceFile"].replace("/", chr(92))}""'))
    lines.append(("tProtocolName", f'""{fields["SequenceName"]}""'))
    shims = fields["Shims"]
    if shims != NULL:
        keys = csa.SHIM_KEYS_VB if vb else csa.SHIM_KEYS
        gpa = "sGRADSPEC." if vb else "sGRADSPEC.asGPAData[0]."
        # Other keys of the sGRADSPEC structure around the shims, as in real protocols.
        for axis in "XYZ":
            for i in range(5):
                lines.append((f"{gpa}sEddyCompensation{axis}.aflAmplitude[{i}]", f"{0.1 * i:.6f}"))
        # Protocol order, not the order of the Shims list; ASCCONV leaves out zeros
        # (the frequency is never zero, so an all-zero set still names one key).
        for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0):
            if shims[i] != 0 or i == 9:
                lines.append((keys[i], f"0x{shims[i]:x}" if i == 0 else str(shims[i])))
            if i == 8:
                lines.append(("sGRADSPEC.bShimCurrentValid", "1"))
            if i == 9:
                lines.append(("sTXSPEC.asNucleusInfo[0].tNucleus", '""1H""'))
                lines.append(("sTXSPEC.asNucleusInfo[0].flReferenceAmplitude", "245.125"))
        lines.append(("sAdjData.uiAdjFreMode", "0x1"))
        lines.append(("sAdjData.uiAdjTraMode", "0x2"))
    if fields["TR"] != NULL:
        lines.append(("alTR[0]", str(round(float(fields["TR"]) * 1000))))
    if fields["TE"] != NULL:
        lines.append(("alTE[0]", str(round(float(fields["TE"]) * 1000))))
    for i in range(72):  # slices
        for axis, v in (("dSag", -1.5), ("dCor", -21.7), ("dTra", -40.0 + 2.2 * i)):
            lines.append((f"sSliceArray.asSlice[{i}].sPosition.{axis}", f"{v:.9f}"))
        lines.append((f"sSliceArray.asSlice[{i}].sNormal.dTra", "1"))
        lines.append((f"sSliceArray.asSlice[{i}].dThickness", "2.2"))
        lines.append((f"sSliceArray.asSlice[{i}].dPhaseFOV", "220"))
        lines.append((f"sSliceArray.asSlice[{i}].dReadoutFOV", "220"))
    for i in range(32):  # receive coil elements
        prefix = f"sCoilSelectMeas.aRxCoilSelectData[0].asList[{i}]"
        lines.append((f"{prefix}.sCoilElementID.tCoilID", '""HeadNeck_64""'))
        lines.append((f"{prefix}.sCoilElementID.lCoilCopy", "1"))
        lines.append((f"{prefix}.sCoilElementID.tElement", f'""H{i}""'))
        lines.append((f"{prefix}.lElementSelected", "1"))
        lines.append((f"{prefix}.lRxChannelConnected", str(i + 1)))
    lines.append(("sKSpace.lBaseResolution", "96"))
    lines.append(("sKSpace.lPhaseEncodingLines", "96"))
    lines.append(("sFastImaging.lEPIFactor", "96"))
    lines.append(("ucAutoAlignInit", "0x1"))
    return lines


@functools.lru_cache(maxsize=64)
def _series_csa(fields_items: tuple[tuple[str, Any], ...], vb: bool, tabs: bool) -> bytes:
    """The CSA2 series header (~80 KB) whose MrPhoenixProtocol carries the ASCCONV block."""
    fields = dict(fields_items)
    if tabs:  # VE11/XA: "key\t = \tvalue"
        body = "".join(f"{k}\t = \t{v}\n" for k, v in _ascconv_lines(fields, vb))
    else:  # VB/VD: key padded with spaces to column 41
        body = "".join(f"{k:<40} = {v}\n" for k, v in _ascconv_lines(fields, vb))
    # The XProtocol part before the ASCCONV block: parameter maps the reader skips.
    xprotocol = "".join(
        f'    <ParamLong."Param{i}"> \n    {{\n      {i * 7 % 1000} \n    }}\n    \n'
        for i in range(700)
    )
    protocol = (
        '<XProtocol> \n{\n  <Name> "PhoenixMetaProtocol" \n  <ID> 1000002 \n'
        f"{xprotocol}"
        f'    <ParamString."Protocol0"> \n    {{\n      "### ASCCONV BEGIN ###\n{body}'
        '### ASCCONV END ###" \n    }\n  }\n}\n'
    )
    elements: dict[str, tuple[str, list[str]]] = {
        "UsedPatientWeight": ("IS", ["70"]),
        "NumberOfPrescans": ("IS", ["0"]),
        "TransmitterCalibration": ("DS", ["245.125"]),
        "SequenceFileOwner": ("SH", ["SIEMENS"]),
        "CoilForGradient": ("SH", ["void"]),
        "CoilForGradient2": ("SH", ["AS82"]),
        "MrProtocolVersion": ("IS", ["51130001"]),
        "PositivePCSDirections": ("SH", ["+LPH"]),
        "LongModelName": ("LO", ["Prisma"]),
        "PATModeText": ("LO", [str(fields["iPAT"])]),
        "MrPhoenixProtocol": ("UN", [protocol]),
        "GradientMode": ("SH", ["Performance"]),
        "FlowCompensation": ("SH", ["No"]),
        "MrProtocol": ("UN", []),
        "MrEvaProtocol": ("UN", []),
    }
    return csa.encode_csa2(elements)


# Fields the series CSA depends on (the cache key leaves out per-file fields).
_SERIES_CSA_KEYS: Final = ("Shims", "SequenceFile", "SequenceName", "TR", "TE", "iPAT")


@functools.lru_cache(maxsize=4096)
def _field_element(tag: int, vr: str, value: Any) -> bytes:
    """The encoded element for a header value (files of one series repeat most values)."""
    return _element(tag, vr, _value_bytes(vr, value))


@functools.lru_cache(maxsize=64)
def _private_elements(
    block: int, phase: Any, ipat: Any, series_key: tuple[tuple[str, Any], ...], vb: bool, tabs: bool
) -> tuple[tuple[int, bytes], ...]:
    """The private creators and the two CSA elements, encoded once per parameter set."""
    elements = [
        (tag, _element(tag, "LO", creator.encode()))
        for tag, creator in (
            (0x00190000 | block, SIEMENS_MR),
            (0x00290000 | block, SIEMENS_CSA),
            (0x00510000 | block, SIEMENS_MR),
        )
    ]
    base = 0x00290000 | (block << 8)
    for offset, blob in (
        (CSA_IMAGE, _image_csa(phase, ipat)),
        (CSA_SERIES, _series_csa(series_key, vb, tabs)),
    ):
        elements.append((base | offset, _element(base | offset, "OB", blob)))
    return tuple(elements)


def _uid(*parts: object) -> str:
    """A deterministic UID under UID_ROOT (at most 64 characters)."""
    digest = int(hashlib.blake2b(repr(parts).encode(), digest_size=12).hexdigest(), 16)
    return f"{UID_ROOT}.{digest}"[:64]


def write_dicom(
    path: str | Path,
    *,
    ascconv_vb: bool = False,
    ascconv_tabs: bool = False,
    private_block: int = 0x10,
    **fields: Any,
) -> None:
    """Write a Siemens-like MR DICOM at `path` whose read_header() gives back `fields`.

    `fields` are header keys (see mrqart.headers.HEADER_KEYS); unspecified ones take
    DEFAULT_FIELDS; a value "null" leaves the element (or ASCCONV line) out.
    `ascconv_vb` writes VB-style keys (sGRADSPEC.lOffsetX), `ascconv_tabs` tab
    separators (VE/XA) instead of space-padded columns; `private_block` is the xx of
    the private blocks (0019,xx..), (0029,xx..), (0051,xx..).
    """
    unknown = set(fields) - set(DEFAULT_FIELDS)
    if unknown:
        raise TypeError(f"write_dicom: unknown header fields {sorted(unknown)}")
    if derived := set(fields) & set(DERIVED_KEYS):
        raise TypeError(f"write_dicom: {sorted(derived)} are derived, not written")
    h = {k: tuple(v) if isinstance(v, list) else v for k, v in {**DEFAULT_FIELDS, **fields}.items()}
    sop = _uid(h["SeriesUID"], h["InstanceNumber"], h["EchoNumber"]).encode()
    elements = [*_FIXED_ELEMENTS, (_SOP_INSTANCE, _element(_SOP_INSTANCE, "UI", sop))]
    if h["SubID"] != NULL:  # (0010,0020) PatientID: the scanner copies the name here too
        elements.append((0x00100020, _field_element(0x00100020, "LO", h["SubID"])))
    for field in FIELDS:
        value = h[field.name]
        if value == NULL:
            continue
        tag = (field.group << 16) | field.element
        if field.creator is not None:
            tag = (field.group << 16) | (private_block << 8) | field.element
        elements.append((tag, _field_element(tag, field.vr, value)))
    series_key = tuple((k, h[k]) for k in _SERIES_CSA_KEYS)
    elements += _private_elements(
        private_block, h["Phase"], h["iPAT"], series_key, ascconv_vb, ascconv_tabs
    )
    elements.sort(key=lambda e: e[0])
    data = b"".join((_file_meta(sop), *(e for _, e in elements), _PIXELS))
    Path(path).write_bytes(data)


# --- sessions -----------------------------------------------------------------------

_FIELDMAP: Final[dict[str, Any]] = {
    "SequenceName": "gre_field_mapping", "SequenceType": "*fm2d2r", "TR": 590.0, "FA": 60.0,
    "BWP": 290.0, "BWPPE": 10.12, "iPAT": "null", "TA": "TA 01:53", "Comments": "null",
    "SequenceFile": "%SiemensSeq%/gre_field_mapping",
}  # fmt: skip
_ANATOMICAL: Final[dict[str, Any]] = {
    "PED_major": "ROW", "Comments": "null", "Matrix": [0, 256, 256, 0], "iPAT": "p2",
}  # fmt: skip

# One session of project MRQART_test in scanner order: fields differ from
# DEFAULT_FIELDS (a BOLD series); n_files per echo; echo_times (ms) make a
# multi-echo series whose consecutive images alternate echoes.
# fmt: off
PROTOCOL: Final[tuple[dict[str, Any], ...]] = (
    {"name": "localizer", "n_files": 3, "fields": {
        **_ANATOMICAL, "SequenceName": "localizer", "SequenceType": "*fl2d1", "TR": 8.6,
        "TE": 4.0, "FA": 20.0, "PixelResol": [0.9765625, 0.9765625], "BWP": 320.0,
        "BWPPE": 142.86, "iPAT": "null", "TA": "TA 00:11", "FoV": "FoV 250*250",
        "SequenceFile": "%SiemensSeq%/fl"}},
    {"name": "t1_mprage", "n_files": 192, "fields": {
        **_ANATOMICAL, "SequenceName": "t1_mprage", "SequenceType": "*tfl3d1_16ns",
        "TR": 2300.0, "TE": 2.98, "FA": 9.0, "PixelResol": [1.0, 1.0], "BWP": 240.0,
        "BWPPE": 3.91, "TA": "TA 05:12", "FoV": "FoV 256*256",
        "SequenceFile": "%SiemensSeq%/tfl"}},
    {"name": "fmap_mag", "n_files": 72, "echo_times": (4.92, 7.38), "fields": _FIELDMAP},
    {"name": "fmap_phase", "n_files": 72, "fields": {
        **_FIELDMAP, "TE": 7.38, "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]}},
    {"name": "rest", "n_files": 300, "fields": {"SequenceName": "rest"}},
    {"name": "me_bold", "n_files": 200, "echo_times": (14.2, 35.9, 57.6), "fields": {
        "SequenceName": "me_bold", "SequenceType": "epfid2d3_96", "TR": 1500.0, "FA": 70.0,
        "TA": "TA 05:06"}},
    {"name": "dwi", "n_files": 102, "fields": {
        "SequenceName": "dwi_mb3_b1000", "SequenceType": "ep_b1000#1", "TR": 3200.0,
        "TE": 89.0, "FA": 90.0, "Matrix": [110, 0, 0, 110], "PixelResol": [2.0, 2.0],
        "BWP": 1700.0, "BWPPE": 18.94, "TA": "TA 05:51", "Comments": "null",
        "SequenceFile": "%CustomerSeq%/cmrr_mbep2d_diff"}},
)
# fmt: on


# --- Siemens XA: enhanced multi-frame and interoperability files -------------------

XA_FIELDS: Final[dict[str, Any]] = {
    **DEFAULT_FIELDS,
    "Manufacturer": "Siemens Healthineers",
    "SoftwareVersions": "syngo MR XA30",
}
_ENHANCED_MR: Final = b"1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
_MR_IMAGE: Final = b"1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage (interoperability)
_SDS: Final = b"SIEMENS MR SDS 01"
_SDI: Final = b"SIEMENS MR SDI 02"


def _sequence(tag: int, *items: bytes) -> bytes:
    """A sequence of defined length holding `items` (each an item's encoded elements)."""
    body = b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item for item in items)
    return _element(tag, "SQ", body)


def _xa_protocol(h: Mapping[str, Any]) -> bytes:
    """(0021,xx19) SDS: the XProtocol text with its ASCCONV block (tab separators)."""
    lines = list(_ascconv_lines(h, vb=False))
    if h["iPAT"] != NULL:
        lines.append(("sPat.lAccelFactPE", str(h["iPAT"]).removeprefix("p").split("s")[0]))
    body = "".join(f"{k}\t = \t{v}\n" for k, v in lines)
    return (
        '<XProtocol> \n{\n  <Name> "PhoenixMetaProtocol" \n'
        f'    <ParamString."Protocol0"> \n    {{\n      "### ASCCONV BEGIN ###\n{body}'
        '### ASCCONV END ###" \n    }\n  }\n}\n'
    ).encode("latin-1")


def _xa_private(h: Mapping[str, Any], block: int, creator: bytes) -> list[tuple[int, bytes]]:
    """The SDS (series) or SDI (image) block's elements at (0021,`block`xx)."""
    base = 0x00210000 | (block << 8)
    if creator == _SDS:
        values = [(0x09, "LO", h["iPAT"]), (0x19, "OB", _xa_protocol(h)), (0x5E, "LO", h["FoV"])]
    else:
        values = [(0x1C, "IS", h["Phase"]), (0x53, "FD", h["BWPPE"]),
                  (0x77, "LO", h["SequenceType"])]  # fmt: skip
    out = [(0x00210000 | block, _element(0x00210000 | block, "LO", creator))]
    for offset, vr, value in values:
        if value == NULL:
            continue
        raw = value if isinstance(value, bytes) else _value_bytes(vr, value)
        out.append((base | offset, _element(base | offset, vr, raw)))
    return out


def _xa_nested(h: Mapping[str, Any], block: int, creator: bytes) -> bytes:
    """An enhanced file's private block: creator, then (0021,xxFE) holding it again."""
    inner = b"".join(e for _, e in _xa_private(h, block, creator))
    creator_tag = 0x00210000 | block
    return _element(creator_tag, "LO", creator) + _sequence(0x00210000 | (block << 8) | 0xFE, inner)


def _macro(tag: int, *elements: tuple[int, str, Any]) -> bytes:
    """A functional-group macro: a one-item sequence of `elements` ("null" ones left out)."""
    body = b"".join(_field_element(t, vr, v) for t, vr, v in elements if v != NULL)
    return _sequence(tag, body)


def write_xa(
    path: str | Path,
    *,
    enhanced: bool = True,
    frames: int = 1,
    echo_times: Iterable[float] | None = None,
    **fields: Any,
) -> None:
    """Write a Siemens XA file at `path` whose read_header() gives back `fields` (any
    stored header key; the rest from XA_FIELDS), as xa_header() says.

    `enhanced`: one Enhanced MR file of `frames` frames (the parameters in the shared
    and per-frame functional groups, SDS and SDI nested in them; the frames cycle
    through `echo_times`, default [TE]); else an interoperability file (single
    frame, the standard elements and the SDS/SDI blocks at top level).
    """
    unknown = set(fields) - set(XA_FIELDS)
    if unknown or set(fields) & set(DERIVED_KEYS):
        raise TypeError(f"write_xa: unknown or derived header fields {sorted(fields)}")
    h = {k: tuple(v) if isinstance(v, list) else v for k, v in {**XA_FIELDS, **fields}.items()}
    sop = _uid("xa", h["SeriesUID"], h["InstanceNumber"], h["EchoNumber"], enhanced).encode()
    standard = {"AcqTime", "AcqDate", "SeriesNumber", "SubID", "Comments", "Operator",
                "Station", "Project", "SequenceName", "Manufacturer", "SoftwareVersions",
                "StudyUID", "SeriesUID", "InstanceNumber", "ImageType"}  # fmt: skip
    if not enhanced:
        standard |= {"SequenceType", "PED_major", "TR", "TE", "FA", "Matrix", "PixelResol",
                     "BWP", "EchoNumber"}  # fmt: skip
    sop_class = _ENHANCED_MR if enhanced else _MR_IMAGE
    elements = [(t, e) for t, e in _FIXED_ELEMENTS if t != 0x00080016]
    elements.append((0x00080016, _element(0x00080016, "UI", sop_class)))
    elements.append((_SOP_INSTANCE, _element(_SOP_INSTANCE, "UI", sop)))
    for field in FIELDS:
        value = h[field.name]
        if field.name in standard and value != NULL and field.creator is None:
            tag = (field.group << 16) | field.element
            elements.append((tag, _field_element(tag, field.vr, value)))
    if not enhanced:
        elements += _xa_private(h, 0x10, _SDS) + _xa_private(h, 0x11, _SDI)
        if h["TA"] != NULL:  # interoperability files keep the TA text in (0051,xx0A)
            elements.append((0x00510010, _element(0x00510010, "LO", SIEMENS_MR.encode())))
            elements.append((0x0051100A, _field_element(0x0051100A, "SH", h["TA"])))
    else:
        times = list(echo_times or ([h["TE"]] if h["TE"] != NULL else []))
        if h["AcqDate"] != NULL and h["AcqTime"] != NULL:
            when = f"{h['AcqDate']}{h['AcqTime']}"
            elements.append((0x0008002A, _field_element(0x0008002A, "DT", when)))
        if h["SequenceType"] != NULL:
            elements.append((0x00189005, _field_element(0x00189005, "SH", h["SequenceType"])))
        elements.append((0x00280008, _field_element(0x00280008, "IS", frames)))
        matrix, ped = h["Matrix"], h["PED_major"]
        freq = phase = NULL
        if matrix != NULL and ped != NULL:
            freq, phase = (matrix[1], matrix[2]) if ped == "ROW" else (matrix[0], matrix[3])
        shared = b"".join((
            _macro(0x00189006, (0x00180095, "DS", h["BWP"])),
            _macro(0x00189112, (0x00180080, "DS", h["TR"]), (0x00181314, "DS", h["FA"])),
            _macro(0x00189125, (0x00181312, "CS", "COLUMN" if ped == "COL" else ped),
                   (0x00189058, "US", freq), (0x00189231, "US", phase)),
            _xa_nested(h, 0x10, _SDS),
        ))  # fmt: skip
        frame_items = []
        for i in range(frames):
            te = times[i % len(times)] if times else NULL
            frame_items.append(b"".join((
                _macro(0x00189114, (0x00189082, "FD", te)),
                _xa_nested(h, 0x11, _SDI),
                _macro(0x00289110, (0x00280030, "DS", h["PixelResol"])),
            )))  # fmt: skip
        elements.append((0x52009229, _sequence(0x52009229, shared)))
        elements.append((0x52009230, _sequence(0x52009230, *frame_items)))
    elements.sort(key=lambda e: e[0])
    meta = _file_meta(sop, sop_class)
    Path(path).write_bytes(b"".join((meta, *(e for _, e in elements), _PIXELS)))


def xa_header(
    *, enhanced: bool = True, frames: int = 1, echo_times: Iterable[float] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The header dict read_header gives for write_xa(path, same arguments)."""
    h = {**XA_FIELDS, **fields}
    times = [t for t in dict.fromkeys(echo_times or [h["TE"]]) if t != NULL]
    h["Frames"] = frames if enhanced else 1
    h["EchoTimes"] = times or NULL
    if enhanced:
        h["TE"] = times[0] if times else NULL
        h["EchoNumber"] = NULL  # enhanced files number echoes per frame, not per file
        h["TA"] = NULL  # no TA text in enhanced XA files
    h["not_recorded"] = ["TA"] if h["TA"] == NULL else []
    return {k: h[k] for k in DEFAULT_FIELDS}


VENDORS: Final = ("siemens", "xa", "xa-interop")
#: Frames per file of a simulated XA enhanced series (XA writes one file per volume).
XA_FRAMES: Final = 32


def _write_xa_series(
    session: Path, number: int, fields: Mapping[str, Any], echoes: tuple[Any, ...],
    per_echo: int, clock: dt.datetime, written: int, total: int,
    progress: Callable[[Path, int, int], None] | None,
) -> int:
    """One series as XA enhanced files of up to XA_FRAMES frames; the files written so far."""
    images = per_echo * len(echoes)
    times = [e for e in echoes if e is not None] or None
    for index, first in enumerate(range(0, images, XA_FRAMES), start=1):
        frames = min(XA_FRAMES, images - first)
        path = session / f"{index:04d}_{_uid('sop', fields['SeriesUID'], index)}.dcm"
        extra = {"InstanceNumber": index, "AcqTime": f"{clock:%H%M%S}.000000"}
        write_xa(path, frames=frames, echo_times=times, **{**fields, **extra})
        written += frames
        if progress is not None:
            progress(path, written, total)
    return written


def session_dirname(when: dt.datetime, project: str) -> str:
    """The scanner's name for a session directory, e.g. 20241016.MRQART_test.24.10.16_16_50_16_DST_<uid>."""
    return f"{when:%Y%m%d}.{project}.{when:%y.%m.%d_%H_%M_%S}_DST_{UID_ROOT}"


def write_session(
    root: str | Path,
    *,
    when: dt.datetime | None = None,
    wrong: Mapping[str, Mapping[str, Any]] | None = None,
    scale: float = 1.0,
    rate: float | None = None,
    subject: str = "MRQART_test_sub01",
    protocol: Iterable[Mapping[str, Any]] = PROTOCOL,
    progress: Callable[[Path, int, int], None] | None = None,
    vendor: str = "siemens",
) -> Path:
    """Write one session under `root` in scanner order; return its directory.

    `when` (default: now, moved on by whole seconds past existing sessions) names the
    session and times its images.  `wrong` maps a series name of `protocol` to fields
    that differ from the protocol.  `scale` multiplies every series' file count (at
    least 1 per echo).  `rate` paces writing at about that many files/s, in bursts of
    rate/10 files.  `progress(path, i, n)` is called after each of the n files.
    `vendor` is one of VENDORS: "siemens" (classic CSA files, scanner names),
    "xa" (Siemens XA enhanced: one file per volume of up to XA_FRAMES frames that
    cycle through the echoes, named like XA exports) or "xa-interop" (XA single-frame
    files with the SDS/SDI blocks at top level, named like XA exports).
    """
    if vendor not in VENDORS:
        raise ValueError(f"vendor {vendor!r} is not one of {VENDORS}")
    project = DEFAULT_FIELDS["Project"]
    if when is None:
        # Sessions started within the same second must not share a directory.
        when = dt.datetime.now().replace(microsecond=0)
        while (Path(root) / session_dirname(when, project)).exists():
            when += dt.timedelta(seconds=1)
    wrong = wrong or {}
    session = Path(root) / session_dirname(when, project)
    session.mkdir(parents=True, exist_ok=True)
    study_uid = _uid("study", subject, when.isoformat())
    plan = []
    for number, series in enumerate(protocol, start=1):
        echoes = series.get("echo_times") or (None,)
        per_echo = max(1, round(series["n_files"] * scale))
        plan.append((number, series, echoes, per_echo))
    total = sum(len(echoes) * per_echo for _, _, echoes, per_echo in plan)
    burst = max(1, round(rate / 10)) if rate else 0
    start = time.monotonic()
    written = 0
    clock = when
    for number, series, echoes, per_echo in plan:
        fields = {**series["fields"], **wrong.get(series["name"], {})}
        fields.update(
            SeriesNumber=number,
            SubID=subject,
            StudyUID=study_uid,
            AcqDate=f"{when:%Y%m%d}",
            SeriesUID=_uid("series", study_uid, number),
        )
        tr_s = float(fields.get("TR", DEFAULT_FIELDS["TR"])) / 1000
        if vendor == "xa":
            written = _write_xa_series(session, number, fields, echoes, per_echo, clock,
                                       written, total, progress)  # fmt: skip
            clock += dt.timedelta(seconds=per_echo * tr_s + 30)
            continue
        for image in range(1, per_echo * len(echoes) + 1):
            echo = (image - 1) % len(echoes)
            volume = (image - 1) // len(echoes)
            acq = clock + dt.timedelta(seconds=volume * tr_s)
            extra = {
                "EchoNumber": echo + 1,
                "InstanceNumber": image,
                "AcqTime": f"{acq:%H%M%S}.{acq.microsecond:06d}",
            }
            if echoes[echo] is not None and "TE" not in wrong.get(series["name"], {}):
                extra["TE"] = echoes[echo]
            if vendor == "xa-interop":
                path = session / f"{number}{image:03d}_{_uid('sop', fields['SeriesUID'], image)}.dcm"
                write_xa(path, enhanced=False, **{**fields, **extra})
            else:
                path = session / f"001_{number:06d}_{image:06d}.dcm"
                write_dicom(path, **{**fields, **extra})
            written += 1
            if progress is not None:
                progress(path, written, total)
            if burst and written % burst == 0:
                # Keep to the schedule rather than sleeping a fixed time per burst.
                delay = start + written / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        clock += dt.timedelta(seconds=per_echo * tr_s + 30)
    return session
