"""Fault injection: seeded draws deciding, per request, which fault (if any) fires."""

from __future__ import annotations

import random
from typing import Literal

from adapters.ctct_simulator.config import FaultConfig

__all__ = ["FaultInjector", "FaultKind"]

FaultKind = Literal["none", "error500", "error503", "reset", "truncate"]


class FaultInjector:
    """Draws faults from a random stream seeded by the config, in request order."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(f"faults:{config.seed}")
        self.fired: dict[str, int] = {}

    def draw(self) -> FaultKind:
        """The fault for the next request (one draw per request, so runs replay exactly)."""
        cfg = self.config
        if not (cfg.error_rate or cfg.reset_rate or cfg.truncate_rate):
            return "none"
        r = self._rng.random()
        kind: FaultKind = "none"
        if r < cfg.error_rate:
            kind = "error500" if self._rng.random() < 0.5 else "error503"
        elif r < cfg.error_rate + cfg.reset_rate:
            kind = "reset"
        elif r < cfg.error_rate + cfg.reset_rate + cfg.truncate_rate:
            kind = "truncate"
        if kind != "none":
            self.fired[kind] = self.fired.get(kind, 0) + 1
        return kind

    def repeat_item(self) -> bool:
        """Whether the next contacts page should start by repeating this page's last item."""
        rate = self.config.repeat_rate
        if rate and self._rng.random() < rate:
            self.fired["repeat"] = self.fired.get("repeat", 0) + 1
            return True
        return False
