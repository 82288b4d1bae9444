"""firmware_sim owns the simulated sensor firmware: Modbus devices with believable signals and faults.

Public entry points: :func:`firmware_sim.scenario.load_scenario` and
:func:`firmware_sim.service.run_scenario` (an async context manager that serves a scenario's
devices on Modbus TCP ports and RTU pseudo-terminals), and :class:`firmware_sim.events.EventKind`
for faults injected on demand.
"""
