"""Training: tabular Q, SB3 / sb3-contrib algorithms, d3rlpy offline; checkpoints, export."""
