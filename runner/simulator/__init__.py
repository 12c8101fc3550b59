"""A provider simulator: Replicate, Black Forest Labs and the DeerAPI/CometAPI aggregators on one
local HTTP server, so the runner and its tests can run without any account.

`SimConfig` sets timings, limits and faults; `Simulator` holds the state; `create_app` builds
the ASGI app; `serve` and `running_in_thread` put it on a socket.
"""

from runner.simulator.app import create_app
from runner.simulator.config import FaultSpec, SimConfig
from runner.simulator.server import SimHandle, running_in_thread, serve
from runner.simulator.state import Simulator

__all__ = [
    "FaultSpec",
    "SimConfig",
    "SimHandle",
    "Simulator",
    "create_app",
    "running_in_thread",
    "serve",
]
