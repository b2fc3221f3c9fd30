"""The ``native`` fact source for Windows: osquery's tables without osquery.

Used when osqueryd is not running. Each module reads one kind of thing (accounts,
BitLocker, the firewall...) through PowerShell cmdlets printing JSON, secedit's export,
``dsregcmd`` or psutil, and offers parsers that take that output, tested on published
recordings. ``WindowsNativeSource`` ties them together.
"""

from agent.sources.windows.source import WindowsNativeSource

__all__ = ["WindowsNativeSource"]
