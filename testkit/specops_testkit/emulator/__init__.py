"""A vLLM stand-in for the closed-loop test world: same command line, same HTTP API, same metrics.

``perf`` is the pure performance model (no clock, no I/O) that a discrete-event simulator can drive
in virtual time; ``workload`` drives it that way; ``args`` reads vLLM's command line and refuses what
the emulated release would refuse; ``metrics`` exports what that release exports; ``server`` runs the
model in real time behind vLLM's OpenAI-compatible endpoints (``python -m specops_testkit.emulator``).
"""
