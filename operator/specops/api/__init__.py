"""The SpecOps API types (source of truth for the CRD)."""
