"""The typed records of a run's summary.json (a simulation's and a field trial's) and of its parts: the drift
metrics per event and method, the comparison rows, the fleet's facts, a field trial's boards. Types only: no
fedtiny import, so that every layer may name them.

The top-level records (:class:`Summary`, :class:`FieldSummary`) and the metrics have every key optional
(``total=False``): summary.json is built in steps, read back by the CLI and the report (readers use ``.get``
with a default), and the report also reads a field trial's facts as a :class:`Summary`
(:func:`fedtiny.field.server_app.write_field_report`: its ``fleet_stats`` count boards, ``stragglers`` and
``energy_j`` are None). :class:`FleetStats`, :class:`DeviceBudget`, :class:`EvaluationInfo` and
:class:`LabelsSummary` are the canonical definitions of those parts (:mod:`fedtiny.finish` and
:mod:`fedtiny.report.labels` import theirs from here; :mod:`fedtiny.plan.prepare` and :mod:`fedtiny.results`
still declare the same ``DeviceBudget`` and ``EvaluationInfo``, which may import them from here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NotRequired, TypedDict, cast


class GroupMetrics(TypedDict, total=False):
    """The metrics of one drift event on one method's curve (docs/drift-events.md "Metrics"), in
    summary.json's ``drift[event][method]``; ``group`` names the drifted group. The same keys make a
    comparison row."""

    group: str
    at: int
    end: int
    pre_drift: float | None
    after_drift: float | None
    drop: float | None
    drop_raw: float | None
    trough: float | None
    recovery: str
    rounds_to_recover: int | None
    recovered_accuracy: float | None
    auc: float | None
    final: float | None
    pre_drift_lo: float | None
    pre_drift_hi: float | None
    after_drift_lo: float | None
    after_drift_hi: float | None
    recovered_accuracy_lo: float | None
    recovered_accuracy_hi: float | None
    final_lo: float | None
    final_hi: float | None
    drop_se: float | None
    drop_within_noise: bool | None
    auc_lo: float | None
    auc_hi: float | None
    old_at: int
    old_pre_drift: float | None
    old_final: float | None
    forgetting: float | None
    old_pre_drift_lo: float | None
    old_pre_drift_hi: float | None
    old_final_lo: float | None
    old_final_hi: float | None
    forgetting_se: float | None
    # a row of summary.json's ``comparison`` (:data:`ComparisonRow`): the metrics with ``event`` and ``method``,
    # or the whole fleet's (``group`` = ``all``: ``auc_from``, ``initial``); for methods other than federated
    # the differences to federated learning with their paired standard errors
    event: str
    method: str
    auc_from: int
    initial: float | None
    initial_lo: float | None
    initial_hi: float | None
    final_diff_vs_federated: float | None
    final_diff_se: float | None
    final_within_noise: bool | None
    auc_diff_vs_federated: float | None
    auc_diff_se: float | None
    auc_within_noise: bool | None


#: a row of summary.json's ``comparison``: one method's metrics on a drift event (or the whole fleet)
ComparisonRow = GroupMetrics

#: summary.json's ``drift``: {event: {method: metrics}}
DriftMetrics = dict[str, dict[str, GroupMetrics]]


class BaseModelSummary(TypedDict):
    """summary.json's ``base_model``."""

    float_accuracy_clean: float | None
    int8_accuracy_clean: float
    bytes: int
    source: NotRequired[str]
    head: NotRequired[str]
    central_head_accuracy: NotRequired[float]
    classes: NotRequired[list[str]]


class DeviceBudget(TypedDict):
    """summary.json's ``device_budget``: the RAM/MAC bill of one device (:func:`fedtiny.plan.check_budget`)."""

    ram_bytes: int
    cache_bytes: int
    train_macs: int
    infer_macs: int


class FleetStats(TypedDict):
    """summary.json's ``fleet_stats``: the fleet as it was built."""

    devices: int
    gateways: int
    devices_per_gateway: int
    boards: dict[str, int]
    groups: dict[str, int]
    condition_variants: int
    faulty_devices: int
    pool_samples: int
    ray_nodes: list[str]


class EvaluationInfo(TypedDict):
    """summary.json's ``evaluation``; ``classes`` and ``held_out_per_condition_class`` for a generated fleet."""

    interval: str
    test_samples_per_device: int
    comparison_devices: int
    condition_variants: int
    classes: NotRequired[int]
    held_out_per_condition_class: NotRequired[int]
    note: str


class LabelsSummary(TypedDict):
    """summary.json's ``labels`` (docs/labels.md "Results")."""

    section: dict[str, object]
    totals: dict[str, int]
    pseudo_accuracy: float | None
    model_accuracy: float


class BoardSummary(TypedDict):
    """A board of a field trial (summary.json's ``boards``)."""

    board: str
    uri: str
    device_id: int
    gateway: int
    trained: int
    evaluated: int
    failures: int
    last_error: str
    errors: list[str]


class RoundSigning(TypedDict):
    """A round of summary.json's ``signing.rounds``: the heads signed in it with their security counters, the
    boards that verified and installed one, the boards that refused one."""

    round: int
    heads_signed: int
    security_counters: list[int]
    verified_by_boards: int
    refused: int


class SigningSummary(TypedDict):
    """summary.json's ``signing``: the heads a field trial's server signed and what the boards did with them."""

    key_id: str
    heads_signed: int
    verified_by_boards: int
    refused: int
    last_security_counter: int
    rounds: list[RoundSigning]


class AccuracyIntervals(TypedDict, total=False):
    """summary.json's 95% intervals of the initial and final accuracies (empty without rounds)."""

    initial_accuracy_lo: float
    initial_accuracy_hi: float
    final_accuracy_lo: float
    final_accuracy_hi: float
    final_accuracy_global_lo: float
    final_accuracy_global_hi: float
    group_accuracy_initial_lo: dict[str, float]
    group_accuracy_initial_hi: dict[str, float]
    group_accuracy_final_lo: dict[str, float]
    group_accuracy_final_hi: dict[str, float]


class Summary(AccuracyIntervals, total=False):
    """summary.json of a simulated run (:func:`fedtiny.finish.finish_run`), and the summary the report reads
    (with its ``out_dir`` and ``resume_command``; a field trial's facts: ``stragglers`` and ``energy_j`` None,
    not measured)."""

    scenario: str
    kind: str
    task: str
    devices: int
    gateways: int
    rounds: int
    complete: bool
    rounds_done: int
    base_model: BaseModelSummary
    initial_accuracy: float
    final_accuracy: float
    final_accuracy_global: float
    best_accuracy: float
    group_accuracy_initial: dict[str, float]
    group_accuracy_final: dict[str, float]
    updates_rejected: int
    updates_rejected_reasons: dict[str, int]
    bytes_down: int
    bytes_up: int
    device_budget: DeviceBudget
    wall_seconds: float
    files: list[str]
    drift: DriftMetrics
    labels: LabelsSummary
    comparison: list[ComparisonRow]
    fleet_stats: FleetStats
    energy_j: float | None
    stragglers: int | None
    devices_dropped: int
    evaluation: EvaluationInfo
    out_dir: str
    resume_command: str


class FieldSummary(TypedDict, total=False):
    """summary.json of a field trial (:func:`fedtiny.field.server_app.write_results`): accuracies are None
    without a measurement."""

    scenario: str
    kind: str
    rounds: int
    rounds_completed: int
    complete: bool
    stopped_by: str
    gateways: int
    boards: list[BoardSummary]
    board_failures: int
    boards_failed_every_round: list[str]
    gateway_failures: int
    initial_accuracy: float | None
    final_accuracy: float | None
    final_accuracy_global: float | None
    updates_aggregated: int
    updates_seen: int
    duplicates_ignored: int
    stale_ignored: int
    updates_rejected: int
    board_errors: list[str]
    bytes_down: int
    bytes_up: int
    wall_seconds: float
    final_head_sha256: str
    error: str
    files: list[str]
    initial_accuracy_lo: float
    initial_accuracy_hi: float
    final_accuracy_lo: float
    final_accuracy_hi: float
    signing: SigningSummary
    report_error: str


def as_summary(summary: Mapping[str, object]) -> Summary:
    """A summary built or read by code that does not type it (summary.json is JSON): read as :class:`Summary`,
    whose keys are all optional (readers use ``.get`` with a default)."""
    return cast("Summary", summary)


def as_field_summary(summary: Mapping[str, object]) -> FieldSummary:
    """A field trial's summary as :class:`FieldSummary` (see :func:`as_summary`)."""
    return cast("FieldSummary", summary)
