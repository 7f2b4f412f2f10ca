"""The console's alarm sound, static/alarm.wav: made here, committed there (no build step).

Two short tones a fifth apart, twice (about 0.6 s), 16-bit mono at 11,025 Hz, with 5 ms
ramps so the tones do not click. ``python tests/make_alarm_wav.py`` rewrites the file;
tests/test_console.py checks that the committed file is what this makes.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from pathlib import Path

RATE = 11025  # Hz: plenty for tones under 1 kHz, and keeps the file small
TONES = ((880.0, 0.12), (0.0, 0.03), (1320.0, 0.12), (0.0, 0.08)) * 2  # (Hz, s); 0 = silence
AMPLITUDE = 0.5  # of full scale: loud enough, not harsh
RAMP_S = 0.005
TARGET = Path(__file__).resolve().parent.parent / "static" / "alarm.wav"


def samples() -> list[int]:
    out = []
    for freq, seconds in TONES:
        n = round(seconds * RATE)
        ramp = round(RAMP_S * RATE)
        for i in range(n):
            envelope = min(1.0, i / ramp, (n - 1 - i) / ramp) if freq else 0.0
            value = AMPLITUDE * envelope * math.sin(2 * math.pi * freq * i / RATE)
            out.append(round(value * 32767))
    return out


def alarm_wav() -> bytes:
    """The WAV file's bytes (deterministic)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        data = samples()
        w.writeframes(struct.pack(f"<{len(data)}h", *data))
    return buffer.getvalue()


if __name__ == "__main__":
    TARGET.write_bytes(alarm_wav())
    print(f"{TARGET}: {TARGET.stat().st_size} bytes")
