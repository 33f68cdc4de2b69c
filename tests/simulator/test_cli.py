"""`ccsync simulator serve` starts, prints what a client needs, and answers spec-valid bodies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from tests.simulator.swagger import SwaggerSpec


def test_serve_prints_credentials_and_answers(spec: SwaggerSpec) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "simulator", "serve", "--port", "0",
         "--contacts", "10000", "--seed", "5", "--faults", "repeat_rate=0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        info: dict[str, str] = {}
        for line in proc.stdout:  # blocks until the server has printed its banner
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
            if key == "contacts":
                break
        assert info["base_url"].startswith("http://127.0.0.1:")
        assert info["token_url"].endswith("/oauth2/default/v1/token")
        assert info["client_id"] and info["client_secret"] and info["refresh_token"]
        req = urllib.request.Request(
            f"{info['base_url']}/contacts?limit=500&include=list_memberships"
        )
        req.add_header("Authorization", f"Bearer {info['access_token']}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        assert len(body["contacts"]) == 500 and body["_links"]["next"]["href"].startswith(
            "/v3/contacts?cursor="
        )
        spec.validate_response("GET", "/contacts", 200, body)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def test_bad_faults_option_is_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "simulator", "serve", "--faults", "error_rate=lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--faults" in done.stderr and "error_rate" in done.stderr
