"""Cyborg's error envelope, checked the same way by every API test that expects a failure."""

from __future__ import annotations

import json


async def cyborg_fault(resp, status: int) -> str:
    """Assert that `resp` is `status` with exactly Cyborg's body, `{"error_message": "<JSON string with
    faultcode, faultstring, debuginfo>"}`; returns the faultstring for the caller to check."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert list(body) == ["error_message"]
    inner = json.loads(body["error_message"])
    assert inner == {"faultcode": "Client" if status < 500 else "Server", "faultstring": inner["faultstring"],
                     "debuginfo": None}
    assert isinstance(inner["faultstring"], str) and inner["faultstring"]
    return inner["faultstring"]
