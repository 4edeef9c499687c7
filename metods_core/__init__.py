"""metods: meta-reinforcement learning with self-modifying networks."""

__version__ = "0.1.0"
