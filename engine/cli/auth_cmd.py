"""``ccsync auth login``: authorise ccsync to reach a Constant Contact account.

By default the authorization-code flow with PKCE: open the printed URL, approve, and paste
back the URL you were redirected to (or just its ``code``). ``--device`` uses the device flow
instead (for machines without a browser). Tokens go to the configured ``ctct.token_file``
(mode 0600) and are never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from adapters.constant_contact.login import login_device, login_pkce
from adapters.constant_contact.oauth import DeviceGrant
from engine.bootstrap import ctct_config
from engine.cli._common import add_config_arg, settings_from_args

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("auth", help="authorise access to Constant Contact")
    authsub = p.add_subparsers(dest="auth_command", metavar="ACTION", required=True)
    login = authsub.add_parser("login", help="obtain and store an access/refresh token pair")
    add_config_arg(login)
    login.add_argument(
        "--device", action="store_true", help="use the device flow (no browser on this machine)"
    )
    login.set_defaults(handler=_login)


async def _ask(url: str) -> str:
    print("Open this URL in a browser and approve access to your Constant Contact account:")
    print(f"\n  {url}\n")
    print("Then paste the URL you were redirected to (or just its code) and press Enter:")
    sys.stdout.flush()
    line: str = await asyncio.to_thread(sys.stdin.readline)
    return line.strip()


def _show(grant: DeviceGrant) -> None:
    where = grant.verification_uri_complete or grant.verification_uri or "(no URL given)"
    print(f"On any device, open {where}")
    print(f"and enter the code {grant.user_code}. Waiting for approval...")
    sys.stdout.flush()


async def _login(args: argparse.Namespace) -> int:
    cfg = ctct_config(settings_from_args(args))
    tokens = await (login_device(cfg, _show) if args.device else login_pkce(cfg, _ask))
    expires = tokens.expires_at.isoformat() if tokens.expires_at else "unknown"
    refresh = "with" if tokens.refresh_token else "WITHOUT (add the offline_access scope)"
    print(
        f"Saved an access token (expires {expires}) {refresh} a refresh token to {cfg.token_file}"
    )
    return 0
