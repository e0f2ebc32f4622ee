"""Make a user's int8 keyword spotter and a recordings folder, the way a user would, without fedtiny.

Writes into ``OUT`` (default ``examples/byom_kws/build``):

* ``model_int8.tflite``: a small DS-CNN-style keyword spotter trained with plain TensorFlow/Keras on
  "factory" speakers, MFCC input 49x10x1 (the common speech-commands front end, computed with tf.signal),
  ending in ``FULLY_CONNECTED -> SOFTMAX``, converted full-integer int8 with **float** input and output
  (QUANTIZE/DEQUANTIZE at the edges), like many shipped models;
* ``data/``: recordings of *other* speakers in the Speech Commands layout (``data/<word>/<speaker>_nohash_<n>.wav``,
  16 kHz 16-bit WAV, ``_background_noise_/``): the field, where each speaker is one device. Each speaker's later
  recordings are taken with a weaker, noisier microphone (real drift in the data, no [[drift]] event needed).

Speech is synthesized with espeak-ng (apt-get install espeak-ng): speakers are voice/variant/pitch/speed
combinations. Then: ``fedtiny run scenarios/byom_kws.toml``.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import wave
from pathlib import Path

import numpy as np

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off")
RATE = 16000
FACTORY_VOICES = [("en-us", v) for v in ("m1", "m2", "m3", "m4", "m5", "m6", "m7")] + [
    ("en", "m3"),
    ("en", "m5"),
]
FIELD_VOICES = (
    [("en-gb-x-rp", v) for v in ("f1", "f2", "f3", "f4")]
    + [("en-us", v) for v in ("f1", "f2", "f3", "f4")]
    + [("en-029", "m2"), ("en-gb-scotland", "m4"), ("en-gb-x-gbclan", "f2"), ("en-us-nyc", "m1")]
)


def speak(voice: str, variant: str, pitch: int, speed: int, word: str) -> np.ndarray:
    """float32 mono 16 kHz clip of one word, 1 s long, speech centred at a random-free fixed place."""
    out = subprocess.run(
        ["espeak-ng", "-v", f"{voice}+{variant}", "-p", str(pitch), "-s", str(speed), "--stdout", word],
        capture_output=True,
        check=True,
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate, x = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    x = x.astype(np.float32) / 32768.0
    x = np.interp(np.arange(0, len(x), rate / RATE), np.arange(len(x)), x).astype(np.float32)  # resample
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    x = x[loud[0] : loud[-1] + 1][:RATE]
    clip = np.zeros(RATE, np.float32)
    start = (RATE - len(x)) // 2
    clip[start : start + len(x)] = x
    return clip


def recordings(
    voices: list[tuple[str, str]], reps: int, rng: np.random.Generator, aging: bool
) -> list[tuple[str, str, int, np.ndarray]]:
    """(speaker, word, repetition, clip): each speaker repeats each word with a little jitter."""
    out = []
    for _si, (voice, variant) in enumerate(voices):
        pitch, speed = int(rng.integers(30, 70)), int(rng.integers(140, 190))
        speaker = f"{voice.replace('-', '')}{variant}p{pitch}"
        for rep in range(reps):
            # later sessions: the microphone ages (quieter, noisier) — drift that is in the data
            gain = 1.0 - (0.5 * rep / max(reps - 1, 1) if aging else 0.0)
            noise = 0.004 + (0.02 * rep / max(reps - 1, 1) if aging else 0.0)
            for word in WORDS:
                x = speak(
                    voice, variant, pitch + int(rng.integers(-6, 7)), speed + int(rng.integers(-15, 16)), word
                )
                x = np.roll(x, int(rng.integers(-1600, 1600))) * gain * float(rng.uniform(0.6, 1.0))
                x = x + noise * rng.standard_normal(RATE).astype(np.float32)
                out.append((speaker, word, rep, x.astype(np.float32)))
    return out


def mfcc(clips: np.ndarray) -> np.ndarray:
    """[N, 49, 10, 1]: STFT 480/320/512, magnitude, 40 mel bins 20-4000 Hz, log(mel + 1e-6), DCT, 10 coefficients."""
    import tensorflow as tf

    stft = tf.signal.stft(clips, frame_length=480, frame_step=320, fft_length=512)
    mel = tf.signal.linear_to_mel_weight_matrix(40, 257, RATE, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(tf.abs(stft), mel, 1) + 1e-6)
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10].numpy()[..., None].astype(np.float32)


def train_model(x: np.ndarray, y: np.ndarray, seed: int) -> bytes:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inp = keras.Input((49, 10, 1), batch_size=1)
    h = keras.layers.Conv2D(24, (5, 3), strides=(2, 1), padding="same", activation="relu")(inp)
    h = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = keras.layers.Conv2D(32, 1, activation="relu")(h)
    h = keras.layers.AveragePooling2D((5, 2))(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(48, activation="relu")(h)
    h = keras.layers.Dense(len(WORDS))(h)
    out = keras.layers.Softmax()(h)
    train = keras.Model(inp, out)
    batch = keras.models.clone_model(train, input_tensors=keras.Input((49, 10, 1)))
    batch.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    batch.fit(x, y, epochs=25, batch_size=32, verbose=0, shuffle=True)
    train.set_weights(batch.get_weights())
    conv = tf.lite.TFLiteConverter.from_keras_model(train)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[i : i + 1]] for i in range(min(300, len(x))))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # float input/output stay float
    return bytes(conv.convert())


def write_wav(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "build")
    ap.add_argument("--reps", type=int, default=6, help="recordings of each word per field speaker")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rng = np.random.default_rng(a.seed)
    factory = recordings(FACTORY_VOICES, 4, rng, aging=False)
    x = mfcc(np.stack([c for *_, c in factory]))
    y = np.array([WORDS.index(w) for _, w, _, _ in factory])
    tflite = train_model(x, y, a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "model_int8.tflite").write_bytes(tflite)
    data = a.out / "data"
    for speaker, word, rep, clip in recordings(FIELD_VOICES, a.reps, rng, aging=True):
        write_wav(data / word / f"{speaker}_nohash_{rep}.wav", clip)
    write_wav(
        data / "_background_noise_" / "hum.wav",
        (
            0.05 * np.sin(2 * np.pi * 50 * np.arange(4 * RATE) / RATE) + 0.02 * rng.standard_normal(4 * RATE)
        ).astype(np.float32),
    )
    print(
        f"wrote {a.out / 'model_int8.tflite'} ({len(tflite)} bytes) and {data} "
        f"({len(FIELD_VOICES)} speakers x {len(WORDS)} words x {a.reps})"
    )


if __name__ == "__main__":
    main()
