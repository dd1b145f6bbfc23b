"""Distinct stereo WAVs for the benchmarks (Python's standard library only).

Usage: python3 bench/wavs.py OUT FILES SECONDS [ROUNDS]
FILES files of SECONDS seconds each (44.1 kHz, 16-bit), in OUT, or with
ROUNDS in OUT/0 .. OUT/ROUNDS-1, each round with content of its own (so no
round re-sends bytes a node already holds).
"""
import math
import os
import struct
import sys
import wave


def write(path, freq, secs):
    second = b"".join(
        struct.pack(
            "<hh",
            int(6000 * math.sin(2 * math.pi * freq * i / 44100)),
            int(6000 * math.sin(2 * math.pi * freq * 1.5 * i / 44100)),
        )
        for i in range(44100)
    )
    with wave.open(path, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        for _ in range(secs):
            w.writeframes(second)


def main():
    out, files, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else None
    for r in range(rounds or 1):
        d = f"{out}/{r}" if rounds is not None else out
        os.makedirs(d, exist_ok=True)
        for n in range(files):
            # Distinct content per file and round.
            write(f"{d}/track-{n:03}.wav", 220 + 7 * n + 3 * r, secs)


main()
