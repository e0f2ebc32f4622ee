"""Fleet throughput: the same training work (head 64 x C, 64 cached samples per device, 1 local epoch, batch
16, every device every round) in one invocation, for

* a compiled floor: the training arithmetic alone (fedtiny.ondevice.fast on cached int8 features already in
  memory), no Flower, no Ray, no sampling, validation or aggregation, measured right before fedtiny at the
  same size (this VM's speed drifts by up to 1.7x over minutes: a floor taken at another moment would make
  the ratio a measure of the drift);
* fedtiny on Flower's Simulation Engine (Ray), gateways sized automatically (``devices_per_gateway = 0``,
  docs/scale.md): 1k, 10k, 100k and 1M devices (whole rounds: sampling, training, validation, aggregation,
  re-quantization, per-device evaluation);
* the same gateway and server code in-process (no Flower, no Ray) at 10k and 100k;
* one Flower node per device (``devices_per_gateway = 1``): 1,000 devices;
* one Ray node vs two (a head and a worker node that this script starts on this machine with ``ray start``,
  one CPU each): the same fleet on both. On one machine the two nodes share its cores, so this shows the
  mechanism (gateways spread over nodes), not what a second machine adds.

Prints seconds per round after warm-up (median of the rounds after the first), device-rounds/s, the peak RSS
of the whole process tree (driver + Ray processes) sampled every 0.1 s and bytes per device, the ratio of
fedtiny to the floor, GFLOP/s against the machine's measured float32 matmul peak, and the slope of seconds per
round against devices. The backbone is the synthetic projection (fedtiny.fleet.synthetic): the work
measured is the fleet's, not the int8 backbone's. Measure on a quiet machine: the figures are wall times.

    .venv/bin/python benchmarks/fleet_throughput.py                  # everything (see --help)
    .venv/bin/python benchmarks/fleet_throughput.py --sizes 10k,100k --no-per-device --no-nodes
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("FEDTINY_CACHE", str(ROOT / ".cache" / "fedtiny"))

from typing import Self

import numpy as np

from fedtiny.clients.simulated.gateway import handle
from fedtiny.config.schema import Scenario
from fedtiny.fleet.synthetic import prepare_synthetic
from fedtiny.ondevice import TrainConfig, TrainJob
from fedtiny.ondevice.fast import train_heads_fast
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec, round_spec
from fedtiny.runner import RunPlan, simulate
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.transports import InlineTransport

SAMPLES, DIM, CLASSES, BATCH, EPOCHS = 64, 64, 10, 16, 1
# FLOP per device-round, docs/ondevice.md §6: 2 x MACs, MACs = epochs * (2*n*C*D + S*C*(D+1))
STEPS = -(-SAMPLES // BATCH)
FLOP_PER_DEVICE = 2 * EPOCHS * (2 * SAMPLES * CLASSES * DIM + STEPS * CLASSES * (DIM + 1))


class PeakRSS:
    """Peak resident memory of this process and all its descendants (Ray workers, raylet, GCS, ...)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def tree_rss() -> int:
        """Sum of RSS over this process and its descendants, from /proc (no psutil)."""
        parent: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    stat = Path(f"/proc/{d}/stat").read_text()
                    parent[int(d)] = int(stat[stat.rindex(")") + 2 :].split()[1])
                except (OSError, ValueError, IndexError):
                    pass
        tree, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            p = frontier.pop()
            kids = [c for c, pp in parent.items() if pp == p and c not in tree]
            tree.update(kids)
            frontier.extend(kids)
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        for p in tree:
            try:
                total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * page
            except (OSError, ValueError, IndexError):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.tree_rss())
            time.sleep(0.1)

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def scenario(devices: int, per_gateway: int, rounds: int, engine: str) -> Scenario:
    """The benchmark's scenario; ``per_gateway = 0``: gateways sized by fedtiny (docs/scale.md)."""
    return scenario_from_dict(
        {
            "name": f"bench{devices}",
            "seed": 1,
            "rounds": rounds,
            "task": {"name": "digits"},
            "model": {"test_samples": 50, "factory_samples": 60},
            "fleet": {
                "devices": devices,
                "devices_per_gateway": per_gateway,
                "samples_per_device": 64,
                "cache_size": 64,
                "new_samples_per_round": 0,
                "test_samples_per_device": 20,
                "pool_per_class": 256,
                "variants": 4,
                "spread": {"rotation_deg": 5.0},
            },
            "train": {"epochs": 1, "batch_size": 16, "lr": 0.05},
            "strategy": {"name": "fedavg", "fraction": 1.0},
            "eval": {"baselines": False},
            "runtime": {"engine": engine, "cpus_per_gateway": 1.0, "checkpoint": False},
            "output": {"plots": False},
        }
    )


def measure(
    label: str, devices: int, per_gateway: int, rounds: int, engine: str, work: Path, ray_address: str = ""
) -> dict:
    s = scenario(devices, per_gateway, rounds, engine)
    out = work / label.replace(" ", "_")
    layout, head = prepare_synthetic(fleet_spec(s), out)
    server = FleetServer(round_spec(s), layout, out / "fleet", head, out_dir=None)
    plan = RunPlan(s, out, b"", layout, {}, server)
    with PeakRSS() as mem:
        t0 = time.time()
        if engine == "inline":
            server.run(InlineTransport(handle))
        else:
            simulate(plan, log=lambda *_: None, ray_address=ray_address)
        total = time.time() - t0
    per_round = [r.wall_s for r in server.rows[1:]]
    steady = statistics.median(per_round[1:]) if len(per_round) > 1 else per_round[0]
    res = {
        "label": label,
        "devices": devices,
        "gateways": layout.gateways,
        "round_s": steady,
        "device_rounds_per_s": devices / steady,
        "peak_rss_gb": mem.peak / 2**30,
        "total_s": total,
        "rounds": per_round,
        "trained": server.rows[-1].devices_trained,
        "peak_rss": mem.peak,
        "ray_nodes": len(list((out / "fleet" / "ray_nodes").glob("*"))),  # Ray nodes whose gateways worked
    }
    print(
        f"{label:<34} {devices:>9,} dev {layout.gateways:>5} nodes  round {steady:7.3f} s  "
        f"{devices / steady:>10,.0f} device-rounds/s  {FLOP_PER_DEVICE * devices / steady / 1e9:5.1f} GFLOP/s  "
        f"peak RSS {mem.peak / 2**30:5.2f} GB ({mem.peak / devices:,.0f} B/device)  "
        f"(rounds: {', '.join(f'{x:.2f}' for x in per_round)}; all {total:.0f} s)",
        flush=True,
    )
    return res


def matmul_peak() -> float:
    """GFLOP/s of a large float32 matmul (numpy's BLAS, all cores): what the machine can compute."""
    n = 2048
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def compiled_floor(devices: int, chunk: int = 100_000, repeats: int = 3, fastmath: bool = False) -> dict:
    """The training arithmetic alone: train_heads_fast on cached int8 features already in memory; with
    ``fastmath`` the same kernel compiled with reassociation and contraction (not the spec's bits: what the
    exact arithmetic of docs/ondevice.md §3 costs).

    At most ``chunk`` devices' caches are held at once (a million would need 4 GB); larger fleets reuse them
    under other device ids (so other sample orders), which is the same arithmetic.
    """
    rng = np.random.default_rng(1)
    m = min(devices, chunk)
    feats = rng.integers(-128, 100, (m, SAMPLES, DIM)).astype(np.int8)
    labels = rng.integers(0, CLASSES, (m, SAMPLES)).astype(np.int64)
    w = (rng.standard_normal((CLASSES, DIM)) * 0.1).astype(np.float32)
    b = np.zeros(CLASSES, np.float32)
    cfg = TrainConfig(EPOCHS, BATCH, 0.05)
    kw = {"input_scale": 0.05, "input_zero_point": -128, "seed": 1, "round_": 1}
    t0 = time.perf_counter()
    kw["fastmath"] = fastmath
    train_heads_fast(
        w,
        b,
        feats[:1],
        labels[:1],
        np.full(1, SAMPLES),
        TrainJob(cfg, device_ids=np.zeros(1, np.int64), **kw),
    )
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats if devices <= chunk else 1):
        t0 = time.perf_counter()
        for start in range(0, devices, m):
            k = min(m, devices - start)
            train_heads_fast(
                w,
                b,
                feats[:k],
                labels[:k],
                np.full(k, SAMPLES),
                TrainJob(cfg, device_ids=np.arange(start, start + k, dtype=np.int64), **kw),
            )
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    print(
        f"{'fastmath floor (not exact)' if fastmath else 'compiled floor (training only)':<34} {devices:>9,} dev {'-':>5} nodes  round {sec:7.3f} s  "
        f"{devices / sec:>10,.0f} device-rounds/s  {FLOP_PER_DEVICE * devices / sec / 1e9:5.1f} GFLOP/s  "
        f"(first call in this process {first:.2f} s)",
        flush=True,
    )
    return {"devices": devices, "round_s": sec, "first_call_s": first, "fastmath": fastmath}


def slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares seconds per round = a + b * devices: (a, b)."""
    x = np.array([p[0] for p in points], dtype=np.float64)
    y = np.array([p[1] for p in points], dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


SIZES = {"1k": 1_000, "10k": 10_000, "100k": 100_000, "1m": 1_000_000}
ROUNDS = {1_000: 4, 10_000: 4, 100_000: 6, 1_000_000: 3}  # the median of the rounds after the first


def parse_sizes(text: str) -> list[int]:
    """``1k,10k,100k,1m`` (or plain numbers) -> sorted device counts."""
    out = []
    for part in text.lower().replace(" ", "").split(","):
        if part:
            out.append(SIZES[part] if part in SIZES else int(part))
    return sorted(set(out))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``ray start --block`` in its own process group (stopped by that group, never with ``ray stop``, which
    would stop every Ray on the machine), as tests/test_ray_cluster.py does."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def on_cluster(label: str, devices: int, nodes: int, work: Path) -> dict:
    """The fleet on a Ray cluster of ``nodes`` nodes started here (one CPU each): 4 gateways of a whole CPU."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    address = f"127.0.0.1:{port}"
    procs = [
        _ray("--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
             "--include-dashboard=false", f"--temp-dir={temp}", env=env)
    ]  # fmt: skip
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or procs[0].poll() is not None:
                    raise RuntimeError("the Ray head did not start") from None
                time.sleep(0.5)
        for _ in range(nodes - 1):
            procs.append(_ray(f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", env=env))
        import ray

        ray.init(address=address, logging_level="ERROR")
        try:
            deadline = time.time() + 60
            while len([n for n in ray.nodes() if n["Alive"]]) < nodes and time.time() < deadline:
                time.sleep(0.5)
            alive = len([n for n in ray.nodes() if n["Alive"]])
        finally:
            ray.shutdown()
        if alive < nodes:
            raise RuntimeError(f"{alive} of {nodes} Ray nodes came up")
        return measure(label, devices, -(-devices // 4), 3, "simulation", work, ray_address=address)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(
        description="Fleet throughput of fedtiny against a compiled floor (issue 12); prints every figure. "
        "A full run (1k, 10k, 100k, 1M, the floor, in-process, one Flower node per device, one vs two Ray "
        "nodes) needs 12 GB of free memory for the 1M fleet and is estimated at 10 minutes on 2 idle cores "
        "(measured: 17 min for --sizes 10k,100k,1m --no-per-device --no-nodes at load average 10).",
    )
    ap.add_argument(
        "--sizes",
        default="1k,10k,100k,1m",
        help="fleet sizes for the floor and fedtiny on Ray, comma-separated: 1k, 10k, 100k, 1m or numbers "
        "(default: %(default)s; 1m is skipped with less than 12 GB available)",
    )
    ap.add_argument("--quick", action="store_true", help="only 1k and 10k, no per-device or cluster runs")
    ap.add_argument("--no-1m", action="store_true", help="drop 1,000,000 from --sizes")
    ap.add_argument("--no-inline", action="store_true", help="skip the in-process (no Flower, no Ray) runs")
    ap.add_argument("--no-per-device", action="store_true", help="skip one Flower node per device at 1k")
    ap.add_argument("--no-nodes", action="store_true", help="skip one Ray node vs two")
    ap.add_argument(
        "--nodes-devices",
        default="100k",
        help="fleet size of the one-vs-two Ray nodes comparison (default: %(default)s)",
    )
    args = ap.parse_args()
    sizes = [1_000, 10_000] if args.quick else parse_sizes(args.sizes)
    if args.no_1m:
        sizes = [n for n in sizes if n < 1_000_000]
    print(
        f"fleet throughput: head {DIM} x {CLASSES}, {SAMPLES} cached samples/device, {EPOCHS} epoch, batch {BATCH}, "
        f"every device every round; {os.cpu_count()} CPUs; {FLOP_PER_DEVICE:,} FLOP per device-round; {load()}",
        flush=True,
    )
    peak = matmul_peak()
    print(f"machine: float32 matmul 2048^3 (numpy BLAS, all cores) {peak:.1f} GFLOP/s", flush=True)
    avail_gb = mem_available() / 2**30
    if 1_000_000 in sizes and avail_gb < 12:
        print(f"skipping 1,000,000 devices: {avail_gb:.1f} GB available (< 12 GB)", flush=True)
        sizes.remove(1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        floor, fast_floor, res = {}, {}, {}
        for n in sizes:  # each size's floor right before its fedtiny run: the same moment of a noisy machine
            floor[n] = compiled_floor(n)
            fast_floor[n] = compiled_floor(n, fastmath=True)
            res[n] = measure(f"fedtiny (gateways) {n:,}", n, 0, ROUNDS.get(n, 3), "simulation", work)
            print(f"  {load()}", flush=True)
        inproc = {}
        if not (args.quick or args.no_inline):
            for n in [m for m in sizes if m in (10_000, 100_000)]:
                inproc[n] = measure(f"fedtiny in-process (no Flower) {n:,}", n, 0, 3, "inline", work)
        one = None
        if not (args.quick or args.no_per_device):
            one = measure("one Flower node per device 1k", 1_000, 1, 3, "simulation", work)
        nodes = {}
        if not (args.quick or args.no_nodes):
            nd = parse_sizes(args.nodes_devices)[0]
            for k in (1, 2):
                nodes[k] = on_cluster(f"Ray cluster, {k} node(s) x 1 CPU {nd:,}", nd, k, work)
    report(sizes, floor, fast_floor, res, inproc, one, nodes, peak)


def report(
    sizes: list[int],
    floor: dict[int, dict],
    fast_floor: dict[int, dict],
    res: dict[int, dict],
    inproc: dict[int, dict],
    one: dict | None,
    nodes: dict[int, dict],
    peak: float,
) -> None:
    print(f"\nsummary ({load()}):")
    print(
        f"  {'devices':>9}  {'gateways':>8}  {'floor s':>8}  {'fedtiny s':>9}  {'ratio':>6}  {'floor GFLOP/s':>13}  "
        f"{'fedtiny GFLOP/s':>15}  {'% of matmul peak':>16}  {'peak RSS':>9}  {'B/device':>9}"
    )
    for n in sizes:
        f, r = floor[n]["round_s"], res[n]["round_s"]
        gf = FLOP_PER_DEVICE * n / r / 1e9
        print(
            f"  {n:>9,}  {res[n]['gateways']:>8}  {f:8.3f}  {r:9.3f}  {r / f:6.2f}  "
            f"{FLOP_PER_DEVICE * n / f / 1e9:13.1f}  {gf:15.1f}  "
            f"{100 * gf / peak:15.1f}%  {res[n]['peak_rss'] / 2**30:7.2f} GB  {res[n]['peak_rss'] / n:9,.0f}"
        )
    if len(sizes) >= 2:
        a, b = slope([(n, res[n]["round_s"]) for n in sizes])
        fa, fb = slope([(n, floor[n]["round_s"]) for n in sizes])
        print(
            f"  slope: fedtiny {b * 1e5:.3f} s per 100k devices + {a:.3f} s per round; "
            f"floor {fb * 1e5:.3f} s per 100k devices + {fa:.3f} s"
        )
        steps = ", ".join(
            f"{lo:,}->{hi:,} x{res[hi]['round_s'] / res[lo]['round_s']:.1f} (devices x{hi / lo:.0f})"
            for lo, hi in zip(sizes, sizes[1:])
        )
        print(f"  growth: {steps}")
        big = [n for n in sizes if n >= 100_000]
        if len(big) >= 2:
            lo, hi = big[0], big[-1]
            print(
                f"  marginal memory {(res[hi]['peak_rss'] - res[lo]['peak_rss']) / (hi - lo):,.0f} B per device "
                f"({lo:,} -> {hi:,})"
            )
    print("  exact vs fastmath floor (docs/ondevice.md §3: the bits of the spec on every CPU):")
    for n in sizes:
        f, fm = floor[n]["round_s"], fast_floor[n]["round_s"]
        print(f"    {n:>9,}: exact {f:.3f} s, fastmath {fm:.3f} s per round ({f / fm:.2f}x)")
    print("\ntargets (issue 18, 2 cores, quiet machine):")
    for n, lim in ((100_000, 0.5), (1_000_000, 5.0)):
        if n in res:
            r = res[n]["round_s"]
            print(
                f"  {n:,} round {r:.2f} s (<= {lim:g} s): {'OK' if r <= lim else 'MISSED'}; "
                f"{r / floor[n]['round_s']:.2f}x the compiled floor (<= 1.3x): "
                f"{'OK' if r <= 1.3 * floor[n]['round_s'] else 'MISSED'}"
            )
    if 1_000_000 in res:
        gb = res[1_000_000]["peak_rss"] / 2**30
        print(f"  1,000,000 peak RSS {gb:.2f} GB (<= 3.5 GB): {'OK' if gb <= 3.5 else 'MISSED'}")
    if one is not None and 10_000 in res:
        ratio = res[10_000]["device_rounds_per_s"] / one["device_rounds_per_s"]
        print(
            f"  fedtiny 10k vs one node per device 1k: {ratio:.0f}x device-rounds/s (>= 40x): "
            f"{'OK' if ratio >= 40 else 'MISSED'}"
        )
    for n, r in inproc.items():
        if n in res:
            print(
                f"  in-process (no Flower/Ray) {n:,}: {r['round_s']:.2f} s per round, "
                f"{r['round_s'] / floor[n]['round_s']:.2f}x the floor; Flower+Ray: {res[n]['round_s'] / r['round_s']:.2f}x in-process"
            )
    if len(nodes) == 2:
        print(
            f"  Ray nodes (1 CPU each, same machine): 1 node {nodes[1]['device_rounds_per_s']:,.0f}, 2 nodes "
            f"{nodes[2]['device_rounds_per_s']:,.0f} device-rounds/s (x{nodes[2]['device_rounds_per_s'] / nodes[1]['device_rounds_per_s']:.2f}); "
            "the mechanism on one machine, not a second machine's speedup"
        )
        print(f"  Ray nodes that ran gateways: {nodes[1]['ray_nodes']} of 1, {nodes[2]['ray_nodes']} of 2")


if __name__ == "__main__":
    main()
