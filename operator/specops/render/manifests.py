"""Manifests for a SpeculativeInference (pure and deterministic, so GitOps diffs stay quiet).

One resource becomes two Deployments, ``<name>-spec`` (speculative pool) and ``<name>-base``
(plain pool), and a Service ``<name>`` over both.  The split of replicas between the pools is an
input: the policy decides it, rendering only writes it down.  vLLM arguments follow the dialect of
the declared version (``specops.vllm.dialect``); the baseline pool gets the same arguments minus
speculation, so the two pools differ in exactly one thing.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from specops.api.v1alpha1 import (
    API_VERSION,
    DRAFT_SAMPLE_METHOD_KEY,
    KIND,
    DraftQuantization,
    DType,
    KVCacheDType,
    Method,
    Mode,
    Quantization,
    SpeculativeInference,
    SpeculativeInferenceSpec,
    TokensPerBatchSizeMode,
    parse_duration,
)
from specops.vllm.budget import plan_budget
from specops.vllm.dialect import (
    BITSANDBYTES_LOAD_FORMAT_UNTIL,
    V2_BLOCK_MANAGER_NEEDED_UNTIL,
    Dialect,
    Entrypoint,
    Version,
    dialect_for,
    entrypoint_for,
    parse_version,
    speculative_config_keys,
    vllm_method_name,
)
from specops.vllm.speculation_table import VLLM_TABLE_KEY, derive_for_spec

# Rows of vLLM's k-by-batch-size table, [start_bs, end_bs, k] (its num_speculative_tokens_per_batch_size).
SpeculationRows = Sequence[Sequence[int]]

MANAGED_BY = "specops"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_POOL = "specops.dev/pool"
RESERVED_LABELS = (LABEL_NAME, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_COMPONENT, LABEL_POOL)

HF_HOME = "/root/.cache/huggingface"
CONTAINER_NAME = "vllm"
PORT_NAME = "http"

# Startup budget when spec.vllm.startupTimeout is unset: a base for process start and CUDA graph
# capture plus time per GiB of weights read from the cache (first downloads take longer: set it).
STARTUP_BASE_SECONDS = 300
STARTUP_SECONDS_PER_GIB = 15
STARTUP_MAX_SECONDS = 3600
STARTUP_PERIOD_SECONDS = 10
PRESTOP_SECONDS = 5
# After preStop, vLLM finishes in-flight requests until this runs out, then it is killed.
TERMINATION_GRACE_SECONDS = 60


class RenderError(ValueError):
    """The resource cannot be expressed for its vLLM version (validation reports why first)."""


class Pool(StrEnum):
    SPECULATIVE = "speculative"
    BASELINE = "baseline"

    @property
    def suffix(self) -> str:
        return "spec" if self is Pool.SPECULATIVE else "base"


@dataclass(frozen=True, slots=True)
class PoolSplit:
    """Replicas of each pool."""

    speculative: int
    baseline: int

    def __post_init__(self) -> None:
        if self.speculative < 0 or self.baseline < 0:
            raise ValueError("replica counts cannot be negative")

    def of(self, pool: Pool) -> int:
        return self.speculative if pool is Pool.SPECULATIVE else self.baseline

    @property
    def total(self) -> int:
        return self.speculative + self.baseline


@dataclass(frozen=True, slots=True)
class OwnerRef:
    name: str
    uid: str
    api_version: str = API_VERSION
    kind: str = KIND

    def as_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def initial_split(spec: SpeculativeInferenceSpec) -> PoolSplit:
    """All replicas in the pool the mode asks for (Auto starts speculative)."""
    if spec.policy.mode is Mode.BASELINE:
        return PoolSplit(speculative=0, baseline=spec.replicas)
    return PoolSplit(speculative=spec.replicas, baseline=0)


def pool_name(name: str, pool: Pool) -> str:
    return f"{name}-{pool.suffix}"


def selector_labels(name: str) -> dict[str, str]:
    """Labels every pod of the resource carries; the Service and status.selector use them."""
    return {LABEL_NAME: "vllm", LABEL_INSTANCE: name, LABEL_MANAGED_BY: MANAGED_BY}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def pool_labels(name: str, pool: Pool) -> dict[str, str]:
    return {**selector_labels(name), LABEL_POOL: pool.value}


# ------------------------------------------------------------------------------------ vLLM args


def speculation_rows(
    spec: SpeculativeInferenceSpec, derived: SpeculationRows | None = None
) -> list[list[int]] | None:
    """The k-by-batch-size table the speculative pool runs: the user's ``tokensPerBatchSize``, or
    with ``tokensPerBatchSizeMode: Auto`` ``derived`` (the table the operator decided to run;
    default: the one derived from the catalog's prior acceptance).  None: no table."""
    s = spec.speculation
    if s.tokens_per_batch_size:
        return [
            [r.min_batch_size, r.max_batch_size, r.num_speculative_tokens] for r in s.tokens_per_batch_size
        ]
    if s.tokens_per_batch_size_mode is not TokensPerBatchSizeMode.AUTO:
        return None
    if derived is not None:
        return [list(row) for row in derived]
    table = derive_for_spec(spec)
    return table.vllm_rows() if table is not None else None  # validation refuses Auto without one


def speculation_rows_in(args: Sequence[str]) -> list[list[int]] | None:
    """The k-by-batch-size table a rendered container's args carry (None: none), to read back
    what a running speculative Deployment runs."""
    for flag, value in itertools.pairwise(args):
        if flag == "--speculative-config":
            rows = json.loads(value).get(VLLM_TABLE_KEY)
            return [list(map(int, row)) for row in rows] if rows else None
    return None


def speculative_config(
    spec: SpeculativeInferenceSpec, version: Version, derived: SpeculationRows | None = None
) -> dict[str, Any]:
    """The --speculative-config object, holding only keys ``version`` accepts (``derived``: the
    table to render with ``tokensPerBatchSizeMode: Auto``, see ``speculation_rows``)."""
    s = spec.speculation
    cfg: dict[str, Any] = {"num_speculative_tokens": s.num_speculative_tokens}
    method_name = vllm_method_name(version, s.method)
    if method_name is not None:
        cfg["method"] = method_name
    if s.draft is not None:
        cfg["model"] = s.draft.model
        if s.draft.revision:
            cfg["revision"] = s.draft.revision
        if s.draft.quantization is not DraftQuantization.NONE:
            cfg["quantization"] = s.draft.quantization.value
        cfg["draft_tensor_parallel_size"] = s.draft.tensor_parallel_size or spec.target.tensor_parallel_size
    if s.method is Method.NGRAM:
        ngram = s.ngram
        cfg["prompt_lookup_min"] = ngram.prompt_lookup_min if ngram else 2
        cfg["prompt_lookup_max"] = ngram.prompt_lookup_max if ngram else 5
    if s.draft_sampling is not None:
        cfg[DRAFT_SAMPLE_METHOD_KEY] = s.draft_sampling.value.lower()
    rows = speculation_rows(spec, derived)
    if rows:
        cfg[VLLM_TABLE_KEY] = rows
    allowed = speculative_config_keys(version)
    return {k: v for k, v in cfg.items() if k in allowed}


def legacy_speculative_args(spec: SpeculativeInferenceSpec, version: Version) -> list[str]:
    """Pre-0.8.3 flags."""
    s = spec.speculation
    prefix = ["--use-v2-block-manager"] if version < V2_BLOCK_MANAGER_NEEDED_UNTIL else []
    if s.method is Method.NGRAM:
        ngram = s.ngram
        return [
            *prefix,
            "--speculative-model", "[ngram]",
            "--num-speculative-tokens", str(s.num_speculative_tokens),
            "--ngram-prompt-lookup-min", str(ngram.prompt_lookup_min if ngram else 2),
            "--ngram-prompt-lookup-max", str(ngram.prompt_lookup_max if ngram else 5),
        ]  # fmt: skip
    if s.draft is None:  # mtp and suffix: validation refuses these for legacy versions
        raise RenderError(f"method {s.method.value} has no legacy flags; spec.vllm.version must be >= 0.8.3")
    args = [
        *prefix,
        "--speculative-model", s.draft.model,
        "--num-speculative-tokens", str(s.num_speculative_tokens),
    ]  # fmt: skip
    if s.draft.tensor_parallel_size is not None:
        args += ["--speculative-draft-tensor-parallel-size", str(s.draft.tensor_parallel_size)]
    if s.draft.quantization is not DraftQuantization.NONE:
        args += ["--speculative-model-quantization", s.draft.quantization.value]
    return args


def speculative_args(spec: SpeculativeInferenceSpec, derived: SpeculationRows | None = None) -> list[str]:
    version = parse_version(spec.vllm.version)
    if dialect_for(version) is Dialect.LEGACY:
        return legacy_speculative_args(spec, version)
    cfg = speculative_config(spec, version, derived)
    return ["--speculative-config", json.dumps(cfg, sort_keys=True, separators=(",", ":"))]


def served_model_name(spec: SpeculativeInferenceSpec) -> str:
    return spec.vllm.served_model_name or spec.target.model


def vllm_entrypoint(spec: SpeculativeInferenceSpec) -> list[str]:
    """The container command: the release's server entry point (images changed theirs over time)."""
    return list(entrypoint_for(parse_version(spec.vllm.version)).command)


def vllm_args(
    spec: SpeculativeInferenceSpec, pool: Pool, derived: SpeculationRows | None = None
) -> list[str]:
    """The container args: the model (positional for `vllm serve`), then the flags."""
    t = spec.target
    version = parse_version(spec.vllm.version)
    model = [t.model] if entrypoint_for(version) is Entrypoint.SERVE else ["--model", t.model]
    args = [*model, "--served-model-name", served_model_name(spec)]
    if t.revision:
        args += ["--revision", t.revision]
    args += [
        "--port", str(spec.vllm.port),
        "--tensor-parallel-size", str(t.tensor_parallel_size),
        "--gpu-memory-utilization", f"{spec.resources.gpu_memory_utilization:g}",
    ]  # fmt: skip
    if t.max_model_len:
        args += ["--max-model-len", str(t.max_model_len)]
    if t.dtype is not DType.AUTO:
        args += ["--dtype", t.dtype.value]
    if t.kv_cache_dtype is not KVCacheDType.AUTO:
        args += ["--kv-cache-dtype", t.kv_cache_dtype.value]
    # int8 checkpoints (compressed-tensors W8A8) declare their scheme; vLLM reads it from them.
    if t.quantization not in (Quantization.NONE, Quantization.INT8):
        args += ["--quantization", t.quantization.value]
        if t.quantization is Quantization.BITSANDBYTES and version < BITSANDBYTES_LOAD_FORMAT_UNTIL:
            args += ["--load-format", "bitsandbytes"]
    if pool is Pool.SPECULATIVE:
        args += speculative_args(spec, derived)
    return args + list(spec.vllm.extra_args)


def vllm_command(spec: SpeculativeInferenceSpec, pool: Pool) -> list[str]:
    """The whole command line a pod of ``pool`` runs (entry point, then args)."""
    return vllm_entrypoint(spec) + vllm_args(spec, pool)


# ------------------------------------------------------------------------------------ manifests


def startup_timeout_seconds(spec: SpeculativeInferenceSpec) -> int:
    if spec.vllm.startup_timeout:
        return math.ceil(parse_duration(spec.vllm.startup_timeout))
    plan = plan_budget(spec)
    weights = (plan.target_weights_gib or 0.0) + (plan.draft_weights_gib or 0.0)
    return min(STARTUP_MAX_SECONDS, STARTUP_BASE_SECONDS + math.ceil(weights * STARTUP_SECONDS_PER_GIB))


def _metadata(
    name: str, namespace: str | None, labels: dict[str, str], owner: OwnerRef | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    if owner is not None:
        meta["ownerReferences"] = [owner.as_dict()]
    return meta


def _env(spec: SpeculativeInferenceSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": HF_HOME}]
    if spec.hf_token_secret is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": spec.hf_token_secret.name,
                        "key": spec.hf_token_secret.key,
                    }
                },
            }
        )
    env += [e.model_dump(by_alias=True, exclude_none=True) for e in spec.vllm.env]
    return env


def _volumes(spec: SpeculativeInferenceSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shm_size}}
    ]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    cache = spec.model_cache
    if cache is not None:
        if cache.persistent_volume_claim:
            source: dict[str, Any] = {
                "persistentVolumeClaim": {
                    "claimName": cache.persistent_volume_claim,
                    "readOnly": cache.read_only,
                }
            }
        elif cache.host_path:
            source = {"hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
        else:
            source = {"emptyDir": {}}
        volumes.append({"name": "model-cache", **source})
        mounts.append({"name": "model-cache", "mountPath": HF_HOME, "readOnly": cache.read_only})
    return volumes, mounts


def _resources(spec: SpeculativeInferenceSpec) -> dict[str, Any]:
    res = spec.resources
    gpus = str(res.gpus_per_replica)
    limits: dict[str, str] = {res.gpu_resource_name: gpus}
    requests: dict[str, str] = {res.gpu_resource_name: gpus}
    for key, value in (("cpu", res.cpu), ("memory", res.memory)):
        if value:
            limits[key] = value
            requests[key] = value
    return {"limits": limits, "requests": requests}


def _probes(startup_timeout: int) -> dict[str, Any]:
    http = {"path": "/health", "port": PORT_NAME}
    startup_failures = max(1, math.ceil(startup_timeout / STARTUP_PERIOD_SECONDS))
    return {
        "startupProbe": {
            "httpGet": dict(http),
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failures,
        },
        "readinessProbe": {
            "httpGet": dict(http),
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": dict(http),
            "periodSeconds": 15,
            "timeoutSeconds": 10,
            "failureThreshold": 4,
        },
    }


def render_pool_deployment(
    si: SpeculativeInference,
    pool: Pool,
    replicas: int,
    owner: OwnerRef | None = None,
    derived: SpeculationRows | None = None,
) -> dict[str, Any]:
    """The Deployment of one pool with ``replicas`` pods (``derived``: see ``speculation_rows``)."""
    spec = si.spec
    name = si.metadata.name
    labels = pool_labels(name, pool)
    startup_timeout = startup_timeout_seconds(spec)  # runs the budget: once per Deployment
    volumes, mounts = _volumes(spec)
    annotations = {
        **spec.pod_annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.vllm.port),
        "prometheus.io/path": "/metrics",
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.vllm.image,
        "command": vllm_entrypoint(spec),
        "args": vllm_args(spec, pool, derived),
        "ports": [{"name": PORT_NAME, "containerPort": spec.vllm.port, "protocol": "TCP"}],
        "env": _env(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        **_probes(startup_timeout),
        # Endpoints take a moment to drop a terminating pod: keep serving meanwhile, then SIGTERM
        # lets the server finish its in-flight requests within the grace period.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
    }
    pod_spec: dict[str, Any] = {"containers": [container], "volumes": volumes}
    res = spec.resources
    if res.node_selector:
        pod_spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod_spec["tolerations"] = list(res.tolerations)
    if res.affinity:
        pod_spec["affinity"] = dict(res.affinity)
    if spec.service_account_name:
        pod_spec["serviceAccountName"] = spec.service_account_name
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    if spec.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in spec.image_pull_secrets]
    # vLLM needs the whole start-up to load weights: a slow terminating pod holds its GPUs.
    pod_spec["terminationGracePeriodSeconds"] = TERMINATION_GRACE_SECONDS

    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(pool_name(name, pool), si.metadata.namespace, labels, owner),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": startup_timeout + 300,
            # GPUs are scarce: replace pods one at a time, never start a surplus pod.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": {**spec.pod_labels, **labels}, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def render_service(si: SpeculativeInference, owner: OwnerRef | None = None) -> dict[str, Any]:
    """The Service over both pools; clients never see which pool served them."""
    name = si.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, si.metadata.namespace, selector_labels(name), owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),  # a fresh dict: no shared references
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": si.spec.vllm.port,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def pod_monitor_interval(spec: SpeculativeInferenceSpec) -> str:
    """``spec.policy.scrapeInterval``, else often enough that a rate() over the policy window sees
    at least four samples (``PolicySpec.scrape_interval_seconds``).  Prometheus takes no fractions."""
    seconds = spec.policy.scrape_interval_seconds
    return f"{int(seconds)}s" if seconds.is_integer() else f"{max(1, round(seconds * 1000))}ms"


def render_pod_monitor(si: SpeculativeInference, owner: OwnerRef | None = None) -> dict[str, Any]:
    """A Prometheus Operator PodMonitor whose series carry the labels SpecOps' queries group by:
    namespace, pod, specops_pool and specops_name."""
    name = si.metadata.name
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(name, si.metadata.namespace, selector_labels(name), owner),
        "spec": {
            "selector": {"matchLabels": selector_labels(name)},
            "podMetricsEndpoints": [
                {
                    "port": PORT_NAME,
                    "path": "/metrics",
                    "interval": pod_monitor_interval(si.spec),
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_specops_dev_pool"],
                            "targetLabel": "specops_pool",
                        },
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                            "targetLabel": "specops_name",
                        },
                    ],
                }
            ],
        },
    }


def render_all(
    si: SpeculativeInference,
    split: PoolSplit | None = None,
    owner: OwnerRef | None = None,
    derived: SpeculationRows | None = None,
) -> list[dict[str, Any]]:
    """Speculative Deployment, baseline Deployment, Service, in that order.  ``derived``: the
    k-by-batch-size table the speculative pool is to run with ``tokensPerBatchSizeMode: Auto``
    (default: derived from the catalog's prior; the operator passes the one it decided on)."""
    split = split or initial_split(si.spec)
    return [
        render_pool_deployment(si, Pool.SPECULATIVE, split.speculative, owner, derived),
        render_pool_deployment(si, Pool.BASELINE, split.baseline, owner),
        render_service(si, owner),
    ]
