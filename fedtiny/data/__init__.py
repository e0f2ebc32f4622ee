"""A user's recordings -> model inputs: loaders (npz, class folders, csv), front ends and generic drift knobs.

numpy only (no TensorFlow): :func:`load_recordings` reads the data, :func:`make_front_end` turns signals into
model inputs, :func:`apply_condition` applies the generic drift knobs to signals before the front end.
Every user-caused problem raises :class:`fedtiny.errors.DataError` with a one-line message.
"""

from __future__ import annotations

from fedtiny.data.frontends import FRONT_ENDS, FrontEnd, make_front_end
from fedtiny.data.knobs import GENERIC_KNOBS, apply_condition, check_condition, default_condition
from fedtiny.data.recordings import Recordings, detect_format, load_background, load_recordings

__all__ = [
    "FRONT_ENDS",
    "GENERIC_KNOBS",
    "FrontEnd",
    "Recordings",
    "apply_condition",
    "check_condition",
    "default_condition",
    "detect_format",
    "load_background",
    "load_recordings",
    "make_front_end",
]
