"""execrl as a running service: the policy registry, access control, streams and metrics."""
