"""The provider simulator: a deterministic day of matches served as the real APIs serve it."""

from pipeline.simulator.model import ManualClock, SimClock, World
from pipeline.simulator.server import make_app, run, serve

__all__ = ["ManualClock", "SimClock", "World", "make_app", "run", "serve"]
