"""One registry per extension point: the drift kinds (fedtiny/fleet/drift). Validation, the fleet plan,
field-trial replay and the report ask the registry, so a kind registered there (here a toy one, in a
test-local copy of the registry) is validated, applied, described and replayed without touching them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedtiny.config.schema import DriftEvent
from fedtiny.errors import ScenarioError
from fedtiny.fleet import drift
from fedtiny.fleet.data import build_plan
from fedtiny.fleet.drift import DRIFT_KINDS, Hit, Segment
from fedtiny.plan import scenario_from_dict
from fedtiny.plan.resolve import fleet_spec, layout_of


class OnlyClass:
    """Toy kind: the devices see one class only from the event on (``classes = [i]``)."""

    options = {"classes": "take classes"}
    on_recorded_data = False
    replayable = True

    def validate(self, event: DriftEvent, index: int, src: str, num_classes: int) -> None:
        if len(event.classes) != 1 or not 0 <= event.classes[0] < num_classes:
            raise ScenarioError(
                f"{src}: 'drift[{index}].classes' = {event.classes}; expected one class index"
            )

    def before(self, hit: Hit, start: Segment) -> None:
        pass

    def apply(self, hit: Hit, seg: Segment) -> None:
        seg.mix[hit.devices] = np.eye(hit.num_classes)[hit.event.classes[0]]

    def describe(self, event: DriftEvent) -> str:
        return f"only class {event.classes[0]}"


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "DRIFT_KINDS", {**DRIFT_KINDS, "only_class": OnlyClass()})


def _scenario(event: dict[str, Any], **fleet: Any) -> Any:
    return scenario_from_dict(
        {"rounds": 6, "task": {"name": "digits"}, "fleet": {"devices": 40, **fleet}, "drift": [event]}
    )


TOY = {"at": 3, "fraction": 0.5, "group": "g", "kind": "only_class", "classes": [4]}


def test_every_registered_kind_has_the_protocol() -> None:
    assert list(DRIFT_KINDS)[0] == DriftEvent().kind  # the schema's default is a registered kind
    for name, kind in DRIFT_KINDS.items():
        for attr in ("validate", "before", "apply", "describe"):
            assert callable(getattr(kind, attr)), (name, attr)
        assert isinstance(kind.on_recorded_data, bool) and isinstance(kind.replayable, bool)
        assert set(kind.options) <= {f for f in DriftEvent.__dataclass_fields__} - set(drift.base.COMMON_KEYS)


def test_an_unknown_kind_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ScenarioError) as err:
        _scenario(TOY)
    assert str(err.value) == (
        "<scenario>: 'drift[0].kind' = 'only_class'; expected one of: condition, label_shift, new_class"
    )


def test_a_registered_kind_is_validated_applied_described_and_replayed(toy: None) -> None:
    with pytest.raises(ScenarioError, match=r"'drift\[0\].kind' = 'nope'; expected one of: .*, only_class"):
        _scenario({**TOY, "kind": "nope"})
    # its own checks, and the keys of the other kinds, naming drift[i].key
    with pytest.raises(ScenarioError, match=r"'drift\[0\].classes' = \[4, 5\]; expected one class index"):
        _scenario({**TOY, "classes": [4, 5]})
    with pytest.raises(
        ScenarioError, match=r"'drift\[0\].alpha' means nothing for kind = 'only_class' \(only label_shift"
    ):
        _scenario({**TOY, "alpha": 0.5})
    with pytest.raises(ScenarioError, match=r"'drift\[0\].classes' means nothing for kind = 'condition'"):
        _scenario(
            {"at": 3, "condition": {"brightness": 0.3}, "classes": [1]}
        )  # new_class and the toy take it

    s = _scenario(TOY)
    layout = layout_of(s)
    plan = build_plan(fleet_spec(s), layout)
    hit = plan.group == layout.groups.index("g")
    assert hit.sum() == 20
    before, after = layout.segment_starts.index(0), layout.segment_starts.index(3)
    cm = plan.cmix.astype(np.float64)
    mix = np.diff(cm, prepend=0.0, axis=-1)  # per-class share (the last class holds the 1e-6 overshoot)
    assert np.allclose(mix[after][hit][:, 4], 1.0) and np.allclose(np.delete(mix[after][hit], [4, 9], 1), 0.0)
    assert not np.allclose(mix[before][hit][:, 4], 1.0)
    assert np.array_equal(
        plan.cmix[:, ~hit], build_plan(fleet_spec(_scenario({**TOY, "at": 6})), layout).cmix[:, ~hit]
    )

    from fedtiny.report.headline import event_text

    assert event_text(s, "g", 3, 20) == "At round 3, the 20 devices of group “g” drifted (only class 4)"

    from fedtiny.field.replay import check_replayable

    check_replayable(s)  # replayable = True
    shifted = _scenario({"at": 3, "fraction": 0.5, "kind": "label_shift"})
    with pytest.raises(ScenarioError, match='supports kind = "condition" or kind = "only_class" on a random'):
        check_replayable(shifted)


def test_the_built_in_kinds_describe_their_events() -> None:
    cond = DriftEvent(condition={"gain": 0.5, "noise": 0.1})
    assert DRIFT_KINDS["condition"].describe(cond) == "gain 0.5, noise 0.1"
    assert DRIFT_KINDS["label_shift"].describe(DriftEvent(kind="label_shift")) == "a new class mix"
    assert (
        DRIFT_KINDS["new_class"].describe(DriftEvent(kind="new_class", classes=[2, 3]))
        == "classes 2, 3 appear"
    )
    assert [n for n, k in DRIFT_KINDS.items() if k.on_recorded_data] == ["condition"]
    assert [n for n, k in DRIFT_KINDS.items() if k.replayable] == ["condition"]
