"""execrl: learned order execution.

A parent order is executed as child orders by a policy, inside a simulated (or replayed, or
live) market, under risk limits; policies are compared with paired statistics on common
random numbers. See ``shared/DESIGN.md`` for how the layers fit.
"""

__version__ = "0.1.0"
