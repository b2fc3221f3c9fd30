"""The ``native`` fact source for Linux: osquery's tables read straight from the system.

Used when osqueryd is not running. Each module reads one kind of thing (accounts, packages,
storage...) and offers parsers that take text, tested on recorded inputs, next to the
collector that feeds them this machine's files. ``LinuxNativeSource`` ties them together.
"""

from agent.sources.linux.source import LinuxNativeSource

__all__ = ["LinuxNativeSource"]
