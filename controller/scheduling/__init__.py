"""Load-balanced task scheduling, kept free of sockets, threads and clocks.

- :mod:`.policies` — tiny pure functions that pick an engine among candidates, by name.
- :mod:`.dependencies` — ``after`` / ``follow`` dependencies and whether they are met.
"""
