"""Calibration of the order-book market to a LOBSTER day (``execrl calibrate``)."""
