"""The plan: a scenario loaded and validated once (:mod:`fedtiny.plan.load`), resolved into each stage's
typed input (:mod:`fedtiny.plan.resolve`), and everything before the first round (:mod:`fedtiny.plan.prepare`)."""

from fedtiny.plan.load import load_scenario, scenario_from_dict
from fedtiny.plan.prepare import Log, RunPlan, check_budget, data_label, prepare_run
from fedtiny.plan.resolve import StageInputs, resolve

__all__ = [
    "Log",
    "RunPlan",
    "StageInputs",
    "check_budget",
    "data_label",
    "load_scenario",
    "prepare_run",
    "resolve",
    "scenario_from_dict",
]
