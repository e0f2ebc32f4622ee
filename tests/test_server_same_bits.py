"""The server's float maths gives the same bits on any CPU, thread count and reply order (fedtiny/server/exact.py).

"Other CPUs" on one machine: subprocesses that run the server's aggregation, strategies, evaluation and
uncertainty figures on seeded inputs with

- ``NPY_DISABLE_CPU_FEATURES`` naming numpy's AVX-512 dispatch targets this CPU has (then AVX2/FMA3 too):
  numpy's SIMD ``exp``/``log``/``power``/``tanh`` take their AVX2 or baseline paths, whose last bits differ;
- ``OPENBLAS_CORETYPE`` = Haswell / Sandybridge, and one OpenBLAS thread: other BLAS kernels (other summation
  orders in ``@``, ``np.dot``, ``np.linalg.norm``);
- one numba thread, and numba's kernels compiled for a Haswell and for a generic x86-64 CPU
  (``NUMBA_CPU_NAME``; they are compiled without fastmath, so LLVM neither reorders nor fuses their sums).

Each prints a sha256 per result; all must be equal. Two controls per variant (a float64 ``@`` and ``np.exp``)
show that the variant really changes numpy's arithmetic here (measured: ``@``, ``np.dot`` and
``np.linalg.norm`` differ under every ``OPENBLAS_CORETYPE`` and with one OpenBLAS thread; ``np.exp``,
``np.log``, ``np.power`` in float64 without AVX-512, in float32 and ``np.tanh`` also without AVX2; sums,
``sqrt``, ``np.median`` and numpy's Gaussian draws never), so a BLAS product or a SIMD power in the server's
results makes this test fail: before fedtiny/server/exact.py, the gateways' ``sum n_i loss_i``, the strategy's
weighted loss, the local-only/personalized accuracies, Krum's selection, the DP clipping and FedAdam's head did.

Left as Flower has them (not covered here): the DP wrappers' Gaussian noise (numpy's legacy ``normal``, whose
``log`` is glibc's: equal under every variant above), the adaptive DP wrappers' ``math.exp`` of their clipping
norm, and QFedAvg's ``np.float_power(loss, q)`` for a non-integer ``q``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# -- the worker: run in a subprocess under each variant ------------------------------------------------------


def _h(*arrays: Any) -> str:
    m = hashlib.sha256()
    for a in arrays:
        m.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return m.hexdigest()[:16]


def _head(rng: np.random.Generator, c: int, d: int) -> tuple[Any, np.ndarray]:
    from fedtiny.ondevice import FloatHead, quantize_head

    fh = FloatHead(
        (rng.standard_normal((c, d)) * 0.2).astype(np.float32),
        (rng.standard_normal(c) * 0.1).astype(np.float32),
    )
    calib = rng.integers(-128, 128, size=(64, d), dtype=np.int8)
    return quantize_head(fh, 0.05, -3, calib), calib


def _parts(
    rng: np.random.Generator, g: Any, k: int, gateways: int, int8: bool = False
) -> list[dict[str, np.ndarray]]:
    """Per-device gateway replies for ``k`` devices on ``gateways`` gateways (contiguous ascending ranges)."""
    from fedtiny.records import encode_int8_delta

    c, d = g.weights.shape
    w = (g.weights[None] + rng.standard_normal((k, c, d)).astype(np.float32) * 0.05).astype(np.float32)
    b = (g.bias[None] + rng.standard_normal((k, c)).astype(np.float32) * 0.05).astype(np.float32)
    w[3] *= 50  # one absurd norm, rejected
    n = rng.integers(1, 40, size=k).astype(np.int64)
    loss = rng.random(k).astype(np.float32) * 2
    ids = np.arange(k, dtype=np.int64)
    parts = []
    for sl in np.array_split(np.arange(k), gateways):
        p = {"bias": b[sl], "device_ids": ids[sl], "num_examples": n[sl], "loss": loss[sl]}
        if int8:
            q, sc = encode_int8_delta(w[sl] - g.weights[None])
            p |= {"delta_q": q, "delta_scale": sc}
        else:
            p["weights"] = w[sl]
        parts.append(p)
    return parts


def _strategy(name: str, **params: Any) -> Any:
    from flwr.serverapp import strategy as fs

    from fedtiny.server.strategy import DeviceStrategy

    cls = getattr(fs, name)
    if name.startswith("DifferentialPrivacy"):
        return DeviceStrategy(cls(strategy=fs.FedAvg(), **params), seed=5, clip_norm=0.8)
    return DeviceStrategy(cls(**params), seed=5, clip_norm=0.8)


def compute() -> dict[str, str]:
    """sha256 of every result, keyed by what it is (run in a fresh process: the variant is its environment)."""
    from fedtiny import uncertainty as u
    from fedtiny.ondevice import dequantize_head
    from fedtiny.server.aggregate import update_stats, validate_updates, weighted_delta
    from fedtiny.server.partial import combine, merge, reduce_updates
    from fedtiny.server.updates import aggregate_step

    out: dict[str, str] = {}
    rng = np.random.default_rng(20240611)
    a = rng.standard_normal((200, 173))
    out["control_blas"] = _h(a @ a.T)  # not the server's: shows the variant changes BLAS
    out["control_simd"] = _h(np.exp(a), np.exp(a.astype(np.float32)))  # and numpy's SIMD paths

    c, d, k = 6, 24, 1200
    head, calib = _head(rng, c, d)
    g = dequantize_head(head)
    parts = _parts(rng, g, k, 7)
    w = np.concatenate([p["weights"] for p in parts])
    b = np.concatenate([p["bias"] for p in parts])
    n = np.concatenate([p["num_examples"] for p in parts])
    loss = np.concatenate([p["loss"] for p in parts])
    ids = np.arange(k, dtype=np.int64)
    out["update_stats"] = _h(*update_stats(w, b, g.weights, g.bias))
    out["validate"] = _h(validate_updates(w, b, g.weights, g.bias, 3.0).accepted)
    f = rng.random(k)
    out["weighted_delta"] = _h(
        *weighted_delta(w, b, g.weights.astype(np.float64), g.bias.astype(np.float64), f)
    )

    # gateways' partial sums (two chunks merged per gateway), combined
    sums = []
    for p in parts:
        half = len(p["device_ids"]) // 2
        chunks = [
            reduce_updates(
                p["weights"][s],
                p["bias"][s],
                p["num_examples"][s],
                p["loss"][s],
                p["device_ids"][s],
                g,
                3.0,
                0.8,
            )
            for s in (slice(0, half), slice(half, None))
        ]
        sums.append(merge(chunks))
    comb = combine(sums, g)
    out["partial"] = _h(comb.step_w, comb.step_b, [comb.total, comb.mean_loss_weighted, comb.mean_loss])
    out["partial_int8"] = _h(*reduce_updates(w, b, n, loss, ids, g, 3.0, 0.8, uplink="int8").values())

    # one aggregation step per strategy: the re-quantized int8 head and the round's loss
    for name, params in (
        ("FedAvg", {}),
        ("FedAdam", {"eta": 0.05}),
        ("FedAvgM", {"server_momentum": 0.9}),
        ("FedMedian", {}),
        ("FedTrimmedAvg", {"beta": 0.2}),
        ("Krum", {"num_malicious_nodes": 2}),
        ("MultiKrum", {"num_malicious_nodes": 2, "num_nodes_to_select": 5}),
        ("Bulyan", {"num_malicious_nodes": 2}),
        (
            "DifferentialPrivacyServerSideFixedClipping",
            {"noise_multiplier": 0.1, "clipping_norm": 0.5, "num_sampled_clients": 60},
        ),
        (
            "DifferentialPrivacyClientSideFixedClipping",
            {"noise_multiplier": 0.1, "clipping_norm": 0.5, "num_sampled_clients": 60},
        ),
    ):
        ds = _strategy(name, **params)
        h = head
        res = []
        for r in (1, 2, 3):
            step = aggregate_step(
                r, h, _parts(np.random.default_rng(r), dequantize_head(h), 60, 4), ds, 3.0, calib
            )
            h = step.head
            res += [h.weights, h.weight_scales, h.bias, [h.output_scale, h.output_zero_point], [step.loss]]
        out[f"step_{name}"] = _h(*res)
    # what Flower's strategies compute with BLAS or SIMD maths (fedtiny/server/exact.py replaces it)
    from flwr.app import Array, ArrayRecord
    from flwr.serverapp.strategy import fedadam, multikrum
    from flwr.supercore import differential_privacy

    try:
        from fedtiny.server.exact import install_flower_exact

        install_flower_exact()
    except ImportError:  # before the fix
        pass
    recs = [
        ArrayRecord({"w": Array(w[i].astype(np.float64)), "b": Array(b[i].astype(np.float64))})
        for i in range(k)
    ]
    out["krum_distances"] = _h(multikrum.compute_distances(recs))
    out["dp_norm"] = _h([differential_privacy.get_norm([w[i].astype(np.float64), b[i]]) for i in range(k)])
    out["fedadam_power"] = _h(
        [fedadam.np.power(beta, r + 1.0) for beta in (0.9, 0.99) for r in range(1, 500)]
    )
    fl = []
    for name in ("FedAvg", "FedAdam", "Krum", "FedMedian", "DifferentialPrivacyServerSideFixedClipping"):
        params: dict[str, Any] = {"eta": 0.05} if name == "FedAdam" else {}
        if name.startswith("Differential"):
            params = {"noise_multiplier": 0.1, "clipping_norm": 0.5, "num_sampled_clients": k}
        ds = _strategy(name, **params)
        for r in (1, 2):
            new = ds.aggregate(r, g, w, b, n, ids, loss)
            fl += [new.weights, new.bias]
    out["float_heads"] = _h(*fl)

    ds = _strategy("FedAvg")
    step = aggregate_step(1, head, sums, ds, 3.0, calib)
    out["step_partial"] = _h(step.head.weights, step.head.bias, [step.head.output_scale, step.loss])

    # uncertainty figures
    y = rng.random((300, 20)) < 0.7
    smp = rng.integers(0, 90, size=(300, 20))
    grp = rng.integers(0, 3, size=300)
    valid = rng.random((300, 20)) < 0.95
    every, per = u.two_way_by_group(y, smp, grp, 3, valid)
    pool = rng.random(90) < 0.6
    every2, per2 = u.two_way_by_group(None, smp, grp, 3, None, pool)
    yb = rng.random((300, 20)) < 0.6
    yf = rng.random((300, 20))
    est = [every, *per.values(), every2, *per2.values(), u.two_way(yf, smp, valid), u.iid(y[0])]
    out["uncertainty"] = _h([[e.p, e.lo, e.hi, e.se, e.n_eff] for e in est], [u.paired_se(y, yb, smp, valid)])
    return out


# -- the tests -----------------------------------------------------------------------------------------------


def _variants() -> dict[str, dict[str, str]]:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    present = [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]
    avx512 = [t for t in present if t.startswith("AVX512") or t == "X86_V4"]
    avx2 = avx512 + [t for t in present if t in ("X86_V3", "AVX2", "FMA3")]
    out: dict[str, dict[str, str]] = {"one_thread": {"OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}}
    if platform.machine().lower() not in ("x86_64", "amd64"):  # the CPU names below are x86-64's
        return out | {"no_simd": {"NPY_DISABLE_CPU_FEATURES": " ".join(present)}}
    out["openblas_haswell"] = {"OPENBLAS_CORETYPE": "Haswell"}
    out["openblas_sandybridge"] = {"OPENBLAS_CORETYPE": "Sandybridge"}
    # numba's kernels compiled for another CPU too (NUMBA_CPU_NAME: no AVX-512, then no AVX at all)
    out["no_avx512"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(avx512), "NUMBA_CPU_NAME": "haswell"}
    out["no_avx2"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(avx2), "NUMBA_CPU_NAME": "generic"}
    return out


def _run(env: dict[str, str]) -> dict[str, str]:
    drop = ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "NUMBA_CPU_NAME")
    e = {k: v for k, v in os.environ.items() if k not in drop}
    e |= {k: v for k, v in env.items() if v}  # an empty NPY_DISABLE_CPU_FEATURES: nothing to disable
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, __file__, "worker"], env=e, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def test_same_bits_on_other_cpus() -> None:
    base = _run({})
    changed_control = []
    for name, env in _variants().items():
        got = _run(env)
        if got["control_blas"] != base["control_blas"] or got["control_simd"] != base["control_simd"]:
            changed_control.append(name)
        diff = sorted(key for key in base if not key.startswith("control") and got[key] != base[key])
        assert not diff, f"{name} ({env}): {diff} differ"
    # the variants do change numpy's arithmetic on this machine (else the test shows nothing)
    if "openblas_sandybridge" in _variants():
        assert {"openblas_haswell", "openblas_sandybridge"} & set(changed_control), changed_control


def test_reply_order_does_not_matter() -> None:
    from fedtiny.ondevice import dequantize_head
    from fedtiny.server.partial import reduce_updates
    from fedtiny.server.updates import aggregate_step

    rng = np.random.default_rng(3)
    head, calib = _head(rng, 5, 16)
    g = dequantize_head(head)
    for int8 in (False, True):
        parts = _parts(rng, g, 90, 6, int8=int8)
        for name in ("FedAvg", "FedAdam", "Krum", "FedMedian"):
            heads = []
            for perm in (range(6), [5, 3, 0, 4, 1, 2], [2, 1, 0, 5, 4, 3]):
                st = aggregate_step(1, head, [parts[i] for i in perm], _strategy(name), 3.0, calib)
                heads.append(
                    _h(st.head.weights, st.head.bias, [st.head.output_scale, st.loss], st.accepted_ids)
                )
            assert len(set(heads)) == 1, (name, int8)
    sums = [
        reduce_updates(p["weights"], p["bias"], p["num_examples"], p["loss"], p["device_ids"], g, 3.0, 0.8)
        for p in _parts(rng, g, 90, 6)
    ]
    heads = []
    for perm in (range(6), [4, 5, 2, 0, 3, 1]):
        st = aggregate_step(1, head, [sums[i] for i in perm], _strategy("FedAvg"), 3.0, calib)
        heads.append(_h(st.head.weights, st.head.bias, [st.loss], st.accepted_ids, [st.rejected]))
    assert len(set(heads)) == 1


def test_flower_transport_replies_in_gateway_order() -> None:
    """Replies are handed on in gateway order, whatever order the Grid returns them in."""
    from types import SimpleNamespace

    from fedtiny.ondevice import TrainConfig, dequantize_head
    from fedtiny.records import GatewayInstruction, arrays_to_record
    from fedtiny.server.strategy import _identity
    from fedtiny.server.transports import FlowerTransport

    head, _ = _head(np.random.default_rng(1), 3, 4)
    assert dequantize_head(head).weights.shape == (3, 4)

    class Grid:
        def send_and_receive(self, msgs: list[Any], timeout: float) -> list[Any]:
            replies = []
            for m in reversed(msgs):  # arrival order: last gateway first
                node = m.metadata.dst_node_id
                rec = SimpleNamespace(array_records={"updates": arrays_to_record(node=np.array([node]))})
                replies.append(
                    SimpleNamespace(
                        has_error=lambda: False, metadata=SimpleNamespace(src_node_id=node), content=rec
                    )
                )
            return replies

    t = FlowerTransport(Grid())
    t.node_of = {0: 900, 1: 17, 2: 450}  # gateway -> node id (node ids in no particular order)
    with _identity():  # Messages outside a Flower run need a task identity
        ins = GatewayInstruction(
            round=1, segment=0, seed=0, fleet_dir="/tmp", train=TrainConfig(1, 4, 0.1, 0, 0, 0)
        )
        parts, failed = t.exchange("train", head, ins, {2: np.array([8]), 0: np.array([1]), 1: np.array([4])})
    assert failed == 0
    assert [int(p["node"][0]) for p in parts] == [900, 17, 450]


def test_exact_helpers() -> None:
    from fedtiny.server import exact

    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 33))
    dist = exact.pairwise_sq_dist(x)
    ref = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    assert np.array_equal(dist, ref)
    assert exact.ipow(0.9, 5) == 0.9 * 0.9 * 0.9 * 0.9 * 0.9 or abs(exact.ipow(0.9, 5) - 0.9**5) < 1e-15
    assert exact.ipow(2.0, -3) == 0.125 and exact.ipow(3.0, 0) == 1.0
    f = rng.random(7)
    assert np.allclose(exact.weighted_rows(f, x), f @ x, rtol=1e-12, atol=1e-12)
    assert exact.dot(f, x[:, 0]) == pytest.approx(float(f @ x[:, 0]), rel=1e-12)
    assert exact.sq_norm([x, f]) == pytest.approx(float(np.sum(x * x) + np.sum(f * f)), rel=1e-12)


if __name__ == "__main__" and sys.argv[1:] == ["worker"]:
    import logging

    logging.getLogger("flwr").setLevel(logging.ERROR)
    print(json.dumps(compute()))
