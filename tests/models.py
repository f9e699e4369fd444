"""Small model classes shared by tests (captured by value, since this module is not an installed package)."""

from __future__ import annotations

import numpy as np


class FragileModel:
    """Raises on negative input, like a model with an assertion in its feature code."""

    def predict(self, rows):
        rows = np.asarray(rows)
        if (rows < 0).any():
            raise ValueError("negative values are not supported")
        return rows.sum(axis=1)


def wav_headers(rows):
    """An audio model's stand-in that takes bytes: each row's size, and what its WAV header says (rate and
    frames null for bytes that are not a WAV file)."""
    import io
    import wave

    answers = []
    for raw in rows:
        try:
            with wave.open(io.BytesIO(raw)) as sound:
                rate, frames = sound.getframerate(), sound.getnframes()
        except (wave.Error, EOFError):
            rate = frames = None
        answers.append({"bytes": len(raw), "rate": rate, "frames": frames})
    return answers


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit WAV file of a 440 Hz tone, made with the standard library."""
    import io
    import wave

    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(rate)
        sound.writeframes((np.sin(2 * np.pi * 440 * t) * 3000).astype("<i2").tobytes())
    return buffer.getvalue()
