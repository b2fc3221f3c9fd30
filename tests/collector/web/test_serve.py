"""The web app runs inside ``posture-collector serve`` and stops with it."""

from __future__ import annotations

from typing import Any

import httpx


def test_serve_answers_http_beside_grpc_and_stops_cleanly(web_collector: Any) -> None:
    assert web_collector.web_url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{web_collector.web_url}/api/v1/health").json() == {"status": "ok"}
    document = httpx.get(f"{web_collector.web_url}/api/v1/openapi.json").json()
    assert document["info"]["title"] == "Posture collector API"
    web_collector.stop()
    assert web_collector.process.returncode == 0
