"""The scenario schema: typed dataclasses with defaults and ranges. One file describes one experiment.

A field's ``metadata`` may give ``min``/``max`` (inclusive) or ``choices``; ``names``: the built-in values of a key that
also takes "module:Class" (checked by the loader); ``doc`` is a one-line help.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

#: built-in strategy names (Flower's classes in lower case, then older and short names; fedtiny/server/strategy.py)
STRATEGY_NAMES = (
    "fedavg",
    "fedavgm",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "qfedavg",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
    "differentialprivacyserversidefixedclipping",
    "differentialprivacyclientsidefixedclipping",
    "differentialprivacyserversideadaptiveclipping",
    "differentialprivacyclientsideadaptiveclipping",
    "median",
    "trimmed_mean",
    "dpfedavgfixed",
    "dpfedavgadaptive",
)


_T = TypeVar("_T")


def _f(default: _T, doc: str, **rules: object) -> _T:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc, **rules})
    return field(default=default, metadata={"doc": doc, **rules})


@dataclass
class TaskSection:
    name: str = _f(
        "vibration", 'reference task (vibration, kws, digits) or a user\'s Task subclass as "module:Class"'
    )
    params: dict[str, Any] = _f({}, "task-specific parameters passed to the task constructor")


@dataclass
class ModelSection:
    tflite: str = _f(
        "",
        "a user's full-integer int8 .tflite classifier (path relative to the scenario file); empty: build the task's reference model",
    )
    keras: str = _f(
        "",
        "a user's Keras model (.keras/.h5) that fedtiny converts to full-integer int8 with a representative set from the data",
    )
    classes: list[str] = _f(
        [], "class names in the model's output order (empty: from the model's metadata or the data)"
    )
    factory_samples: int = _f(3000, "factory (central) training examples", min=50, max=1_000_000)
    test_samples: int = _f(1000, "clean factory test examples", min=10, max=1_000_000)
    epochs: int = _f(12, "central training epochs", min=1, max=1000)
    batch_size: int = _f(32, "central training batch size", min=1, max=4096)
    learning_rate: float = _f(2e-3, "central training learning rate (Adam)", min=1e-6, max=1.0)
    head_inputs: int = _f(64, "feature dimension D of the head (C x D)", min=2, max=1024)


@dataclass
class DataSection:
    path: str = _f(
        "",
        "a user's recordings: a .npz file, a folder with one folder per class, or a .csv file (path relative to the scenario file; empty: the task's generator)",
    )
    format: str = _f(
        "auto",
        "layout of data.path (auto: detected from the path)",
        choices=("auto", "npz", "folders", "csv"),
    )
    front_end: str = _f(
        "none",
        'what turns a recording into model inputs: none (x are model inputs), mfcc, vibration, or a user\'s "module:function"',
    )
    front_end_params: dict[str, Any] = _f(
        {},
        "front-end parameters (mfcc: sample_rate, frame_ms, step_ms, fft, mel_bins, fmin, fmax, coefficients)",
    )
    test_fraction: float = _f(
        0.25, "each device's latest examples held out as its local test set", min=0.01, max=0.9
    )
    initial_fraction: float = _f(
        0.5,
        "share of each device's training examples collected before round 1; the rest arrive in time order over the rounds",
        min=0.0,
        max=1.0,
    )
    label_column: str = _f("label", "csv: column with the class (name or index)")
    device_column: str = _f("device", "csv: column with the device id (optional)")
    time_column: str = _f("time", "csv: column with the recording time (optional)")
    max_per_class: int = _f(0, "use at most this many examples per class (0 = all)", min=0, max=10_000_000)
    background: str = _f(
        "",
        "folder of background clips for the 'background' drift knob (default: the data's _background_noise_ folder)",
    )


@dataclass
class FleetSection:
    devices: int = _f(20, "simulated devices", min=1, max=1_000_000)
    devices_per_gateway: int = _f(
        0,
        "devices served by one Flower node (gateway); 0: sized from the fleet and Ray's CPUs (docs/scale.md)",
        min=0,
        max=1_000_000,
    )
    samples_per_device: int = _f(
        120, "examples each device collects (labelled as [labels] says)", min=1, max=100_000
    )
    test_samples_per_device: int = _f(60, "local test examples per device", min=1, max=100_000)
    cache_size: int = _f(200, "int8 feature cache capacity (ring buffer) per device", min=1, max=100_000)
    dirichlet_alpha: float = _f(
        0.5, "label skew across devices (Dirichlet alpha; large = IID)", min=1e-3, max=1e6
    )
    board: str = _f("nano33ble", "board profile of every device")
    condition: dict[str, float] = _f(
        {}, "operating condition of the fleet in the field (task drift knobs, each within its range)"
    )
    spread: dict[str, float] = _f(
        {},
        "per-device uniform +/- spread of condition knobs (heterogeneity); condition +/- spread stays within the knob's range",
    )
    variants: int = _f(
        8, "the per-device spread is quantized into this many condition variants", min=1, max=4096
    )
    pool_per_class: int = _f(
        256, "examples per (condition variant, class) in the shared sample pool", min=1, max=100_000
    )
    featurizer: str = _f(
        "tflm",
        "int8 runtime that computes pool features once (tflm: device-faithful; litert: BUILTIN_REF, +/-1 LSB in <0.1%)",
        choices=("tflm", "litert"),
    )
    new_samples_per_round: int = _f(
        16, "new samples each device pushes into its ring-buffer cache per round", min=0, max=100_000
    )
    boards: dict[str, float] = _f(
        {}, "board mix, name = fraction of the fleet (empty: every device is 'board')"
    )
    duty_cycle: float = _f(1.0, "probability that a device is awake in a round", min=0.0, max=1.0)
    dropout: float = _f(0.0, "probability that an awake device drops out of a round", min=0.0, max=1.0)
    battery_j: float = _f(
        0.0, "battery capacity in joules (0 = mains powered, no battery model)", min=0.0, max=1e9
    )
    battery_min_j: float = _f(0.0, "a device below this charge sits rounds out", min=0.0, max=1e9)
    harvest_j_per_round: float = _f(0.0, "energy harvested per round (joules)", min=0.0, max=1e9)
    speed_jitter: float = _f(
        0.0, "per-device log-normal sigma of compute speed (manufacturing, load)", min=0.0, max=5.0
    )
    faulty_fraction: float = _f(
        0.0, "fraction of devices that send faulty or poisoned updates", min=0.0, max=1.0
    )
    fault: str = _f("nan", "what faulty devices send", choices=("nan", "inf", "scale", "sign_flip", "noise"))


@dataclass
class LabelsSection:
    fraction: float = _f(
        1.0,
        "share of a device's new samples that come with their true label (1 = every sample, as before)",
        min=0.0,
        max=1.0,
    )
    delay_rounds: int = _f(
        0,
        "a label arrives this many rounds after its sample (the sample waits unlabelled)",
        min=0,
        max=10_000,
    )
    noise: float = _f(
        0.0, "probability that a label is wrong (uniform over the other classes)", min=0.0, max=1.0
    )
    noise_matrix: list[list[float]] = _f(
        [],
        "C x C matrix: row y gives the probabilities of each label for true class y (instead of noise)",
    )
    budget_per_round: int = _f(
        0,
        "at most this many labels reach a device per round (0 = no limit); the rest never do",
        min=0,
        max=100_000,
    )
    pseudo: float = _f(
        0.0,
        "0: off; else the confidence p (0 < p < 1) above which a board labels an unlabelled sample itself "
        "from its int8 head (docs/labels.md)",
        min=0.0,
        max=0.999999,
    )
    pseudo_weight: float = _f(
        0.5, "gradient weight of a pseudo-labelled sample (0 < w <= 1)", min=1e-6, max=1.0
    )
    spread: dict[str, float] = _f(
        {},
        "per-device uniform +/- spread of fraction and noise (each device's value is clipped to 0..1)",
    )

    @property
    def all_labelled(self) -> bool:
        """Every sample has its true label at once: the behaviour before labels could be partial."""
        return (
            self.fraction >= 1.0
            and self.delay_rounds == 0
            and self.noise == 0.0
            and not self.noise_matrix
            and self.budget_per_round == 0
            and self.pseudo == 0.0
            and not any(self.spread.values())
        )


@dataclass
class TrainSection:
    epochs: int = _f(2, "local epochs per round", min=1, max=100)
    batch_size: int = _f(16, "local mini-batch size", min=1, max=4096)
    lr: float = _f(0.05, "local SGD learning rate", min=1e-6, max=10.0)
    momentum: float = _f(0.0, "local SGD momentum", min=0.0, max=0.999)
    weight_decay: float = _f(0.0, "local L2 weight decay", min=0.0, max=1.0)
    prox_mu: float = _f(0.0, "FedProx proximal term (0 = off)", min=0.0, max=100.0)


@dataclass
class StrategySection:
    name: str = _f(
        "fedavg",
        "Flower strategy with devices as its clients: Flower's class name in lower case (fedavg, krum, "
        'bulyan, qfedavg, ...), median, trimmed_mean, or a user\'s Strategy subclass as "module:Class"',
        names=STRATEGY_NAMES,
    )
    params: dict[str, Any] = _f(
        {},
        "constructor arguments of the Flower strategy (e.g. num_malicious_nodes = 2 for krum), "
        "checked against its signature",
    )
    fraction: float = _f(1.0, "fraction of devices sampled per round", min=1e-6, max=1.0)
    server_lr: float = _f(
        0.0,
        "server learning rate: FedAvgM server_learning_rate, FedAdam/FedYogi/FedAdagrad eta "
        "(0 = the strategy's default)",
        min=0.0,
        max=100.0,
    )
    server_momentum: float = _f(
        0.9, "server momentum: FedAvgM server_momentum, FedAdam/FedYogi beta_1", min=0.0, max=0.999
    )
    trim: float = _f(
        0.1,
        "fraction trimmed at each end: FedTrimmedAvg beta (trimmed_mean, fedtrimmedavg)",
        min=0.0,
        max=0.49,
    )
    clip_norm: float = _f(0.0, "clip each device update to this L2 norm (0 = off)", min=0.0, max=1e6)
    max_update_norm: float = _f(1e3, "reject updates whose L2 norm exceeds this", min=0.0, max=1e12)
    deadline_s: float = _f(
        0.0, "round deadline in virtual seconds; stragglers past it are dropped (0 = none)", min=0.0, max=1e9
    )
    uplink: str = _f("float32", "device update encoding on the uplink", choices=("float32", "int8"))
    personalize: float = _f(
        0.0,
        "personalization: weight of the local head blended with the global one (0 = off)",
        min=0.0,
        max=1.0,
    )


@dataclass
class DriftEvent:
    at: int = _f(0, "round at which the event starts (0 = before the first round)", min=0, max=1_000_000)
    fraction: float = _f(
        1.0,
        "fraction of the fleet drawn for the event (seeded) from the devices in no other named group: "
        "groups are exclusive, their fractions sum to at most 1; not with target",
        min=0.0,
        max=1.0,
    )
    group: str = _f(
        "drifted",
        "name of the affected device group in the results ('all' is reserved; with target: the target's name)",
    )
    condition: dict[str, float] = _f(
        {}, "condition events: task drift knobs set on the affected devices (each within the knob's range)"
    )
    kind: str = _f(
        "condition",
        "condition: sensor gain/offset/noise, operating condition, speaker (task knobs); label_shift: new class "
        "mix; new_class: classes unseen before appear (the drift kinds registered in fedtiny/fleet/drift)",
    )
    target: str = _f(
        "",
        "act on every device of this earlier event's group (they stay in it) instead of drawing a fraction",
    )
    alpha: float = _f(0.3, "label_shift: Dirichlet alpha of the new class mix", min=1e-3, max=1e6)
    classes: list[int] = _f([], "new_class: class indices the affected devices never saw before 'at'")
    labels: dict[str, float] = _f(
        {},
        "label settings the affected devices' samples get from 'at' on ([labels] keys fraction, delay_rounds, "
        "noise, budget_per_round; docs/labels.md)",
    )


@dataclass
class EvalSection:
    baselines: bool = _f(True, "also run the static model and local-only on-device learning in the same run")
    baseline_devices: int = _f(
        1000,
        "devices (seeded subset) on which baselines and personalization are compared",
        min=1,
        max=1_000_000,
    )
    test_samples: int = _f(
        0, "per-device test samples for evaluation (0 = fleet.test_samples_per_device)", min=0, max=100_000
    )
    recover: float = _f(0.95, "recovered = back to this fraction of the pre-drift accuracy", min=0.1, max=1.0)
    test_mix: str = _f(
        "local",
        "class mix of each device's test samples: local (its own label mix) or balanced "
        "(every class equally: can the device recognize faults it has not seen yet?)",
        choices=("local", "balanced"),
    )


@dataclass
class RuntimeSection:
    engine: str = _f(
        "simulation",
        "simulation: Flower's simulation runtime (a private simulation SuperLink, `flwr run`, Ray); "
        "inline: same gateway code in-process (tests)",
        choices=("simulation", "inline"),
    )
    checkpoint: bool = _f(True, "save state every round (fedtiny run --resume DIR continues)")
    cpus_per_gateway: float = _f(
        0.5,
        "Ray CPUs per gateway ClientApp (Flower takes whole CPUs: a fraction runs one gateway per CPU of a "
        "local Ray counting cores / this; rounded up on an existing cluster)",
        min=0.01,
        max=64.0,
    )
    ray_address: str = _f("", "existing Ray cluster address (empty: start a local Ray)")


@dataclass
class OutputSection:
    dir: str = _f("runs/{name}", "results directory ({name} = scenario name)")
    plots: bool = _f(True, "write PNG plots")


@dataclass
class Scenario:
    name: str = _f("scenario", "scenario name")
    seed: int = _f(0, "one seed for data, partitions, sampling, drift and training", min=0, max=2**32 - 1)
    rounds: int = _f(10, "federated rounds", min=1, max=100_000)
    task: TaskSection = field(default_factory=TaskSection)
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    fleet: FleetSection = field(default_factory=FleetSection)
    labels: LabelsSection = field(default_factory=LabelsSection)
    train: TrainSection = field(default_factory=TrainSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    drift: list[DriftEvent] = field(default_factory=list)
    eval: EvalSection = field(default_factory=EvalSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    output: OutputSection = field(default_factory=OutputSection)
