"""Market data types and features shared by simulation, replay and live."""
