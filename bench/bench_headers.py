"""How many headers per second read_header extracts on one core.

    python bench/bench_headers.py [--files 2000] [--baseline 300]

Writes a synthetic session (~2,000 files with real CSA sizes) into a temporary
directory, then times, in this process pinned to one CPU:
  * synth.write_session (files/s written),
  * read_header over the generated files,
  * read_header over nibabel's real Siemens 0.dcm, repeated,
  * the original tool's way: a full pydicom dcmread plus nibabel's
    csareader.get_csa_header for the image and series CSA, per file,
  * read_header per vendor and format on the real files in tests/data (Siemens E11,
    XA30 enhanced and interoperability, GE, Philips), and the time of one read of the
    96-frame XA30 enhanced file (target < 5 ms).
Files are read once before timing so every figure is from the page cache.  Rates
are per CPU-second (fair on a shared machine) and per wall-clock second.
Results go to bench/RESULTS.md (section "headers").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel
import pydicom

# Run from a checkout without installing: `python bench/bench_headers.py`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import record

from mrqart import synth
from mrqart.headers import read_header

with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import csareader

REAL_FILE = Path(os.path.dirname(nibabel.__file__)) / "nicom" / "tests" / "data" / "0.dcm"
CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data"
ENHANCED_96 = next(CORPUS.glob("dcm_qa_xa30/In/5_anat-T1w_acq-tfl/*.dcm"))


def corpus_format(path: Path) -> str:
    """The vendor and format of a corpus file, from its set and name."""
    part = str(path.relative_to(CORPUS))
    if part.startswith("dcm_qa_xa30i/"):
        return "Siemens XA30 interoperability"
    if part.startswith("dcm_qa_xa30/"):
        return "Siemens XA30 enhanced"
    if "/Philips/" in part:
        return "Philips 5.3 enhanced"
    if "GE" in part:
        return "GE DV26-MR29"
    return "Siemens E11 classic (CSA)"


def per_format() -> list[str]:
    """read_header rates per vendor and format, and one 96-frame enhanced read, in lines."""
    groups: dict[str, list[Path]] = {}
    for path in sorted(p for p in CORPUS.glob("*/In/**/*") if p.is_file()):
        groups.setdefault(corpus_format(path), []).append(path)
    lines = []
    for label, paths in sorted(groups.items()):
        for p in paths:
            p.read_bytes()
        assert all(isinstance(read_header(p), dict) for p in paths)
        cpu, wall = rate(read_header, paths * max(1, 600 // len(paths)))
        lines.append(
            f"read_header on {label} ({len(paths)} real files, tests/data): "
            f"{cpu:,.0f} headers per CPU-second ({wall:,.0f}/s wall)"
        )
    times = []
    for _ in range(200):
        c0 = time.process_time()
        read_header(ENHANCED_96)
        times.append(time.process_time() - c0)
    lines.append(
        f"one read of the 96-frame XA30 enhanced file ({ENHANCED_96.stat().st_size:,} B): "
        f"median {statistics.median(times) * 1000:.2f} ms CPU, p95 "
        f"{sorted(times)[int(len(times) * 0.95)] * 1000:.2f} ms (target < 5 ms)"
    )
    return lines
PROTOCOL_FILES = sum(s["n_files"] * len(s.get("echo_times") or (None,)) for s in synth.PROTOCOL)


def original_style(path: Path) -> None:
    """The original tool's cost: everything parsed, then both CSA headers decoded."""
    ds = pydicom.dcmread(path)
    csareader.get_csa_header(ds, "image")
    csareader.get_csa_header(ds, "series")


def rate(
    fn: Callable[[Path], object], paths: Sequence[Path], rounds: int = 3
) -> tuple[float, float]:
    """Best-of-`rounds` calls per CPU second and per wall-clock second of fn over paths.

    CPU time is the fair "one core" figure on a shared machine: wall-clock time also
    counts the time other processes hold the core.
    """
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        for p in paths:
            fn(p)
        cpu.append(len(paths) / (time.process_time() - c0))
        wall.append(len(paths) / (time.perf_counter() - w0))
    return max(cpu), max(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="synthetic files (about)")
    parser.add_argument("--baseline", type=int, default=300, help="files for the baseline")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        session = synth.write_session(tmp, scale=args.files / PROTOCOL_FILES)
        paths = sorted(session.iterdir())
        write_rate = len(paths) / (time.perf_counter() - start)
        sizes = [p.stat().st_size for p in paths[:50]]
        for p in paths:  # warm the page cache
            p.read_bytes()
        assert all(isinstance(read_header(p), dict) for p in paths)
        synth_rate = rate(read_header, paths)
        real = [REAL_FILE] * len(paths)
        real_rate = rate(read_header, real)
        base_synth = rate(original_style, paths[: args.baseline], rounds=1)
        base_real = rate(original_style, real[: args.baseline], rounds=1)

    lines = [
        f"one core, pydicom {pydicom.__version__}, nibabel {nibabel.__version__}",
        (
            f"synth.write_session: {len(paths)} files (median {statistics.median(sizes):,.0f} B, "
            f"CSA ~11 KB image + ~80 KB series): {write_rate:,.0f} files/s"
        ),
    ]
    for label, ours, base in (
        (f"synthetic session, {len(paths)} files", synth_rate, base_synth),
        ("nibabel 0.dcm (real VB17), repeated", real_rate, base_real),
    ):
        lines.append(
            f"read_header on {label}: {ours[0]:,.0f} headers per CPU-second "
            f"({ours[1]:,.0f}/s wall); original style (pydicom dcmread + nibabel CSA): "
            f"{base[0]:,.0f}/s CPU ({base[1]:,.0f}/s wall); speed-up {ours[0] / base[0]:.1f}x"
        )
    lines += per_format()
    record("headers (bench_headers.py)", lines)


if __name__ == "__main__":
    main()
