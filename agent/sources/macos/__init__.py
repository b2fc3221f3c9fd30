"""The ``native`` fact source for macOS: osquery's tables (and a few of Posture's) without
osquery.

Used when osqueryd is not running. Each module reads one kind of thing (FileVault, SIP
and the firewall, MDM enrollment, updates, preferences...) from Apple's tools and plists,
and offers parsers tested on published recordings. ``MacosNativeSource`` ties them
together.
"""

from agent.sources.macos.source import MacosNativeSource

__all__ = ["MacosNativeSource"]
