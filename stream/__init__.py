"""Kairos stream worker: topology, state, policy, push emission."""
