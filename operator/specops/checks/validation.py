"""Every check beyond the CRD schema, in one pure function the CLI and the webhook share.

``load_resource`` turns untrusted YAML/JSON into a typed resource or a list of field errors;
``check_resource`` adds the version, argument, name and budget checks to a typed one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_snake

from specops.api.findings import Finding, HasFindings, error, warning
from specops.api.v1alpha1 import (
    API_VERSION,
    DRAFT_SAMPLE_METHOD_KEY,
    KIND,
    MIN_SCRAPES_FOR_RATE,
    MIN_SCRAPES_PER_WINDOW,
    Method,
    Mode,
    Quantization,
    RolloutStrategy,
    SpeculativeInference,
    TokensPerBatchSizeMode,
    parse_duration,
)
from specops.render.manifests import RESERVED_LABELS
from specops.vllm.budget import BudgetPlan, plan_budget
from specops.vllm.dialect import (
    BITSANDBYTES_REMOVED,
    CONFIG_KEY_GATES,
    DRAFT_TP_MUST_MATCH_SINCE,
    MANAGED_FLAGS,
    MIN_SUPPORTED,
    Dialect,
    dialect_for,
    format_version,
    method_gate,
    parse_version,
    sleep_mode_gate,
    speculative_config_keys,
)
from specops.vllm.speculation_table import VLLM_TABLE_KEY, derive_for_spec

# Pools are named <name>-spec / <name>-base and the Service <name>: DNS-1035 labels of <= 63.
MAX_NAME_LENGTH = 58
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# What the apiserver checks on the objects SpecOps renders (k8s.io/apimachinery validation; where
# Kubernetes relaxed a rule later, the older, stricter one): checked here, so a resource is refused
# at admission naming its own field instead of failing at every apply.
INT32_MAX = 2**31 - 1
MAX_STARTUP_SECONDS = 7 * 86_400
MIN_WINDOW_SECONDS = 1.0
MAX_WINDOW_SECONDS = 7 * 86_400
MAX_ANNOTATION_BYTES = 256 * 1024
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", re.ASCII)
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", re.ASCII)
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*", re.ASCII)
_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+", re.ASCII)
_QUANTITY = re.compile(
    r"\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][-+]?[0-9]{1,2})?", re.ASCII
)
_FIELD_PATHS = (
    "metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.annotations",
    "spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.podIP", "status.podIPs",
)  # fmt: skip
_SUBSCRIPTED_FIELD_PATH = re.compile(r"metadata\.(labels|annotations)\['[^']*'\]")
_CPU_DIVISORS = ("1m", "1")
_BYTE_DIVISORS = ("1", "1k", "1M", "1G", "1T", "1P", "1E", "1Ki", "1Mi", "1Gi", "1Ti", "1Pi", "1Ei")
_ENV_RESOURCES = {
    f"{kind}.{res}": _CPU_DIVISORS if res == "cpu" else _BYTE_DIVISORS
    for kind in ("limits", "requests")
    for res in ("cpu", "memory", "ephemeral-storage")
}
_TOLERATION_FIELDS: dict[str, type] = {
    "key": str, "operator": str, "value": str, "effect": str, "tolerationSeconds": int,
}  # fmt: skip
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class ResourceError(ValueError):
    """Input that cannot be read as a SpeculativeInference; each finding names a field."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        super().__init__("; ".join(str(f) for f in findings))


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in ("int", "str", "literal[...]"):
            continue
        else:
            out += ("." if out else "") + part
    return out


def _fix_hint(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "this field is required"
    if kind == "extra_forbidden":
        return "unknown field; check its spelling against `kubectl explain specinf.spec`"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx.get('expected', '')}"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def findings_from_validation_error(exc: ValidationError, prefix: str = "") -> list[Finding]:
    out = []
    for err in exc.errors():
        path = _loc_to_path(tuple(err["loc"]))
        field = ".".join(p for p in (prefix, path) if p) or "(document)"
        out.append(error("InvalidField", field, _fix_hint(err)))
    return out


def load_resource(doc: Any) -> SpeculativeInference:
    """Validate one parsed document; raise ResourceError naming each bad field."""
    if not isinstance(doc, dict):
        raise ResourceError([error("InvalidDocument", "(document)", "expected a YAML mapping")])
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ResourceError(
            [
                error(
                    "WrongKind",
                    "apiVersion/kind",
                    f"expected apiVersion {API_VERSION} and kind {KIND}, got "
                    f"{doc.get('apiVersion')!r} / {doc.get('kind')!r}",
                )
            ]
        )
    try:
        return SpeculativeInference.model_validate(doc)
    except ValidationError as exc:
        raise ResourceError(findings_from_validation_error(exc)) from None


def check_name(name: str, namespace: str | None = None) -> list[Finding]:
    out = []
    if len(name) > MAX_NAME_LENGTH or not _DNS1035.fullmatch(name):
        out.append(
            error(
                "InvalidName",
                "metadata.name",
                f"{_show(name)} must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
                "(lower case letters, digits and '-', starting with a letter): the pools are "
                "named <name>-spec and <name>-base",
            )
        )
    if namespace is not None and not _is_dns_label(namespace):
        out.append(error("InvalidName", "metadata.namespace", f"{_show(namespace)} is not a namespace name"))
    return out


# ------------------------------------------------------------------ values Kubernetes checks


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(key: str) -> str:
    """A map key as part of a field path (a huge one shortened)."""
    return key if len(key) <= 80 else key[:77] + "..."


def _full(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _is_dns_label(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) <= 63 and re.fullmatch(_DNS_LABEL, value, re.ASCII) is not None
    )


def _is_dns_subdomain(value: object) -> bool:
    return _full(_DNS_SUBDOMAIN, value) and len(str(value)) <= 253


def _is_qualified_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    prefix, slash, name = value.rpartition("/")
    return (not slash or _is_dns_subdomain(prefix)) and _full(_NAME_PART, name) and len(name) <= 63


def _is_label_value(value: object) -> bool:
    return isinstance(value, str) and (value == "" or (_full(_NAME_PART, value) and len(value) <= 63))


def _is_extended_resource(value: str) -> bool:
    domain = value.split("/", 1)[0]
    return (
        "/" in value
        and _is_qualified_name(value)
        and _is_qualified_name(f"requests.{value}")
        and not value.startswith("requests.")
        and domain != "kubernetes.io"
        and not domain.endswith(".kubernetes.io")
    )


_QUALIFIED = "a qualified name: an optional DNS prefix and '/', then up to 63 of [A-Za-z0-9-_.]"
_LABEL_VALUE = "a label value: up to 63 of [A-Za-z0-9-_.], starting and ending alphanumeric"


def _labels(where: str, labels: dict[str, str]) -> list[Finding]:
    out = []
    for key, value in labels.items():
        if not _is_qualified_name(key):
            out.append(error("InvalidField", f"{where}.{_key(key)}", f"the key must be {_QUALIFIED}"))
        elif not _is_label_value(value):
            out.append(
                error("InvalidField", f"{where}.{_key(key)}", f"{_show(value)} must be {_LABEL_VALUE}")
            )
    return out


def _quantity(where: str, value: str | None) -> list[Finding]:
    if value is None or _full(_QUANTITY, value):
        return []
    return [
        error(
            "InvalidField", where, f"{_show(value)} is not a Kubernetes quantity, e.g. '8', '500m' or '64Gi'"
        )
    ]


def _dns_subdomain(where: str, value: str | None, what: str) -> list[Finding]:
    if value is None or _is_dns_subdomain(value):
        return []
    return [
        error("InvalidField", where, f"{_show(value)} is not a possible {what} name (a DNS-1123 subdomain)")
    ]


def _toleration(where: str, tol: Any) -> list[Finding]:
    if not isinstance(tol, dict):
        return [error("InvalidField", where, "a toleration is an object {key, operator, value, effect}")]
    out = []
    for k, v in tol.items():
        kind = _TOLERATION_FIELDS.get(k)
        if kind is None:
            out.append(error("InvalidField", f"{where}.{_key(str(k))}", "unknown field of a toleration"))
        elif v is not None and (
            not isinstance(v, kind) or isinstance(v, bool) or (isinstance(v, int) and abs(v) >= 2**63)
        ):
            out.append(error("InvalidField", f"{where}.{k}", f"{_show(v)} is not a {kind.__name__}"))
    if out:
        return out
    key, op, value, effect = (tol.get(k) or "" for k in ("key", "operator", "value", "effect"))
    if key and not _is_qualified_name(key):
        out.append(error("InvalidField", f"{where}.key", f"{_show(key)} must be {_QUALIFIED}"))
    if op not in ("", "Equal", "Exists"):
        out.append(error("InvalidField", f"{where}.operator", f"{_show(op)}: must be Equal or Exists"))
    elif not key and op != "Exists":
        out.append(error("InvalidField", f"{where}.operator", "must be Exists when key is empty"))
    elif op == "Exists" and value:
        out.append(error("InvalidField", f"{where}.value", "must be empty with operator Exists"))
    elif op != "Exists" and not _is_label_value(value):
        out.append(error("InvalidField", f"{where}.value", f"{_show(value)} must be {_LABEL_VALUE}"))
    if effect and effect not in _EFFECTS:
        out.append(
            error("InvalidField", f"{where}.effect", f"{_show(effect)}: must be one of {', '.join(_EFFECTS)}")
        )
    if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
        out.append(error("InvalidField", f"{where}.effect", "must be NoExecute with tolerationSeconds"))
    return out


def _ref_fields(where: str, ref: Any, fields: dict[str, type]) -> list[Finding]:
    if not isinstance(ref, dict):
        return [error("InvalidField", where, f"must be an object with {', '.join(fields)}")]
    out = []
    for k, v in ref.items():
        if k not in fields:
            out.append(
                error(
                    "InvalidField", f"{where}.{_key(str(k))}", f"unknown field; expected {', '.join(fields)}"
                )
            )
        elif v is not None and (not isinstance(v, fields[k]) or (fields[k] is str and isinstance(v, bool))):
            out.append(error("InvalidField", f"{where}.{k}", f"{_show(v)} is not a {fields[k].__name__}"))
    return out


def _env_source(where: str, src: dict[str, Any], value: str | None) -> list[Finding]:
    """core/v1 EnvVarSource: exactly one source, each as the apiserver accepts it."""
    if value:
        return [error("InvalidField", where, "set either value or valueFrom, not both")]
    known = ("secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef")
    unknown = [k for k in src if k not in known]
    if unknown:
        return [
            error(
                "InvalidField",
                f"{where}.{_key(str(unknown[0]))}",
                f"unknown source; use one of {', '.join(known)}",
            )
        ]
    kinds = [k for k in known if src.get(k) is not None]
    if len(kinds) != 1:
        return [error("InvalidField", where, f"needs exactly one of {', '.join(known)}")]
    kind, ref = kinds[0], src[kinds[0]]
    at = f"{where}.{kind}"
    if kind in ("secretKeyRef", "configMapKeyRef"):
        out = _ref_fields(at, ref, {"name": str, "key": str, "optional": bool})
        if out:
            return out
        out += _dns_subdomain(f"{at}.name", ref.get("name") or "", kind.removesuffix("KeyRef"))
        key = ref.get("key")
        if not (_full(_CONFIG_KEY, key) and len(key) <= 253 and not key.startswith("..") and key != "."):
            out.append(error("InvalidField", f"{at}.key", f"{_show(key)} is not a key: [-._a-zA-Z0-9]+"))
        return out
    if kind == "fieldRef":
        out = _ref_fields(at, ref, {"apiVersion": str, "fieldPath": str})
        path = ref.get("fieldPath") if not out else None
        if not out and ref.get("apiVersion") not in (None, "v1"):
            out.append(error("InvalidField", f"{at}.apiVersion", "must be v1"))
        if not out and path not in _FIELD_PATHS and not _full(_SUBSCRIPTED_FIELD_PATH, path):
            out.append(
                error("InvalidField", f"{at}.fieldPath", f"{_show(path)}: one of {', '.join(_FIELD_PATHS)}")
            )
        return out
    out = _ref_fields(at, ref, {"containerName": str, "resource": str, "divisor": str})
    if out:
        return out
    divisors = _ENV_RESOURCES.get(ref.get("resource") or "")
    if divisors is None:
        out.append(
            error(
                "InvalidField",
                f"{at}.resource",
                f"{_show(ref.get('resource'))}: one of {', '.join(_ENV_RESOURCES)}",
            )
        )
    elif ref.get("divisor") not in (None, *divisors):
        out.append(
            error(
                "InvalidField", f"{at}.divisor", f"{_show(ref.get('divisor'))}: one of {', '.join(divisors)}"
            )
        )
    return out


def check_bounds(si: SpeculativeInference) -> list[Finding]:
    """Numbers that land in int32 fields of the Deployments, and a window PromQL can use."""
    spec = si.spec
    out = []
    if spec.replicas > INT32_MAX:
        out.append(error("OutOfRange", "spec.replicas", f"at most {INT32_MAX} (a Deployment's replicas)"))
    if spec.vllm.startup_timeout and parse_duration(spec.vllm.startup_timeout) > MAX_STARTUP_SECONDS:
        out.append(error("OutOfRange", "spec.vllm.startupTimeout", "at most 168h"))
    window = parse_duration(spec.policy.window)
    if not MIN_WINDOW_SECONDS <= window <= MAX_WINDOW_SECONDS:
        out.append(
            error(
                "OutOfRange",
                "spec.policy.window",
                "the PromQL rate window must be from 1s to 168h, and span several scrapes (e.g. '5m')",
            )
        )
    return out


def check_scrape_window(si: SpeculativeInference) -> list[Finding]:
    """rate() over fewer than two scrapes is always empty, and under four now and then: the policy
    would be silently off.  A warning under four scrape intervals, a refusal under two."""
    policy = si.spec.policy
    scrapes = policy.scrapes_per_window
    if scrapes >= MIN_SCRAPES_PER_WINDOW:
        return []
    interval = policy.scrape_interval_seconds
    message = (
        f"{policy.window} holds {scrapes:.3g} scrape(s) at a {interval:g} s scrape interval; rate() "
        f"needs two samples in its window: make it at least {MIN_SCRAPES_PER_WINDOW} intervals "
        f"({MIN_SCRAPES_PER_WINDOW * interval:g} s), or set spec.policy.scrapeInterval to the interval "
        "Prometheus really uses"
    )
    make = error if scrapes < MIN_SCRAPES_FOR_RATE else warning
    return [make("WindowTooShortForScrapeInterval", "spec.policy.window", message)]


def check_pod_fields(si: SpeculativeInference) -> list[Finding]:
    """Strings and maps that become part of the pods, as the apiserver would check them."""
    spec, res = si.spec, si.spec.resources
    out = [
        *_labels("spec.podLabels", spec.pod_labels),
        *_labels("spec.resources.nodeSelector", res.node_selector),
    ]
    size = 0
    for key, value in spec.pod_annotations.items():
        size += len(key) + len(value)
        if not _is_qualified_name(key.lower()):
            out.append(
                error("InvalidField", f"spec.podAnnotations.{_key(key)}", f"the key must be {_QUALIFIED}")
            )
    if size > MAX_ANNOTATION_BYTES:
        out.append(error("InvalidField", "spec.podAnnotations", f"{size} bytes; at most 256 KiB in all"))
    for knob in ("cpu", "memory", "shmSize"):
        out += _quantity(f"spec.resources.{knob}", getattr(res, to_snake(knob)))
    if not _is_extended_resource(res.gpu_resource_name):
        out.append(
            error(
                "InvalidField",
                "spec.resources.gpuResourceName",
                f"{_show(res.gpu_resource_name)} is not an extended resource name like nvidia.com/gpu",
            )
        )
    for i, tol in enumerate(res.tolerations):
        out += _toleration(f"spec.resources.tolerations[{i}]", tol)
    for key, value in (res.affinity or {}).items():
        if key not in ("nodeAffinity", "podAffinity", "podAntiAffinity"):
            out.append(
                error("InvalidField", f"spec.resources.affinity.{_key(key)}", "unknown field of an affinity")
            )
        elif value is not None and not isinstance(value, dict):
            out.append(error("InvalidField", f"spec.resources.affinity.{key}", "must be an object (core/v1)"))
    image = spec.vllm.image
    if any(c.isspace() or not c.isprintable() for c in image):
        out.append(
            error("InvalidField", "spec.vllm.image", f"{_show(image)}: an image reference has no spaces")
        )
    for i, env in enumerate(spec.vllm.env):
        if not _full(_ENV_NAME, env.name):
            out.append(
                error("InvalidField", f"spec.vllm.env[{i}].name", f"{_show(env.name)} is not a variable name")
            )
        if env.value_from is not None:
            out += _env_source(f"spec.vllm.env[{i}].valueFrom", env.value_from, env.value)
    draft = spec.speculation.draft
    args = {
        "spec.target.model": spec.target.model,
        "spec.target.revision": spec.target.revision,
        "spec.vllm.servedModelName": spec.vllm.served_model_name,
        "spec.speculation.draft.model": draft.model if draft else None,
        "spec.speculation.draft.revision": draft.revision if draft else None,
        **{f"spec.vllm.extraArgs[{i}]": a for i, a in enumerate(spec.vllm.extra_args)},
    }
    for where, text in args.items():
        if text is not None and "\x00" in text:
            out.append(error("InvalidField", where, "a NUL character cannot be passed as an argument"))
    out += _dns_subdomain("spec.serviceAccountName", spec.service_account_name, "ServiceAccount")
    out += _dns_subdomain("spec.priorityClassName", spec.priority_class_name, "PriorityClass")
    for i, secret in enumerate(spec.image_pull_secrets):
        out += _dns_subdomain(f"spec.imagePullSecrets[{i}]", secret, "Secret")
    cache = spec.model_cache
    if cache is not None:
        out += _dns_subdomain("spec.modelCache.persistentVolumeClaim", cache.persistent_volume_claim, "PVC")
        path = cache.host_path
        if path is not None and (not path.startswith("/") or ".." in path.split("/") or "\x00" in path):
            out.append(
                error(
                    "InvalidField",
                    "spec.modelCache.hostPath",
                    f"{_show(path)}: an absolute path without '..'",
                )
            )
    token = spec.hf_token_secret
    if token is not None:
        out += _dns_subdomain("spec.hfTokenSecret.name", token.name, "Secret")
        if not (_full(_CONFIG_KEY, token.key) and len(token.key) <= 253 and not token.key.startswith("..")):
            out.append(
                error(
                    "InvalidField",
                    "spec.hfTokenSecret.key",
                    f"{_show(token.key)} is not a key: [-._a-zA-Z0-9]+",
                )
            )
    return out


def check_version(si: SpeculativeInference) -> list[Finding]:
    spec = si.spec
    out: list[Finding] = []
    version = parse_version(spec.vllm.version)
    vtext = format_version(version)
    if version < MIN_SUPPORTED:
        return [
            error(
                "UnsupportedVersion",
                "spec.vllm.version",
                f"vLLM {vtext} is older than the oldest supported release "
                f"{format_version(MIN_SUPPORTED)}; upgrade the image",
            )
        ]
    method = spec.speculation.method
    gate = method_gate(version, method)
    if gate is None or not gate.allows(version):
        where = gate.describe() if gate else "the --speculative-config dialect (vLLM >= 0.8.3)"
        out.append(
            error(
                "MethodUnsupportedByVersion",
                "spec.speculation.method",
                f"method {method.value} is not available in vLLM {vtext}; it needs {where}: "
                "raise spec.vllm.version (and the image) or choose another method",
            )
        )
    auto_table = spec.speculation.tokens_per_batch_size_mode is TokensPerBatchSizeMode.AUTO
    if (spec.speculation.tokens_per_batch_size or auto_table) and (
        dialect_for(version) is Dialect.LEGACY or VLLM_TABLE_KEY not in speculative_config_keys(version)
    ):
        needs = CONFIG_KEY_GATES[VLLM_TABLE_KEY].describe()
        if auto_table:
            field, fix = "spec.speculation.tokensPerBatchSizeMode", "set tokensPerBatchSizeMode: Manual"
        else:
            field, fix = "spec.speculation.tokensPerBatchSize", "remove spec.speculation.tokensPerBatchSize"
        out.append(
            error(
                "KeyUnsupportedByVersion",
                field,
                f"vLLM {vtext} has no k-by-batch-size table (it needs {needs}); {fix} or raise "
                "spec.vllm.version",
            )
        )
    if spec.speculation.draft_sampling is not None and DRAFT_SAMPLE_METHOD_KEY not in speculative_config_keys(
        version
    ):
        out.append(
            error(
                "KeyUnsupportedByVersion",
                "spec.speculation.draftSampling",
                f"vLLM {vtext} has no draft sampling choice (it needs "
                f"{CONFIG_KEY_GATES[DRAFT_SAMPLE_METHOD_KEY].describe()}); remove "
                "spec.speculation.draftSampling or raise spec.vllm.version",
            )
        )
    draft = spec.speculation.draft
    tp = spec.target.tensor_parallel_size
    if (
        method is Method.DRAFT_MODEL
        and draft is not None
        and draft.tensor_parallel_size not in (None, tp)
        and version >= DRAFT_TP_MUST_MATCH_SINCE
    ):
        out.append(
            error(
                "DraftTensorParallelSize",
                "spec.speculation.draft.tensorParallelSize",
                f"vLLM {vtext} (V1 engine) runs a draft model only at the target's tensor "
                f"parallel size; set draft.tensorParallelSize to {tp} or remove it",
            )
        )
    if spec.rollout.effective_strategy is RolloutStrategy.HOT_SWAP and not sleep_mode_gate().allows(version):
        out.append(
            error(
                "StrategyUnsupportedByVersion",
                "spec.rollout.strategy",
                f"HotSwap needs vLLM's sleep mode endpoints (/sleep, /wake_up, /is_sleeping), which "
                f"vLLM {vtext} does not have ({sleep_mode_gate().describe()}); raise spec.vllm.version "
                "(and the image) or use strategy Restart or Surge",
            )
        )
    if spec.target.quantization is Quantization.BITSANDBYTES and version >= BITSANDBYTES_REMOVED:
        out.append(
            error(
                "QuantizationUnsupportedByVersion",
                "spec.target.quantization",
                f"vLLM {vtext} no longer has bitsandbytes (removed in "
                f"{format_version(BITSANDBYTES_REMOVED)}); use awq, gptq or fp8",
            )
        )
    return out


def check_speculation_table(si: SpeculativeInference, budget: BudgetPlan) -> list[Finding]:
    """tokensPerBatchSizeMode Auto needs a table SpecOps can derive, and one that drafts somewhere."""
    spec = si.spec
    if spec.speculation.tokens_per_batch_size_mode is not TokensPerBatchSizeMode.AUTO or budget.errors:
        return []
    field = "spec.speculation.tokensPerBatchSizeMode"
    table = derive_for_spec(spec)
    if table is None:
        return [
            error(
                "SpeculationTableUnderivable",
                field,
                "Auto derives the table from each model's size and layer count: set "
                "spec.target.architecture (and spec.speculation.draft.architecture) for a model "
                "outside the catalog, or set tokensPerBatchSizeMode: Manual",
            )
        ]
    if not table.drafts:
        return [
            warning(
                "SpeculationNeverPays",
                field,
                "at the catalog's prior acceptance for this method the derived table drafts at no "
                "batch size: the speculative pool would pay the draft's memory for nothing until "
                "live acceptance says otherwise",
            )
        ]
    return []


def check_extra_args(si: SpeculativeInference) -> list[Finding]:
    out = []
    for i, arg in enumerate(si.spec.vllm.extra_args):
        flag = arg.split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            out.append(
                error(
                    "ManagedFlagInExtraArgs",
                    f"spec.vllm.extraArgs[{i}]",
                    f"{flag} is rendered by SpecOps; set {MANAGED_FLAGS[flag]} instead",
                )
            )
    return out


def check_pod_labels(si: SpeculativeInference) -> list[Finding]:
    return [
        error(
            "ReservedLabel",
            f"spec.podLabels.{key}",
            f"{key} is set by SpecOps to select the pools; remove it from spec.podLabels",
        )
        for key in si.spec.pod_labels
        if key in RESERVED_LABELS
    ]


def check_switching(si: SpeculativeInference) -> list[Finding]:
    """A single replica without surge: every switch would stop the only serving pod, so the policy
    never switches it on its own (docs/operator.md, Reconcile)."""
    spec = si.spec
    if spec.replicas != 1 or spec.rollout.max_surge != 0 or spec.policy.mode is not Mode.AUTO:
        return []
    if spec.rollout.effective_strategy is RolloutStrategy.HOT_SWAP:
        return [
            warning(
                "SingleReplicaNoSurge",
                "spec.replicas",
                "with one replica a hot swap leaves the service without an awake engine for its drain, "
                "sleep and wake (seconds), so Auto judges every window but never switches on its own "
                "(a SwitchHeld event says what it would do); run two replicas or more",
            )
        ]
    return [
        warning(
            "SingleReplicaNoSurge",
            "spec.rollout.maxSurge",
            "with one replica and maxSurge 0 a mode switch would stop the only serving pod, so Auto "
            "judges every window but never switches on its own (a SwitchHeld event says what it would "
            "do); set spec.rollout.maxSurge: 1 to let it switch without an outage",
        )
    ]


@dataclass(frozen=True, slots=True)
class CheckReport(HasFindings):
    """All findings for a resource, with the budget they came from."""

    findings: tuple[Finding, ...]
    budget: BudgetPlan

    @property
    def ok(self) -> bool:
        return not self.errors


def check_resource(si: SpeculativeInference) -> CheckReport:
    """Name, version, argument, pairing and budget checks (everything the schema cannot say)."""
    budget = plan_budget(si.spec)
    findings = [
        *check_name(si.metadata.name, si.metadata.namespace),
        *check_bounds(si),
        *check_scrape_window(si),
        *check_version(si),
        *check_speculation_table(si, budget),
        *check_extra_args(si),
        *check_pod_labels(si),
        *check_pod_fields(si),
        *check_switching(si),
        *budget.findings,
    ]
    return CheckReport(findings=tuple(findings), budget=budget)
