"""A faithful Constant Contact v3 API simulator (aiohttp.web), for tests, the demo and
benchmarks: OAuth, contacts, lists, bulk activities, campaigns and tracking, rate limits, a
living account and fault injection. See docs/simulator.md."""

from adapters.ctct_simulator.auth import Tokens
from adapters.ctct_simulator.clock import SimClock
from adapters.ctct_simulator.config import FaultConfig, SimulatorConfig
from adapters.ctct_simulator.server import Simulator, run_simulator

__all__ = ["FaultConfig", "SimClock", "Simulator", "SimulatorConfig", "Tokens", "run_simulator"]
