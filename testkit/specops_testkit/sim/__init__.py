"""Faster-than-real-time simulation of the closed loop (benchmarks): the emulator's performance
model serving a scenario, the operator's pure policy and rollout code in the loop."""
