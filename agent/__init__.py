"""The Posture agent: collects fact tables on this machine and streams them to a collector.

``__version__`` is the package's version as ``pyproject.toml`` declares it (a test keeps
them equal). It is written here rather than read with ``importlib.metadata``, which would
load the email, csv and zipfile modules into every agent for one string: about 1 MB of the
daemon's memory and 20 ms of each start.
"""

__version__ = "0.1.0"
