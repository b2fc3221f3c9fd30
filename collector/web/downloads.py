"""Sending a report file: from an anonymous temporary file, a block at a time.

A fleet report runs to gigabytes (GOALS.md: 50,000 hosts); held in memory for a download it
would cost the collector as much. ``collector.reporting.issue_report_spooled`` writes it to
an anonymous temporary file, and the response reads it from there. The file has no name on
disk, so nothing is left behind however the download ends: sent, abandoned by the client,
or never started (closing the file, or dropping it, frees it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import IO

from starlette.responses import StreamingResponse

from collector.reporting import SpooledReport

__all__ = ["spooled_response"]

_BLOCK = 1 << 20


def _blocks(file: IO[bytes]) -> Iterator[bytes]:
    try:
        while block := file.read(_BLOCK):
            yield block
    finally:
        file.close()


def spooled_response(
    spooled: SpooledReport, media_type: str, headers: Mapping[str, str]
) -> StreamingResponse:
    """The response sending ``spooled``, with ``headers`` and its length."""
    sized = {**headers, "Content-Length": str(spooled.size)}
    return StreamingResponse(_blocks(spooled.file), media_type=media_type, headers=sized)
