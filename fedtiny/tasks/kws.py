"""Keyword spotting on synthetic speech: espeak-ng voices the keywords, numpy augments and computes MFCCs.

Classes: yes, no, up, down, left, right, on, off, stop, go, ``_silence_`` (background only) and
``_unknown_`` (one of bed, bird, cat, dog, happy, house, marvin, sheila, tree, wow).

Speakers are espeak-ng (voice, variant, pitch -p, speed -s) combinations: 8 English voices x 30 variants x
4 pitches x 4 speeds, shuffled with a fixed seed and cut into groups of ``speakers_per_group`` (default
8). Group 0 are the factory speakers; groups 1, 2, ... are new speakers. Clips are voiced once and cached
as 16 kHz int16 ``.npy`` files in ``$FEDTINY_CACHE/kws`` (or ``~/.cache/fedtiny/kws``), keyed by the
espeak-ng version and the parameters. Each example: a clip of a random speaker of the group, level
-26 dB RMS +-6 dB, random time shift inside 1 s, background noise (white, pink, brown, 50 Hz hum,
machine) at a random offset, microphone gain, clipping to -1..1; then MFCC (see ``fedtiny.tasks.audio``).
Input shape (49, 10, 1).

Drift knobs (floats):
  speaker_group  integer speaker group: 0 = factory speakers, 1, 2, ... = new speakers (default 0)
  noise          background noise RMS on the -1..1 scale, default 0.005 (each example x0.5..x2)
  gain           microphone gain, dimensionless, default 1.0 (clips at full scale)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fedtiny import exactmath as em
from fedtiny.errors import TaskError
from fedtiny.tasks.audio import CLIP, SAMPLE_RATE, mfcc, read_wav, resample
from fedtiny.tasks.base import Task

if TYPE_CHECKING:  # pragma: no cover
    import keras

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow")
VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "adam", "Alex", "Andy",
    "Annie", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "john", "linda", "max",
    "paul", "robert", "steph",
)  # fmt: skip
PITCHES = (30, 45, 60, 75)
SPEEDS = (130, 150, 170, 190)
NOISE_KINDS = 5
CHUNK = 128  # examples per waveform block


def cache_dir() -> Path:
    """Where voiced clips are cached: ``$FEDTINY_CACHE/kws`` or ``~/.cache/fedtiny/kws``."""
    root = os.environ.get("FEDTINY_CACHE")
    return Path(root) / "kws" if root else Path.home() / ".cache" / "fedtiny" / "kws"


@lru_cache(maxsize=1)
def espeak_version() -> str:
    """espeak-ng's version line; TaskError if espeak-ng is not installed."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise TaskError("kws task needs espeak-ng (apt-get install espeak-ng)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("Data at")[0].strip() or "unknown"


@lru_cache(maxsize=1)
def all_speakers() -> tuple[tuple[str, str, int, int], ...]:
    """Every (voice, variant, pitch, speed), in the fixed shuffled order that defines the groups."""
    combos = [(v, w, p, s) for v in VOICES for w in VARIANTS for p in PITCHES for s in SPEEDS]
    order = np.random.default_rng(20240917).permutation(len(combos))
    return tuple(combos[i] for i in order)


def voice_clip(speaker: tuple[str, str, int, int], word: str, directory: Path | None = None) -> np.ndarray:
    """int16 16 kHz clip of ``word`` by ``speaker``, leading/trailing silence trimmed; cached on disk."""
    return voice_clips([(speaker, word)], directory)[0]


def voice_clips(
    jobs: list[tuple[tuple[str, str, int, int], str]], directory: Path | None = None, parallel: int = 8
) -> list[np.ndarray]:
    """Clips for (speaker, word) jobs: read from the cache or voiced with espeak-ng, a few processes at once."""
    version = espeak_version()
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for (voice, variant, pitch, speed), word in jobs:
        key = hashlib.sha1(f"{version}|{voice}+{variant}|{pitch}|{speed}|{word}".encode()).hexdigest()[:20]
        paths.append(directory / f"{word}-{key}.npy")
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    for s in range(0, len(todo), parallel):
        procs = []
        for i in todo[s : s + parallel]:
            (voice, variant, pitch, speed), word = jobs[i]
            cmd = [
                "espeak-ng",
                "-v",
                f"{voice}+{variant}",
                "-p",
                str(pitch),
                "-s",
                str(speed),
                "--stdout",
                word,
            ]
            procs.append((i, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        for i, proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0 or len(out) < 100:
                raise TaskError(f"espeak-ng failed for {jobs[i]}: {err.decode(errors='replace').strip()}")
            x, rate = read_wav(out)
            x = resample(x, rate)
            loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
            x = x[loud[0] : loud[-1] + 1][:CLIP] if len(loud) else x[:CLIP]
            tmp = paths[i].with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16))
            os.replace(tmp, paths[i])
    return [np.load(p) for p in paths]


@lru_cache(maxsize=1)
def noise_bank(seconds: int = 4) -> np.ndarray:
    """float32 [NOISE_KINDS, seconds*16000] unit-RMS backgrounds: white, pink, brown, hum, machine."""
    rng = np.random.default_rng(7)
    n = seconds * SAMPLE_RATE
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    f[0] = f[1]
    white = np.fft.rfft(rng.standard_normal(n))
    t = np.arange(n) / SAMPLE_RATE
    hum = sum(em.sin(2 * np.pi * 50 * k * t + k) / k for k in range(1, 8)) + 0.1 * rng.standard_normal(n)
    u = (f - 900) / 300
    machine = np.fft.irfft(em.mul_complex(white, em.exp(-(u * u))), n) + 0.3 * em.sin(2 * np.pi * 120 * t)
    bank = np.stack([
        rng.standard_normal(n), np.fft.irfft(em.div_complex(white, np.sqrt(f)), n),
        np.fft.irfft(em.div_complex(white, f), n), hum, machine
    ])  # fmt: skip
    bank -= bank.mean(axis=1, keepdims=True)
    return np.asarray(bank / bank.std(axis=1, keepdims=True), dtype=np.float32)


class KwsTask(Task):
    """12-class keyword spotting (10 keywords, silence, unknown) on espeak-ng speech, MFCC input."""

    name = "kws"
    classes = (*KEYWORDS, "_silence_", "_unknown_")
    input_shape = (49, 10, 1)
    drift_knobs = {
        "speaker_group": "speaker group, integer: 0 = factory speakers, 1, 2, ... = new speakers (default 0)",
        "noise": "background noise RMS on the -1..1 scale (default 0.005; each example x0.5..x2)",
        "gain": "microphone gain, dimensionless (default 1.0; clips at full scale)",
    }
    knob_ranges = {
        "speaker_group": (0.0, 3839.0),  # 3,840 speakers; the exact limit depends on speakers_per_group
        "noise": (0.0, 1.0),
        "gain": (0.0, 100.0),
    }

    def __init__(self, speakers_per_group: int = 8, cache: str | None = None) -> None:
        if not 1 <= int(speakers_per_group) <= 256:
            raise TaskError(f"kws: speakers_per_group must be in 1..256, got {speakers_per_group}")
        self.speakers_per_group = int(speakers_per_group)
        self.cache = Path(cache) if cache else None
        self._clips: dict[tuple[int, int], np.ndarray] = {}  # (speaker index, word index) -> float32 clip

    @property
    def num_groups(self) -> int:
        return len(all_speakers()) // self.speakers_per_group

    def default_condition(self) -> dict[str, float]:
        return {"speaker_group": 0.0, "noise": 0.005, "gain": 1.0}

    def speakers(self, group: int) -> list[tuple[str, str, int, int]]:
        """The (voice, variant, pitch, speed) speakers of ``group``."""
        if not 0 <= group < self.num_groups:
            raise TaskError(f"kws: speaker_group must be an integer in 0..{self.num_groups - 1}, got {group}")
        s = self.speakers_per_group
        return list(all_speakers()[group * s : (group + 1) * s])

    def generate(
        self, labels: np.ndarray, rng: np.random.Generator, condition: Mapping[str, float] | None = None
    ) -> np.ndarray:
        cond = self.resolve_condition(condition)
        group = int(cond["speaker_group"])
        if group != cond["speaker_group"]:
            raise TaskError(f"kws: speaker_group must be an integer, got {cond['speaker_group']}")
        if cond["noise"] < 0 or cond["gain"] < 0:
            raise TaskError(f"kws: noise and gain must be >= 0, got {cond['noise']}, {cond['gain']}")
        labels = self.check_labels(labels)
        speakers = self.speakers(group)
        espeak_version()
        b = len(labels)
        words = (*KEYWORDS, *UNKNOWN_WORDS)
        spk = rng.integers(0, len(speakers), b) + group * self.speakers_per_group
        word = np.where(
            labels == len(KEYWORDS) + 1, len(KEYWORDS) + rng.integers(0, len(UNKNOWN_WORDS), b), labels
        )
        speech = labels != len(KEYWORDS)  # _silence_ has no speech
        need = sorted({(int(s), int(w)) for s, w, sp in zip(spk, word, speech) if sp} - set(self._clips))
        if need:
            clips = voice_clips([(all_speakers()[s], words[w]) for s, w in need], self.cache)
            for k, c in zip(need, clips):  # kept at unit RMS
                c = c.astype(np.float32)
                self._clips[k] = c / (np.sqrt(np.mean(c * c)) + 1e-9)
        level = 0.05 * em.exp(rng.uniform(em.log(0.5), em.log(2.0), b))  # speech RMS, -26 dB +-6 dB
        shift = rng.random(b)
        kind = rng.integers(0, NOISE_KINDS, b)
        bank = noise_bank()
        offs = rng.integers(0, bank.shape[1] - CLIP, b)
        nlev = cond["noise"] * em.exp(rng.uniform(em.log(0.5), em.log(2.0), b))
        nlev = np.where(speech, nlev, nlev * em.exp(rng.uniform(0, em.log(4.0), b)))  # silence: louder too
        windows = np.lib.stride_tricks.sliding_window_view(bank, CLIP, axis=1)  # a view, no copy
        out = np.empty((b, *self.input_shape), dtype=np.float32)
        for s0 in range(0, b, CHUNK):  # chunks keep the 1 s waveforms in cache-sized blocks
            sl = slice(s0, min(b, s0 + CHUNK))
            audio = nlev[sl, None].astype(np.float32) * windows[kind[sl], offs[sl]]
            for i in np.flatnonzero(speech[sl]):
                j = s0 + i
                c = self._clips[(int(spk[j]), int(word[j]))]
                start = int(shift[j] * (CLIP - len(c) + 1))
                audio[i, start : start + len(c)] += c * np.float32(level[j])
            out[sl] = mfcc(np.clip(np.float32(cond["gain"]) * audio, -1.0, 1.0))
        return out

    def build_model(self, head_inputs: int = 64, *, batch_size: int | None = 1) -> keras.Model:
        """DS-CNN-small: conv 10x4/2 -> 4 depthwise-separable blocks -> average pool -> features."""
        import keras

        L = keras.layers
        inp = keras.Input(shape=self.input_shape, batch_size=batch_size, name="mfcc")
        x = L.Conv2D(64, (10, 4), strides=2, padding="same", use_bias=False)(inp)  # 25x5x64
        x = L.ReLU()(L.BatchNormalization()(x))
        for i in range(4):
            ch = head_inputs if i == 3 else 64
            x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
            x = L.ReLU()(L.BatchNormalization()(x))
            x = L.Conv2D(ch, 1, use_bias=False)(x)
            x = L.ReLU()(L.BatchNormalization()(x))
        x = L.GlobalAveragePooling2D(name="features")(x)
        out = L.Dense(len(self.classes), name="head")(x)
        return keras.Model(inp, out, name="kws")
