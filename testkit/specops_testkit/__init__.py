"""The SpecOps test kit: the vLLM emulator, the local test world and the simulator.

A distribution of its own (``specops-testkit``): the operator image never contains it.
"""
