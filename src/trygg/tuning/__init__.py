"""The rule specialist's tools beside the pure engine (trygg.rules).

Everything here does I/O that the engine must not: it reads the database
(back-test, catalogue versions and their district overlays), reads event
files and prints (replay), runs worker processes (the sharded back-test and
replay), and is driven by the ``trygg rules`` commands (``trygg.tuning.cli``).
The engine it drives is ``trygg.rules``: events and a clock in, signals out.
"""
