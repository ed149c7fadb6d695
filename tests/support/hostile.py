"""Hostile input.  Hypothesis strategies for SpeculativeInference documents as a user applies them:
a valid-ish resource (``tests.support.strategies.resources`` or a varied shipped example) with zero
to three of its fields set to something hostile (a wrong type, an out-of-range number, a bad
duration, an unknown model, a huge or unicode string, a label-breaking name), deleted, or joined
by an unknown field; now and then the whole document is garbage.  ``refusal`` says which stage
refuses one.  ``HOSTILE_LABEL_VALUES``: strings that try to break out of a PromQL label matcher."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

from specops.api.catalog import GPU_TYPES, MODELS
from specops.api.findings import Finding
from specops.checks.validation import ResourceError, check_resource, load_resource
from tests.support.paths import EXAMPLES, VALID_EXAMPLES
from tests.support.strategies import resources

Path = tuple[str | int, ...]

# ----------------------------------------------------------------------------------- values

# Label values (a namespace, a resource name) that try to break out of a PromQL string literal or
# regex matcher: quotes, backslashes, braces, regex syntax, newlines, NUL.
HOSTILE_LABEL_VALUES = [
    '"} or vector(1) #',
    '"} or vector(1) # ',
    'a"b',
    "a\\b",
    "a\\",
    "\\",
    '\\"',
    "a\nb",
    "\n",
    "a\rb\tc",
    "{{}}",
    "}",
    '{namespace=~".+"}',
    ".*",
    ".+",
    "a|b",
    "(a)",
    "[a-z]+",
    "^$",
    "a?b*c+",
    "x\\d",
    "ünï©ødé 🙂",
    "`",
    "'",
    "$(rm)",
    "# comment",
    "a\x00b",
    "sum(x)",
]

TRICKY_STRINGS = [
    "", " ", "a b", "-a", "a-", "A", "a_b", "a.b", "x" * 58, "x" * 59, "x" * 63, "x" * 64, "x" * 254,
    "a/b", "a/b/c", "example.com/x", "/x", "x/", "Example.com/x", "kubernetes.io/x", "..", "../etc",
    "\n", "a\nb", "5m\n", '"', "'", "\\", '"} or vector(1) #', '{namespace=~".+"}', ".*", "a|b",
    "{{ .Values }}", "$(rm -rf /)", "; rm -rf /", "\x00", "a\x00b", "\t", "ü", "🙂", "Ｈ100-80GB",
    "\u202e", "café", "0", "-1", "1e400", "NaN", "true", "null", "None", "~", "*", "%", "#",
    "--model", "--speculative-config={}", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
]  # fmt: skip
NUMBERS: list[Any] = [
    0, 1, -1, 2, 7, 16, 17, 64, 65, 65535, 65536, 2**31 - 1, 2**31, 2**53, 2**63, -(2**63), 10**30, 10**400,
    0.0, -0.0, 0.5, 0.99, 1.0, 1.5, 1e-300, 1e308, -1e308, math.inf, -math.inf, math.nan,
]  # fmt: skip

tricky_str = st.sampled_from(TRICKY_STRINGS)
huge_str = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["a", "-", "ü", "9", "a."]), st.integers(64, 70_000)
)
any_str = st.one_of(tricky_str, st.text(max_size=40), huge_str)
numbers = st.one_of(st.sampled_from(NUMBERS), st.integers(), st.floats())
scalars = st.one_of(st.none(), st.booleans(), numbers, any_str)
wrong_types = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)

dns_names = st.from_regex(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", fullmatch=True)
names = st.one_of(dns_names, tricky_str, st.text(max_size=70))
label_keys = st.one_of(
    st.sampled_from(["team", "env", "example.com/tier", "a.b/c_d", "x" * 63, "p." * 10 + "io/n"]),
    tricky_str,
    st.text(max_size=20),
)
label_values = st.one_of(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?", fullmatch=True), any_str
)
label_maps = st.dictionaries(label_keys, label_values, max_size=3)
annotation_maps = st.dictionaries(label_keys, any_str, max_size=3)
durations = st.one_of(
    st.sampled_from(
        ["1s", "30s", "5m", "1h30m", "500ms", "10m0s", "1.5m", "0s", "0.5s", "0ms", "99999h", "1d", "5",
         "-5m", "5m\n", " 5m", "1e3s", "5M", "9" * 30 + "h", "1h1h", "", "s"]
    ),
    st.from_regex(r"([0-9]{1,4}(\.[0-9]{1,2})?(ms|s|m|h)){1,3}", fullmatch=True),
)  # fmt: skip
quantities = st.sampled_from(
    ["1", "8", "500m", "0.5", "64Gi", "16Gi", "1.5Gi", "1e3", "0", ".5", "1.", "+1", "1e-3", "-1",
     "1 Gi", "lots", "1Gb", "", "9" * 30, "1e400", "Infinity", "1Ki ", "0x10", "1_000"]
)  # fmt: skip
versions = st.sampled_from(
    ["0.6.2", "0.8.3", "0.10.1", "0.32.0", "v0.32.0", "0.8.3rc1", "0.8.3-dev", "1.0", "999.999.999",
     "0.0.0", "0.8", "abc", "", "0.32.0\n", "0.32.0 ", "v", "0.32.0+cu128"]
)  # fmt: skip
models = st.one_of(
    st.sampled_from(sorted(MODELS)),
    st.sampled_from(
        ["acme/llama-9000", "../../etc/passwd", "/models/local", "a b", "meta-llama/Llama-3.1-8B-Instruct\n"]
    ),
    any_str,
)
parameter_counts = st.sampled_from(
    ["70.6B", "8B", "500M", "1.2B", " 8 b ", "0", "-1", "8X", "1e400", "1" + "0" * 400 + "B",
     "999999999999999T", 10**400, 10**16, -5, 0, 3.5, True, 8_030_000_000]
)  # fmt: skip
architectures = st.one_of(
    st.fixed_dictionaries(
        {"layers": st.integers(1, 200), "kvHeads": st.integers(1, 64), "headDim": st.sampled_from([64, 128])}
    ),
    st.fixed_dictionaries({"layers": numbers, "kvHeads": numbers, "headDim": numbers}),
)
env_sources = st.one_of(
    st.just({"secretKeyRef": {"name": "hf", "key": "token"}}),
    st.just({"fieldRef": {"fieldPath": "metadata.name"}}),
    st.just({"fieldRef": {"fieldPath": "metadata.labels['team']"}}),
    st.just({"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}),
    st.just({"configMapKeyRef": {"name": "cfg", "key": "level"}}),
    st.just({"secretKeyRef": {"name": "hf", "key": "token"}, "fieldRef": {"fieldPath": "metadata.name"}}),
    st.just({"fieldRef": {"fieldPath": "spec.containers"}}),
    st.just({"resourceFieldRef": {"resource": "limits.gpu"}}),
    st.fixed_dictionaries({"secretKeyRef": st.fixed_dictionaries({"name": names, "key": any_str})}),
    st.dictionaries(st.sampled_from(["secretKeyRef", "bogus", "fieldRef"]), wrong_types, max_size=2),
)
env_vars = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["VLLM_LOGGING_LEVEL", "HF_HUB_OFFLINE", "_X", "a.b-c"]), names)},
    optional={"value": st.one_of(any_str, wrong_types), "valueFrom": env_sources},
)
tolerations = st.one_of(
    st.just({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
    st.just(
        {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 30}
    ),
    st.just({"operator": "Exists"}),
    st.fixed_dictionaries(
        {},
        optional={
            "key": st.one_of(label_keys, wrong_types),
            "operator": st.one_of(st.sampled_from(["Exists", "Equal", "", "In", "exists"]), wrong_types),
            "value": st.one_of(label_values, wrong_types),
            "effect": st.one_of(
                st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute", "", "Never"]), wrong_types
            ),
            "tolerationSeconds": st.one_of(st.integers(-10, 10**6), wrong_types),
        },
    ),
    wrong_types,
)
_NODE_AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]}
                    ]
                }
            ]
        }
    }
}
_POD_ANTI_AFFINITY = {
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 50,
                "podAffinityTerm": {
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}},
                    "topologyKey": "kubernetes.io/hostname",
                },
            }
        ]
    }
}
# Deeper affinity garbage is the apiserver's to refuse: tests/integration/test_security.py.
affinities = st.one_of(
    st.sampled_from([_NODE_AFFINITY, _POD_ANTI_AFFINITY, {**_NODE_AFFINITY, **_POD_ANTI_AFFINITY}, {}]),
    st.dictionaries(
        st.sampled_from(["nodeAffinity", "podAffinity", "bogus"]), wrong_types, min_size=1, max_size=2
    ),
    wrong_types,
)
model_caches = st.one_of(
    st.fixed_dictionaries({"persistentVolumeClaim": names}, optional={"readOnly": st.booleans()}),
    st.fixed_dictionaries(
        {"hostPath": st.one_of(st.sampled_from(["/mnt/models", "relative/dir", "/a/../b", "/"]), any_str)}
    ),
    st.fixed_dictionaries({"emptyDir": st.one_of(st.booleans(), wrong_types)}),
    st.dictionaries(
        st.sampled_from(["persistentVolumeClaim", "hostPath", "emptyDir", "readOnly"]),
        wrong_types,
        max_size=3,
    ),
)
secret_refs = st.fixed_dictionaries(
    {"name": names}, optional={"key": st.one_of(st.sampled_from(["token", "HF_TOKEN", "a.b"]), any_str)}
)
urls = st.sampled_from(
    ["http://prometheus:9090", "", "not a url", "http://[::1", "file:///etc/passwd", 'http://x/?q="}']
)
string_lists = st.lists(
    st.one_of(
        tricky_str,
        st.sampled_from(
            ["--enable-prefix-caching", "--max-num-seqs=64", "--model=x", "--port", "--speculative-config"]
        ),
    ),
    max_size=4,
)


def enum(*values: str) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), st.sampled_from([v.upper() for v in values] + ["", " "]))


# Every field a user sets, with values around and beyond what it takes; any field may also get
# wrong_types (see mutation below).
FIELDS: dict[Path, st.SearchStrategy[Any]] = {
    ("metadata", "name"): names,
    ("metadata", "namespace"): names,
    ("metadata", "labels"): label_maps,
    ("metadata", "annotations"): annotation_maps,
    ("spec", "replicas"): numbers,
    ("spec", "vllm", "image"): st.one_of(st.sampled_from(["vllm/vllm-openai:v0.32.0", "reg.example.com:5000/vllm@sha256:" + "a" * 64]), any_str),
    ("spec", "vllm", "version"): versions,
    ("spec", "vllm", "port"): numbers,
    ("spec", "vllm", "servedModelName"): any_str,
    ("spec", "vllm", "extraArgs"): string_lists,
    ("spec", "vllm", "env"): st.lists(env_vars, max_size=3),
    ("spec", "vllm", "env", 0): env_vars,
    ("spec", "vllm", "startupTimeout"): durations,
    ("spec", "target", "model"): models,
    ("spec", "target", "revision"): any_str,
    ("spec", "target", "quantization"): enum("none", "fp8", "int8", "awq", "gptq", "bitsandbytes"),
    ("spec", "target", "dtype"): enum("auto", "bfloat16", "float16", "float32"),
    ("spec", "target", "kvCacheDtype"): enum("auto", "fp8"),
    ("spec", "target", "tensorParallelSize"): numbers,
    ("spec", "target", "maxModelLen"): numbers,
    ("spec", "target", "parameters"): parameter_counts,
    ("spec", "target", "architecture"): architectures,
    ("spec", "target", "tokenizer"): any_str,
    ("spec", "speculation", "method"): enum("draft_model", "ngram", "eagle", "eagle3", "mtp", "medusa", "suffix"),
    ("spec", "speculation", "numSpeculativeTokens"): numbers,
    ("spec", "speculation", "draft", "model"): models,
    ("spec", "speculation", "draft", "revision"): any_str,
    ("spec", "speculation", "draft", "quantization"): enum("none", "fp8", "awq", "gptq"),
    ("spec", "speculation", "draft", "tensorParallelSize"): numbers,
    ("spec", "speculation", "draft", "parameters"): parameter_counts,
    ("spec", "speculation", "draft", "architecture"): architectures,
    ("spec", "speculation", "draft", "tokenizer"): any_str,
    ("spec", "speculation", "ngram"): st.fixed_dictionaries({"promptLookupMin": numbers, "promptLookupMax": numbers}),
    ("spec", "speculation", "tokensPerBatchSize"): st.lists(
        st.fixed_dictionaries({"minBatchSize": numbers, "maxBatchSize": numbers, "numSpeculativeTokens": numbers}), max_size=3
    ),
    ("spec", "resources", "gpusPerReplica"): numbers,
    ("spec", "resources", "gpuResourceName"): st.one_of(st.sampled_from(["nvidia.com/gpu", "amd.com/gpu", "gpu", "kubernetes.io/gpu", "requests.x/gpu"]), label_keys),
    ("spec", "resources", "gpuType"): st.one_of(st.sampled_from(GPU_TYPES), tricky_str),
    ("spec", "resources", "gpuMemoryGiB"): numbers,
    ("spec", "resources", "gpuMemoryUtilization"): numbers,
    ("spec", "resources", "cpu"): quantities,
    ("spec", "resources", "memory"): quantities,
    ("spec", "resources", "shmSize"): quantities,
    ("spec", "resources", "nodeSelector"): label_maps,
    ("spec", "resources", "tolerations"): st.lists(tolerations, max_size=3),
    ("spec", "resources", "affinity"): affinities,
    ("spec", "policy", "mode"): enum("Auto", "Speculative", "Baseline"),
    ("spec", "policy", "prometheusUrl"): urls,
    ("spec", "policy", "interval"): durations,
    ("spec", "policy", "window"): durations,
    ("spec", "policy", "minAcceptanceRate"): numbers,
    ("spec", "policy", "breakEvenAcceptanceRate"): numbers,
    ("spec", "policy", "maxP99TpotRegression"): numbers,
    ("spec", "policy", "maxTailGapWidening"): numbers,
    ("spec", "policy", "minRequestRate"): numbers,
    ("spec", "policy", "maxWaitingPerReplica"): numbers,
    ("spec", "policy", "consecutiveBreaches"): numbers,
    ("spec", "policy", "consecutiveRecoveries"): numbers,
    ("spec", "policy", "consecutiveErrors"): numbers,
    ("spec", "policy", "cooldown"): durations,
    ("spec", "policy", "onMetricsUnavailable"): enum("Hold", "Baseline"),
    ("spec", "policy", "probe", "replicas"): numbers,
    ("spec", "policy", "probe", "duration"): durations,
    ("spec", "modelCache"): model_caches,
    ("spec", "hfTokenSecret"): secret_refs,
    ("spec", "hfTokenSecret", "key"): any_str,
    ("spec", "podLabels"): label_maps,
    ("spec", "podAnnotations"): annotation_maps,
    ("spec", "serviceAccountName"): names,
    ("spec", "priorityClassName"): names,
    ("spec", "imagePullSecrets"): st.lists(names, max_size=2),
}  # fmt: skip
PATHS = sorted(FIELDS, key=lambda p: tuple(map(str, p)))
REQUIRED: list[Path] = [("spec",), ("metadata",), ("spec", "target"), ("spec", "speculation"), ("spec", "resources"),
                        ("spec", "target", "model"), ("spec", "speculation", "method"), ("metadata", "name")]  # fmt: skip


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out


def _set(doc: dict[str, Any], path: Path, value: Any) -> None:
    node: Any = doc
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(node, dict):
            child = node.get(part)
            if not isinstance(child, dict | list) or (isinstance(nxt, int) != isinstance(child, list)):
                child = [] if isinstance(nxt, int) else {}
                node[part] = child
            node = child
        elif isinstance(node, list):
            assert isinstance(part, int)
            while len(node) <= part:
                node.append({})
            node = node[part]
    last = path[-1]
    if isinstance(node, list):
        assert isinstance(last, int)
        while len(node) <= last:
            node.append(None)
    node[last] = value


def _delete(doc: dict[str, Any], path: Path) -> bool:
    node: Any = doc
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        return True
    return False


@dataclass
class Hostile:
    """A generated document, the valid-ish resource it came from, and the fields it changed."""

    doc: Any
    base: dict[str, Any]
    changed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"changed {self.changed or 'nothing'}"


_EXAMPLE_DOCS = [yaml.safe_load((EXAMPLES / name).read_text()) for name in VALID_EXAMPLES]
_valid_label_maps = st.dictionaries(
    st.from_regex(
        r"([a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?",
        fullmatch=True,
    ),
    st.from_regex(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,20}[A-Za-z0-9])?)?", fullmatch=True),
    max_size=3,
)


@st.composite
def valid_resources(draw: st.DrawFn) -> dict[str, Any]:
    """A shipped example with the fields that do not touch the budget varied within what they take."""
    doc = copy.deepcopy(draw(st.sampled_from(_EXAMPLE_DOCS)))
    doc["metadata"]["name"] = draw(dns_names.filter(lambda n: len(n) <= 58))
    spec = doc["spec"]
    spec["replicas"] = draw(st.integers(0, 8))
    spec["vllm"]["port"] = draw(st.integers(1, 65535))
    spec["podLabels"] = draw(
        _valid_label_maps.filter(
            lambda m: not any(k.startswith("app.kubernetes.io/") or k == "specops.dev/pool" for k in m)
        )
    )
    spec["podAnnotations"] = draw(_valid_label_maps)
    res = spec["resources"]
    res["nodeSelector"] = draw(_valid_label_maps)
    res["tolerations"] = draw(st.lists(st.sampled_from([
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoExecute", "tolerationSeconds": 30},
        {"operator": "Exists"}]), max_size=2))  # fmt: skip
    if draw(st.booleans()):
        res["affinity"] = draw(st.sampled_from([_NODE_AFFINITY, _POD_ANTI_AFFINITY]))
    for knob, values in (
        ("cpu", ["8", "500m", "1.5"]),
        ("memory", ["64Gi", "1e9", "512Mi"]),
        ("shmSize", ["1Gi", "16Gi"]),
    ):
        if draw(st.booleans()):
            res[knob] = draw(st.sampled_from(values))
    if draw(st.booleans()):
        spec["hfTokenSecret"] = draw(
            st.fixed_dictionaries(
                {"name": dns_names}, optional={"key": st.sampled_from(["token", "HF_TOKEN", "a.b"])}
            )
        )
    if draw(st.booleans()):
        spec["modelCache"] = draw(
            st.sampled_from(
                [
                    {"persistentVolumeClaim": "models"},
                    {"hostPath": "/mnt/models", "readOnly": True},
                    {"emptyDir": True},
                ]
            )
        )
    if draw(st.booleans()):
        spec["vllm"]["env"] = [
            {"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
    for knob in ("serviceAccountName", "priorityClassName"):
        if draw(st.booleans()):
            spec[knob] = draw(dns_names)
    spec.setdefault("policy", {})["mode"] = draw(st.sampled_from(["Auto", "Speculative", "Baseline"]))
    return doc


@st.composite
def hostile_resources(draw: st.DrawFn, max_mutations: int = 3) -> Hostile:
    base = draw(st.one_of(valid_resources(), resources()))
    doc = copy.deepcopy(base)
    if draw(st.integers(0, 49)) == 25:  # now and then, not a resource at all (not 0: a favourite)
        garbage = draw(
            st.one_of(
                wrong_types,
                st.just({"apiVersion": "specops.dev/v1", "kind": "SpeculativeInference", "spec": {}}),
                st.just({**base, "kind": "Deployment"}),
                st.just({**base, "spec": draw(wrong_types)}),
                st.just({**base, "metadata": draw(wrong_types)}),
            )
        )
        return Hostile(garbage, base, ["(document)"])
    changed: list[str] = []
    for _ in range(draw(st.integers(0, max_mutations))):
        op = draw(st.sampled_from(["set", "set", "set", "set", "wrong_type", "delete", "unknown"]))
        if op == "delete":
            path = draw(st.sampled_from(REQUIRED + PATHS))
            if _delete(doc, path):
                changed.append(dotted(path))
            continue
        if op == "unknown":
            parent = draw(
                st.sampled_from([(), ("spec",), ("spec", "vllm"), ("spec", "target"), ("spec", "policy")])
            )
            key = draw(st.sampled_from(["targt", "replica", "hfToken", "status", "x-extra", "Replicas"]))
            _set(doc, (*parent, key), draw(scalars))
            changed.append(dotted((*parent, key)))
            continue
        path = draw(st.sampled_from(PATHS))
        value = draw(wrong_types if op == "wrong_type" else FIELDS[path])
        _set(doc, path, value)
        changed.append(dotted(path))
    return Hostile(doc, base, changed)


def refusal(h: Hostile) -> tuple[str, list[Finding]]:
    """('accepted', []) or the stage that refused and its findings.  Status is not the user's:
    the apiserver drops it on create (the status subresource), and so does the review."""
    doc = {k: v for k, v in h.doc.items() if k != "status"} if isinstance(h.doc, dict) else h.doc
    try:
        si = load_resource(doc)
    except ResourceError as exc:
        return "refused_schema", exc.findings
    report = check_resource(si)
    return ("accepted", []) if report.ok else ("refused_checks", report.errors)
