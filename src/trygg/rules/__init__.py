"""The rule engine: events and a clock in, signals out. Pure: no I/O, no wall clock."""
