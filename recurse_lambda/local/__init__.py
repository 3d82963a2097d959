"""The local simulator: a fake context, virtual and wall clocks, and an in-process Lambda that breaks things."""

from ..errors import publish_exceptions as _publish_exceptions
from ._clocks import CpuClock, InvocationKilled, SimClock, VirtualClock, WallClock
from ._context import FakeContext
from ._faults import POINTS, FaultPlan, InjectedError, SimulatedCrash
from ._report import ChainReport, InvocationRow
from ._sim_adapters import Commit, MemorySpillStore
from ._simulator import Simulator
from .embedded_s3 import EmbeddedS3, MissingExtraError
from .juicefs import JuiceFSError, JuiceFSGateway

__all__ = [
    "POINTS",
    "ChainReport",
    "Commit",
    "CpuClock",
    "EmbeddedS3",
    "FakeContext",
    "FaultPlan",
    "InjectedError",
    "InvocationKilled",
    "InvocationRow",
    "JuiceFSError",
    "JuiceFSGateway",
    "MemorySpillStore",
    "MissingExtraError",
    "SimClock",
    "SimulatedCrash",
    "Simulator",
    "VirtualClock",
    "WallClock",
]

_publish_exceptions(__name__, __all__, globals())  # recurse_lambda.local.InjectedError, not ._faults
