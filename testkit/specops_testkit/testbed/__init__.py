"""The closed-loop test world: a real control plane and Prometheus, emulated GPU pods, load.

Nothing here is imported by the operator; tests, benchmarks and the demo use it.
"""
