"""Fleet throughput: the same training work (head 64 x C, 64 cached samples per device, 1 local epoch, every
device every round) in one invocation, for

* fedtiny on Flower's Simulation Engine (Ray), gateways of many devices: 1,000, 10,000 and 100,000 devices;
* one Flower node per device (``devices_per_gateway = 1``): 1,000 devices;
* a pure-numpy floor with no Flower and no Ray (the same gateway and server code called in-process):
  10,000 and 100,000 devices.

Prints seconds per round after warm-up (median of the rounds after the first), device-rounds/s, and the peak
RSS of the whole process tree (driver + Ray processes) sampled every 0.1 s. The backbone is the synthetic
projection (fedtiny.fleet.synthetic): the work measured is the fleet's, not the int8 backbone's.

    .venv/bin/python benchmarks/fleet_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
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

from clients.simulated.gateway import handle  # noqa: E402
from fedtiny.config import scenario_from_dict  # noqa: E402
from fedtiny.fleet.synthetic import prepare_synthetic  # noqa: E402
from fedtiny.runner import RunPlan, simulate  # noqa: E402
from fedtiny.server.fleet_server import FleetServer
from fedtiny.server.transports import InlineTransport


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

    def __enter__(self) -> "PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def scenario(devices: int, per_gateway: int, rounds: int, engine: str) -> object:
    return scenario_from_dict({
        "name": f"bench{devices}", "seed": 1, "rounds": rounds,
        "task": {"name": "digits"}, "model": {"test_samples": 50, "factory_samples": 60},
        "fleet": {"devices": devices, "devices_per_gateway": per_gateway, "samples_per_device": 64, "cache_size": 64,
                  "new_samples_per_round": 0, "test_samples_per_device": 20, "pool_per_class": 256, "variants": 4,
                  "spread": {"rotation_deg": 5.0}},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        "strategy": {"name": "fedavg", "fraction": 1.0},
        "eval": {"baselines": False},
        "runtime": {"engine": engine, "cpus_per_gateway": 1.0, "checkpoint": False},
        "output": {"plots": False},
    })


def measure(label: str, devices: int, per_gateway: int, rounds: int, engine: str, work: Path) -> dict:
    s = scenario(devices, per_gateway, rounds, engine)
    out = work / label.replace(" ", "_")
    layout, head = prepare_synthetic(s, out)
    server = FleetServer(s, layout, out / "fleet", head, out_dir=None)
    plan = RunPlan(s, out, b"", layout, {}, server)
    with PeakRSS() as mem:
        t0 = time.time()
        if engine == "inline":
            server.run(InlineTransport(handle))
        else:
            simulate(plan, log=lambda *_: None)
        total = time.time() - t0
    per_round = [r.wall_s for r in server.rows[1:]]
    steady = statistics.median(per_round[1:]) if len(per_round) > 1 else per_round[0]
    res = {"label": label, "devices": devices, "gateways": layout.gateways, "round_s": steady,
           "device_rounds_per_s": devices / steady, "peak_rss_gb": mem.peak / 2**30, "total_s": total,
           "rounds": per_round, "trained": server.rows[-1].devices_trained}
    print(f"{label:<34} {devices:>7} dev {layout.gateways:>5} nodes  round {steady:7.3f} s  "
          f"{devices / steady:>10,.0f} device-rounds/s  peak RSS {mem.peak / 2**30:5.2f} GB  "
          f"(rounds: {', '.join(f'{x:.2f}' for x in per_round)})", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 100,000-device and one-node-per-device runs")
    args = ap.parse_args()
    print(f"fleet throughput: head 64 x 10, 64 cached samples/device, 1 epoch, batch 16, every device every round; "
          f"{os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res = {}
        res["f1k"] = measure("fedtiny (gateways) 1k", 1_000, 500, 4, "simulation", work)
        res["f10k"] = measure("fedtiny (gateways) 10k", 10_000, 2_500, 4, "simulation", work)
        res["n10k"] = measure("numpy floor (no Flower) 10k", 10_000, 2_500, 3, "inline", work)
        if not args.quick:
            res["f100k"] = measure("fedtiny (gateways) 100k", 100_000, 10_000, 3, "simulation", work)
            res["n100k"] = measure("numpy floor (no Flower) 100k", 100_000, 10_000, 3, "inline", work)
            res["one1k"] = measure("one Flower node per device 1k", 1_000, 1, 3, "simulation", work)
    print("\ntargets (2 cores):")
    f10k = res["f10k"]
    print(f"  10k round {f10k['round_s']:.2f} s (<= 1.5 s): {'OK' if f10k['round_s'] <= 1.5 else 'MISSED'}; "
          f"peak RSS {f10k['peak_rss_gb']:.2f} GB (<= 3 GB): {'OK' if f10k['peak_rss_gb'] <= 3 else 'MISSED'}")
    if "f100k" in res:
        f, n, one = res["f100k"], res["n100k"], res["one1k"]
        ratio = res["f10k"]["device_rounds_per_s"] / one["device_rounds_per_s"]
        print(f"  100k round {f['round_s']:.2f} s (<= 15 s): {'OK' if f['round_s'] <= 15 else 'MISSED'}; "
              f"peak RSS {f['peak_rss_gb']:.2f} GB (<= 8 GB): {'OK' if f['peak_rss_gb'] <= 8 else 'MISSED'}")
        print(f"  fedtiny 10k vs one node per device 1k: {ratio:.0f}x device-rounds/s (>= 40x): {'OK' if ratio >= 40 else 'MISSED'}")
        print(f"  fedtiny 100k vs numpy floor 100k: {f['round_s'] / n['round_s']:.2f}x the floor's round time (<= 3x): "
              f"{'OK' if f['round_s'] <= 3 * n['round_s'] else 'MISSED'}")


if __name__ == "__main__":
    main()
