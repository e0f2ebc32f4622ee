"""The C float32 head training (firmware/core/ft_train.c) and the Python spec (fedtiny.ondevice.train_heads) give
the same bits: seeded random cases (C 2..16, D 1..64, caches empty to wrapped, 1..3 epochs, batches 1..20, lr,
momentum up to 0.9, weight decay, FedProx) through the C ``ft_train`` on the host (firmware/tests/train_diff.c)
and through ``train_heads``; weights, bias, loss and step count compared bit for bit.

The harness is built with contraction switched on and ``-march=native`` (firmware/Makefile ``train_diff``): the
pragmas in ft_train.c, not the build flags, must keep every multiply and add a separate float32 operation. The
spec trains each group's devices in one vectorized call (padding, per-device counts), the C one device at a time.
The golden vectors (firmware/tests/golden/golden_train.h) hold the QEMU Cortex-M4F build to the same bits.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedtiny.ondevice import FeatureCache, TrainConfig, TrainJob, train_heads

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
CASE_HEAD = struct.Struct("<HHHIfiHHffffQII")
GROUPS = 150  # groups of devices sharing a shape and a TrainConfig
CAPACITY = 200  # FT_CACHE_CAPACITY of the default build


def build(target: str, compiler: str) -> Path:
    if shutil.which("make") is None or shutil.which(compiler) is None:
        pytest.skip(f"make or {compiler} not installed")
    r = subprocess.run(
        ["make", "-C", str(FW), f"build/host/{target}"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return FW / "build" / "host" / target


def random_groups(seed: int = 20250611):
    """Each group: one shape and TrainConfig, K devices with their own head, samples, count and device id."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    for g in range(GROUPS):
        c, d = int(rng.integers(2, 17)), int(rng.integers(1, 65))
        cap = int(rng.integers(1, CAPACITY + 1)) if g % 3 else int(rng.integers(1, 25))
        k = int(rng.integers(1, 5))
        cfg = TrainConfig(
            epochs=int(rng.integers(1, 4)),
            batch_size=int(rng.integers(1, 21)) if g % 10 else 1,
            lr=float(f32(np.exp(rng.uniform(np.log(1e-3), np.log(0.3))))),  # the TRAIN request carries f32
            momentum=float(f32(rng.uniform(0.0, 0.9))) if rng.random() < 0.6 else 0.0,
            weight_decay=float(f32(np.exp(rng.uniform(np.log(1e-5), np.log(1e-2)))))
            if rng.random() < 0.5
            else 0.0,
            prox_mu=float(f32(rng.uniform(0.0, 0.1))) if rng.random() < 0.5 else 0.0,
        )
        in_s, in_zp = f32(rng.uniform(0.005, 0.1)), int(rng.integers(-128, 128))
        wscale = [0.01, 0.1, 1.0][g % 3] if g % 7 else 3.0  # now and then logits far apart: exp clamps at -87
        w0 = (rng.standard_normal((k, c, d)) * wscale).astype(f32)
        b0 = (rng.standard_normal((k, c)) * wscale).astype(f32)
        # per device: 0 .. 1.5 x capacity samples (the ring wraps), class prototypes plus noise
        pushed = rng.integers(0, int(cap * 1.5) + 2, k)
        if g == 0:
            pushed[0] = 0  # an empty cache: no steps, loss 0
        m = int(pushed.max(initial=0))
        protos = rng.integers(-70, 70, (k, c, d))
        y = rng.integers(0, c, (k, m))
        x = np.clip(protos[np.arange(k)[:, None], y] + rng.integers(-50, 50, (k, m, d)), -128, 127).astype(
            np.int8
        )
        dev = rng.integers(0, 2**32, k, dtype=np.uint64)
        yield dict(
            cfg=cfg,
            cap=cap,
            in_s=in_s,
            in_zp=in_zp,
            w0=w0,
            b0=b0,
            pushed=pushed,
            x=x,
            y=y,
            seed=int(rng.integers(0, 2**63)),
            round=int(rng.integers(0, 2**32)),
            dev=dev,
        )


def encode_case(g: dict, j: int) -> bytes:
    cfg, k = g["cfg"], int(g["pushed"][j])
    c, d = g["w0"].shape[1:]
    head = CASE_HEAD.pack(
        c,
        d,
        g["cap"],
        k,
        g["in_s"],
        g["in_zp"],
        cfg.epochs,
        cfg.batch_size,
        cfg.lr,
        cfg.momentum,
        cfg.weight_decay,
        cfg.prox_mu,
        g["seed"],
        g["round"],
        int(g["dev"][j]),
    )
    return (
        head
        + g["w0"][j].astype("<f4").tobytes()
        + g["b0"][j].astype("<f4").tobytes()
        + g["x"][j, :k].tobytes()
        + g["y"][j, :k].astype(np.uint8).tobytes()
    )


def spec(g: dict):
    k, d = len(g["pushed"]), g["w0"].shape[2]
    cache = FeatureCache(k, g["cap"], d)
    if g["x"].shape[1]:
        cache.push(g["x"], g["y"], g["pushed"])
    return train_heads(
        g["w0"],
        g["b0"],
        cache.features,
        cache.labels,
        cache.count,
        TrainJob(
            g["cfg"],
            input_scale=float(g["in_s"]),
            input_zero_point=g["in_zp"],
            seed=g["seed"],
            round_=g["round"],
            device_ids=g["dev"],
        ),
    )


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal float32 bit patterns (+0 and -0 differ), NaN matching NaN whatever its payload."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return bool(np.all((a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.parametrize(("target", "compiler"), [("train_diff", "cc"), ("train_diff_clang", "clang")])
def test_c_float_training_bit_identical_to_spec(target: str, compiler: str) -> None:
    exe = build(target, compiler)
    groups = list(random_groups())
    stream = b"".join(encode_case(g, j) for g in groups for j in range(len(g["pushed"])))
    r = subprocess.run([str(exe)], input=stream, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    out, pos, n, finite, clamped = r.stdout, 0, 0, 0, 0
    for gi, g in enumerate(groups):
        ref = spec(g)
        c, d = g["w0"].shape[1:]
        for j in range(len(g["pushed"])):
            st, loss, steps = struct.unpack_from("<ifI", out, pos)
            pos += 12
            w = np.frombuffer(out, "<f4", c * d, pos).reshape(c, d)
            pos += 4 * c * d
            b = np.frombuffer(out, "<f4", c, pos)
            pos += 4 * c
            what = f"group {gi} device {j} (C={c} D={d} cap={g['cap']} n={g['pushed'][j]} {g['cfg']})"
            assert st == 0, f"{what}: ft_train status {st}"
            assert steps == int(ref.steps[j]), what
            assert same_bits(loss, ref.loss[j]), f"{what}: loss {loss!r} vs spec {float(ref.loss[j])!r}"
            bad = np.nonzero(~((w.view(np.uint32) == ref.weights[j].view(np.uint32)) | np.isnan(w)))
            assert same_bits(w, ref.weights[j]), f"{what}: weights differ at {list(zip(*bad))[:5]}"
            assert same_bits(b, ref.bias[j]), f"{what}: bias {b} vs spec {ref.bias[j]}"
            n += 1
            finite += bool(np.isfinite(w).all() and np.isfinite(loss))
            clamped += bool(loss > 87.0)
    assert pos == len(out)
    assert n >= 300 and finite == n, (n, finite)
    assert clamped >= 5  # some runs had logits far enough apart for exp to clamp (loss above 87)


def test_builds_keep_contraction_off() -> None:
    """Every build passes -ffp-contract=off, and ft_train.c does not rely on it: its pragmas switch contraction
    off for gcc and clang, and a fast-math build does not compile."""
    src = (FW / "core" / "ft_train.c").read_text()
    for line in (
        "#pragma STDC FP_CONTRACT OFF",
        '#pragma GCC optimize("fp-contract=off")',
        "#if defined(__FAST_MATH__)",
    ):
        assert line in src, line
    warn = re.search(r"^WARN := (.*(?:\\\n.*)*)", (FW / "Makefile").read_text(), re.M)
    assert warn and "-ffp-contract=off" in warn.group(1)
    assert "$(WARN)" in (FW / "ports" / "b-l475e-iot01a" / "l475.mk").read_text()
    assert "-ffp-contract=off" in (FW / "ports" / "esp-idf" / "main" / "CMakeLists.txt").read_text()


@pytest.mark.parametrize("flags", [["-std=gnu11", "-ffp-contract=fast", "-O2"], ["-std=c99", "-Os"]])
def test_cortex_m4f_code_has_no_fused_multiply_add(flags: list[str], tmp_path: Path) -> None:
    """ft_train.c for a Cortex-M4F as the Arduino core compiles it (gnu11: gcc contracts by default, no way to
    pass flags per sketch): no vfma/vfms/vfnma/vfnms, only separately rounded multiplies and adds. And
    -ffast-math is refused."""
    cc, objdump = "arm-none-eabi-gcc", "arm-none-eabi-objdump"
    if shutil.which(cc) is None or shutil.which(objdump) is None:
        pytest.skip(f"{cc} not installed")
    arch = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
    inc = [f"-I{FW / d}" for d in ("core", "app", "ports/common", "ports/mps2-an386")]
    obj = tmp_path / "ft_train.o"
    r = subprocess.run(
        [cc, *flags, *arch, *inc, "-c", str(FW / "core" / "ft_train.c"), "-o", str(obj)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    asm = subprocess.run([objdump, "-d", str(obj)], capture_output=True, text=True, check=True).stdout
    assert "vmul.f32" in asm
    assert not re.findall(r"\bvfn?m[as](?:[a-z]{2})?\.f32", asm)  # (with a condition: vfmami)
    r = subprocess.run(
        [cc, "-ffast-math", *flags, *arch, *inc, "-c", str(FW / "core" / "ft_train.c"), "-o", str(obj)],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "fast-math" in r.stderr
