"""start_in_thread for synchronous callers, and the admin API (what `serve` users have)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from adapters.ctct_simulator import FaultConfig, Simulator, SimulatorConfig
from tests.simulator.swagger import SwaggerSpec


def _call(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def test_threaded_simulator_and_admin_api(spec: SwaggerSpec) -> None:
    sim = Simulator.start_in_thread(SimulatorConfig(contacts=200, seed=4, lists=3, campaigns=1))
    try:
        admin = sim.admin_url
        status, tokens = _call("POST", f"{admin}/tokens")
        assert status == 200 and tokens["client_id"] == sim.client_id
        token = tokens["access_token"]
        status, body = _call("GET", f"{sim.base_url}/contacts?limit=5", token=token)
        assert status == 200
        spec.validate_response("GET", "/contacts", 200, body)

        status, state = _call("GET", f"{admin}/state")
        assert state["contacts"] == 200 and state["client_id"] == sim.client_id

        cid = body["contacts"][0]["contact_id"]
        assert _call("POST", f"{admin}/contacts/{cid}/unsubscribe", {"reason": "bye"})[0] == 204
        assert sim.call(lambda: sim.account.contact(cid).permission) == "unsubscribed"
        assert (
            _call("POST", f"{admin}/contacts/{cid}/edit", {"fields": {"first_name": "Zed"}})[0]
            == 204
        )
        list_id = sim.call(lambda: next(iter(sim.account.lists)))
        assert _call("PUT", f"{admin}/contacts/{cid}/lists/{list_id}")[0] == 204
        assert _call("DELETE", f"{admin}/contacts/{cid}/lists/{list_id}")[0] == 204
        assert _call("DELETE", f"{admin}/contacts/{cid}")[0] == 204
        status, bad = _call("POST", f"{admin}/contacts/{cid}/edit", {"fields": {"shoe_size": 9}})
        assert status == 400 and "shoe_size" in bad[0]["error_message"]

        status, stepped = _call("POST", f"{admin}/world/step", {"n": 25})
        assert status == 200 and len(stepped["events"]) > 0
        status, sent = _call("POST", f"{admin}/world/step", {"n": 2, "kinds": ["campaign"]})
        assert status == 200 and [e["kind"] for e in sent["events"]] == ["campaign"] * 2
        status, bad = _call("POST", f"{admin}/world/step", {"n": 1, "kinds": ["party"]})
        assert status == 400 and "kinds: unknown kind party" in bad[0]["error_message"]

        assert _call("PUT", f"{admin}/faults", {"error_rate": 1.0, "seed": 2})[0] == 200
        assert _call("GET", f"{sim.base_url}/contacts", token=token)[0] in (500, 503)
        sim.set_faults(FaultConfig())
        status, bad = _call("PUT", f"{admin}/faults", {"error_rate": 7})
        assert status == 400 and "error_rate" in bad[0]["error_message"]

        status, counts = _call("GET", f"{admin}/requests")
        assert counts["GET /v3/contacts"] == 2
        assert _call("DELETE", f"{admin}/requests")[0] == 204
        assert _call("GET", f"{admin}/requests")[1] == {"GET /__admin/requests": 1}

        status, quota = _call("GET", f"{admin}/quota")
        assert quota["limit"] == 10_000 and quota["resets_at"].endswith("T00:00:00.000Z")
        assert _call("POST", f"{admin}/clock/advance", {"seconds": 90_000})[0] == 200
        assert _call("GET", f"{sim.base_url}/contacts", token=token)[0] == 401  # token expired

        status, snap = _call("GET", f"{admin}/snapshot")
        assert len(snap["contacts"]) >= 200 and snap["campaigns"] and "tracking" in snap
        assert _call("POST", f"{admin}/activities/drain")[1] == {"finished": 0}

        status, seeded = _call("POST", f"{admin}/seed", {"contacts": 50, "seed": 1, "lists": 2})
        assert seeded == {"contacts": 50, "lists": 2}
        assert sim.call(lambda: len(sim.account.contacts)) == 50
    finally:
        sim.stop()
