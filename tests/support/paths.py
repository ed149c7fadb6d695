"""Files of the repository the tests read."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"
VALID_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("invalid"))
MANIFESTS = ROOT / "manifests"
CHART = ROOT / "charts" / "specops"
CRD_SOURCE = ROOT / "crds" / "specops.dev_speculativeinferences.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SCENARIOS = ROOT / "scenarios"
SCENARIO_RESOURCES = SCENARIOS / "resources"
