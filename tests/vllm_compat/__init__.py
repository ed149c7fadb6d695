"""Checks SpecOps' vLLM dialect table and rendered commands against real vLLM releases.

``probe`` runs inside a vLLM environment (stdlib and vLLM only); ``bootstrap`` fills such an
environment with just the packages the probe's imports need; ``plan`` (SpecOps side) says what the
dialect table claims for a version and compares the probe's answers with it.  hack/vllm-compat.sh
drives the three; docs/vllm-compat.md has the results.
"""
