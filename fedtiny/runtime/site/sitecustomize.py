"""Python's start-up hook for the processes of `fedtiny run`'s private SuperLink (this folder is first on their
PYTHONPATH, set by :mod:`fedtiny.runtime.superlink`): with ``FEDTINY_NO_TENSORFLOW=1``, TensorFlow is blocked
in Flower's simulation process (``flwr-simulation``; the other processes are left as they are).

Flower's simulation process imports TensorFlow when it is installed (``flwr.simulation.ray_transport.utils``)
although nothing there uses it: about 450 MB and seconds of start-up, and on a loaded machine more than the
30 s a started task has to send its first heartbeat (Flower then relaunches it, again and again). The driver
has done all the work that needs TensorFlow before the SuperLink starts. Ray workers have their own setup hook
(:mod:`fedtiny.runtime.ray_env`).
"""

import os
import sys

if os.environ.get("FEDTINY_NO_TENSORFLOW") == "1" and os.path.basename(sys.argv[0]) == "flwr-simulation":
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
