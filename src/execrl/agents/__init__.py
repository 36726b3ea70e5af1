"""Training: tabular Q, SB3 / sb3-contrib algorithms, d3rlpy offline; checkpoints, export."""

from execrl._compat import import_legacy_gym_quietly

import_legacy_gym_quietly()  # before SB3 / d3rlpy, which import it when installed
