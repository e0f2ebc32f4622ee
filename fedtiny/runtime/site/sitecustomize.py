"""Python's start-up hook for the processes of `fedtiny run`'s private SuperLink (this folder is first on their
PYTHONPATH, set by :mod:`fedtiny.runtime.superlink`): with ``FEDTINY_NO_TENSORFLOW=1``, TensorFlow is blocked.

Flower's simulation process imports TensorFlow when it is installed (``flwr.simulation.ray_transport.utils``)
although nothing there uses it: about 450 MB and seconds of start-up, and on a loaded machine more than the
30 s a started task has to send its first heartbeat (Flower then relaunches it, again and again). The driver
has done all the work that needs TensorFlow before the SuperLink starts. Ray workers inherit the folder from
the simulation process's ``sys.path`` (their setup hook blocks TensorFlow as well).
"""

import os
import sys

if os.environ.get("FEDTINY_NO_TENSORFLOW") == "1":
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
