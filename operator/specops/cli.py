"""The ``specops`` command line.

Exit codes, for automation: 0 no errors, 1 the resource has errors (it would be refused),
2 the input could not be read as a SpeculativeInference (the message names the field).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from specops import __version__
from specops.api.crd import build_crd
from specops.api.docs import api_reference
from specops.api.findings import Finding
from specops.api.v1alpha1 import RolloutStrategy, SpeculativeInference
from specops.checks.validation import CheckReport, ResourceError, check_resource, load_resource
from specops.render.hotswap import PLACEHOLDER_TOKEN, render_admin_secret, render_hot_swap_all
from specops.render.manifests import PoolSplit, RenderError, initial_split, render_all
from specops.vllm.speculation_table import derive_for_resource, speedups_by_batch_size

EXIT_OK, EXIT_ERRORS, EXIT_UNREADABLE = 0, 1, 2

app = typer.Typer(
    name="specops",
    help="Speculative decoding on vLLM, budgeted, watched and rolled back when it hurts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

FileArg = Annotated[
    Path,
    typer.Argument(help="YAML file with one or more SpeculativeInference documents ('-' for stdin)."),
]


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"


class _NoAliasDumper(yaml.SafeDumper):
    """Plain YAML for humans and GitOps: repeated values are written out, never as &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_NoAliasDumper, sort_keys=False, width=100)


def dump_yaml_documents(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(dump_yaml(d) for d in docs)


def _fail_unreadable(findings: list[Finding], source: str) -> None:
    for f in findings:
        typer.echo(f"error: {source}: {f}", err=True)
    raise typer.Exit(EXIT_UNREADABLE)


def read_resources(path: Path) -> list[SpeculativeInference]:
    """Parse every document; exit 2 with field-naming messages on the first unreadable one."""
    source = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        typer.echo(f"error: cannot read {source}: {exc.strerror}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        typer.echo(f"error: {source} is not valid YAML: {exc}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    if not docs:
        typer.echo(f"error: {source} holds no document", err=True)
        raise typer.Exit(EXIT_UNREADABLE)
    resources = []
    for i, doc in enumerate(docs):
        try:
            resources.append(load_resource(doc))
        except ResourceError as exc:
            where = source if len(docs) == 1 else f"{source} (document {i + 1})"
            _fail_unreadable(exc.findings, where)
    return resources


def plan_as_dict(si: SpeculativeInference, report: CheckReport) -> dict[str, Any]:
    """The ``plan -o json`` contract."""
    b = report.budget
    return {
        "name": si.metadata.name,
        "namespace": si.metadata.namespace,
        "fits": report.ok,
        "errors": [f.as_dict() for f in report.errors],
        "warnings": [f.as_dict() for f in report.warnings],
        "vram_gib": b.vram_gib,
        "target_weights_gib": b.target_weights_gib,
        "draft_weights_gib": b.draft_weights_gib,
        "kv_cache_gib": b.kv_cache_gib,
        "kv_cache_gib_without_draft": b.kv_cache_gib_without_draft,
        "draft_share_of_vram": b.draft_share_of_vram,
        "size_ratio": b.size_ratio,
        "max_concurrent_sequences": b.max_concurrent_sequences,
        "max_concurrent_sequences_without_draft": b.max_concurrent_sequences_without_draft,
        "max_model_len": b.max_model_len,
        "speculation_table": speculation_table_as_dict(si),
        "hot_swap": b.hot_swap.as_dict() if b.hot_swap else None,
    }


def speculation_table_as_dict(si: SpeculativeInference) -> dict[str, Any] | None:
    """The derived k-by-batch-size table (status' live acceptance, else the catalog's prior)."""
    derived = derive_for_resource(si)
    if derived is None:
        return None
    table, source = derived
    return {
        "acceptance_source": source.value,
        "acceptance_per_position": list(table.acceptance),
        "rows": [
            {
                "min_batch_size": r.min_batch_size,
                "max_batch_size": r.max_batch_size,
                "num_speculative_tokens": r.num_speculative_tokens,
                "expected_speedup_min": r.speedup_min,
                "expected_speedup_max": r.speedup_max,
            }
            for r in table.rows
        ],
        "expected_speedup_by_batch_size": {str(b): s for b, s in speedups_by_batch_size(table).items()},
    }


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}{unit}"
    return f"{value}{unit}"


def plan_as_table(si: SpeculativeInference, report: CheckReport) -> str:
    b = report.budget
    share = f"{b.draft_share_of_vram:.1%}" if b.draft_share_of_vram is not None else "-"
    rows = [
        ("resource", f"{si.metadata.namespace or 'default'}/{si.metadata.name}"),
        ("verdict", "fits" if report.ok else "REFUSED"),
        ("GPU memory per replica", _fmt(b.vram_gib, " GiB")),
        ("target weights", _fmt(b.target_weights_gib, " GiB")),
        ("draft weights", _fmt(b.draft_weights_gib, " GiB")),
        ("draft share of GPU memory", share),
        ("size ratio (target:draft)", f"1:{b.size_ratio:.1f}" if b.size_ratio else "-"),
        ("KV cache (speculative pod)", _fmt(b.kv_cache_gib, " GiB")),
        ("KV cache (baseline pod)", _fmt(b.kv_cache_gib_without_draft, " GiB")),
        (f"sequences at {b.max_model_len} tokens", _fmt(b.max_concurrent_sequences)),
        ("  ... without the draft", _fmt(b.max_concurrent_sequences_without_draft)),
    ]
    if b.hot_swap is not None:
        hs = b.hot_swap
        for label, e in (("speculative", hs.speculative), ("baseline", hs.baseline)):
            rows += [
                (f"hot swap: {label} engine", f"--gpu-memory-utilization {e.gpu_memory_utilization:g}, "
                 f"KV cache {e.kv_cache_gib:.2f} GiB, {_fmt(e.max_concurrent_sequences)} sequences"),
                ("  ... asleep", f"{e.sleeping_residual_gib:.2f} GiB per GPU, "
                 f"{e.host_memory_asleep_gib:.2f} GiB of host RAM"),
            ]  # fmt: skip
        rows.append(("host RAM per replica, peak", f"{hs.host_memory_peak_gib:.2f} GiB (mid-swap)"))
    derived = derive_for_resource(si)
    if derived is not None:
        table, source = derived
        ranges = [f"{r.min_batch_size}-{r.max_batch_size}: {r.num_speculative_tokens}" for r in table.rows]
        last = table.rows[-1]
        ranges[-1] = f"{last.min_batch_size}+: {last.num_speculative_tokens}"  # vLLM extends it
        speedups = [f"{n}: {x:.2f}x" for n, x in speedups_by_batch_size(table).items()]
        rows += [
            ("derived k by batch size", f"{', '.join(ranges)} ({source.value.lower()} acceptance)"),
            ("  speedup over k = 0", ", ".join(speedups)),
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    for f in report.errors:
        lines.append(f"ERROR   {f}")
    for f in report.warnings:
        lines.append(f"WARNING {f}")
    return "\n".join(lines)


@app.command()
def crd() -> None:
    """Print the SpeculativeInference CustomResourceDefinition (generated from the models)."""
    typer.echo(dump_yaml(build_crd()), nl=False)


def parse_split(text: str) -> PoolSplit:
    """'speculative=2,baseline=1' (or 'spec=2,base=1') -> PoolSplit."""
    counts = {"speculative": 0, "baseline": 0}
    aliases = {
        "spec": "speculative",
        "speculative": "speculative",
        "base": "baseline",
        "baseline": "baseline",
    }
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        pool = aliases.get(key.strip())
        if pool is None or not value.strip().isdigit():
            raise typer.BadParameter(
                f"{part!r}: write speculative=N,baseline=M with whole numbers",
                param_hint="--replicas-split",
            )
        counts[pool] = int(value)
    return PoolSplit(**counts)


@app.command()
def render(
    file: FileArg,
    replicas_split: Annotated[
        str | None,
        typer.Option(
            "--replicas-split",
            help="Pool sizes, e.g. speculative=1,baseline=1. Default: all replicas in the pool the "
            "policy mode starts in.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Render even when the checks find errors.")] = False,
) -> None:
    """Print the Deployments and Service for each resource, as multi-document YAML."""
    split = parse_split(replicas_split) if replicas_split else None
    out: list[dict[str, Any]] = []
    failed = False
    for si in read_resources(file):
        report = check_resource(si)
        for f in report.errors:
            typer.echo(f"error: {si.metadata.name}: {f}", err=True)
        for f in report.warnings:
            typer.echo(f"warning: {si.metadata.name}: {f}", err=True)
        if report.errors and not force:
            failed = True
            continue
        try:
            if si.spec.rollout.effective_strategy is RolloutStrategy.HOT_SWAP:
                # The Secret's token is the operator's: shown with one that matches no request.
                out.extend([*render_hot_swap_all(si), render_admin_secret(si, PLACEHOLDER_TOKEN)])
            else:
                out.extend(render_all(si, split or initial_split(si.spec)))
        except RenderError as exc:
            typer.echo(f"error: {si.metadata.name}: {exc}", err=True)
            failed = True
    if out:
        typer.echo(dump_yaml_documents(out), nl=False)
    if failed:
        raise typer.Exit(EXIT_ERRORS)


@app.command()
def plan(
    file: FileArg,
    output: Annotated[Output, typer.Option("-o", "--output", help="table or json")] = Output.TABLE,
) -> None:
    """Show the GPU memory budget and pairing verdict for each resource."""
    resources = read_resources(file)
    reports = [(si, check_resource(si)) for si in resources]
    if output is Output.JSON:
        items = [plan_as_dict(si, r) for si, r in reports]
        typer.echo(json.dumps(items[0] if len(items) == 1 else items, indent=2))
    else:
        typer.echo("\n\n".join(plan_as_table(si, r) for si, r in reports))
    if any(not r.ok for _, r in reports):
        raise typer.Exit(EXIT_ERRORS)


@app.command()
def validate(file: FileArg) -> None:
    """Check resources as the admission webhook would: errors refuse, warnings inform."""
    failed = False
    for si in read_resources(file):
        report = check_resource(si)
        name = si.metadata.name
        for f in report.errors:
            typer.echo(f"error: {name}: {f}", err=True)
        for f in report.warnings:
            typer.echo(f"warning: {name}: {f}", err=True)
        if report.ok:
            typer.echo(f"{name}: valid ({len(report.warnings)} warning(s))")
        failed |= not report.ok
    if failed:
        raise typer.Exit(EXIT_ERRORS)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@app.command()
def run(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Namespace to watch (repeat for several); default: all."),
    ] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig file; default: in-cluster, then $KUBECONFIG.")
    ] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(help="Default Prometheus URL for resources without spec.policy.prometheusUrl."),
    ] = None,
    prometheus_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a Prometheus query may wait for data; past it the evaluation is an Error."
        ),
    ] = 10.0,
    prometheus_deadline: Annotated[
        float,
        typer.Option(
            help="Seconds all the queries of one evaluation may take in total, however slowly the "
            "answers trickle in; past it the evaluation is an Error."
        ),
    ] = 30.0,
    evaluation_workers: Annotated[
        int, typer.Option(min=1, help="Resources evaluated at once (each waits on the API server).")
    ] = 8,
    allowed_prometheus_url: Annotated[
        list[str] | None,
        typer.Option(
            help="A Prometheus URL resources may name in spec.policy.prometheusUrl (repeat for several). "
            "--prometheus-url is always allowed; any other URL is refused at admission and never queried."
        ),
    ] = None,
    log_format: Annotated[LogFormat, typer.Option(help="text or json")] = LogFormat.TEXT,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    metrics_port: Annotated[int, typer.Option(help="Port of the operator's own /metrics (0: off).")] = 8080,
    health_port: Annotated[int, typer.Option(help="Port of /healthz for probes (0: off).")] = 8081,
    standalone: Annotated[
        bool,
        typer.Option(
            "--standalone/--peering",
            help="Standalone: one replica, no peering. Peering: replicas coordinate through Kopf's "
            "peering objects (install the peering CRD).",
        ),
    ] = True,
    resync_seconds: Annotated[float, typer.Option(help="Periodic reconcile interval.")] = 30.0,
    status_refresh_seconds: Annotated[
        float,
        typer.Option(
            help="Age at which status.observed figures are refreshed though none moved by more than 10% "
            "(within --status-figure-writes-per-second)."
        ),
    ] = 60.0,
    status_figure_writes_per_second: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Status writes carrying only fresh figures, per second over all resources (a burst of "
            "10 s worth). Writes that change the policy's state are never limited.",
        ),
    ] = 2.0,
    webhooks: Annotated[
        bool, typer.Option("--webhooks/--no-webhooks", help="Serve the validating webhook.")
    ] = True,
    webhook_listen: Annotated[str, typer.Option(help="Address the webhook server binds.")] = "0.0.0.0",
    webhook_port: Annotated[int, typer.Option(help="Port of the webhook server.")] = 9443,
    webhook_host: Annotated[
        str | None,
        typer.Option(help="Host name the API server calls (the webhook Service's DNS name in a cluster)."),
    ] = None,
    webhook_service: Annotated[
        str | None,
        typer.Option(
            help="Register the webhook by Service reference, NAMESPACE/NAME[:PORT] (in a cluster; the "
            "API server routes it). Without it the webhook is registered by URL (--webhook-host)."
        ),
    ] = None,
    webhook_config_name: Annotated[
        str, typer.Option(help="Name of the ValidatingWebhookConfiguration the operator manages.")
    ] = "specops.dev",
    webhook_cert: Annotated[
        str | None, typer.Option(help="Serving certificate (e.g. from cert-manager).")
    ] = None,
    webhook_key: Annotated[str | None, typer.Option(help="Key of --webhook-cert.")] = None,
    webhook_ca: Annotated[str | None, typer.Option(help="CA bundle for the webhook configuration.")] = None,
    leader_election: Annotated[
        bool,
        typer.Option(
            "--leader-election/--no-leader-election",
            help="Several replicas: all serve the webhook, the one holding a coordination.k8s.io Lease "
            "reconciles and evaluates.",
        ),
    ] = False,
    lease_name: Annotated[str, typer.Option(help="Name of the leader Lease.")] = "specops",
    lease_namespace: Annotated[
        str | None, typer.Option(help="Namespace of the leader Lease; default: the operator's own.")
    ] = None,
    leader_identity: Annotated[
        str | None, typer.Option(help="This replica's name in the Lease; default: POD_NAME or the host.")
    ] = None,
    lease_duration: Annotated[
        float, typer.Option(help="Seconds without a renewal after which another replica takes over.")
    ] = 15.0,
    lease_renew_deadline: Annotated[
        float,
        typer.Option(
            help="Seconds after its last renewal at which a leader stops acting (< --lease-duration)."
        ),
    ] = 10.0,
    lease_retry_period: Annotated[
        float, typer.Option(help="Seconds between attempts to renew or take the Lease.")
    ] = 2.0,
    read_cache: Annotated[
        bool,
        typer.Option(
            "--read-cache/--no-read-cache",
            help="Read the resources and their objects from watches (no GET per reconcile); off: a GET "
            "per object at every reconcile and evaluation.",
        ),
    ] = True,
) -> None:
    """Run the operator."""
    from specops.controller.main import OperatorOptions, prometheus_allowlist
    from specops.controller.main import run as run_operator

    opts = OperatorOptions(
        namespaces=list(namespace or []),
        kubeconfig=kubeconfig,
        prometheus_url=prometheus_url,
        prometheus_timeout=prometheus_timeout,
        prometheus_deadline=prometheus_deadline,
        evaluation_workers=evaluation_workers,
        allowed_prometheus_urls=list(allowed_prometheus_url or []),
        log_format=log_format.value,
        verbose=verbose,
        metrics_port=metrics_port or None,
        liveness_port=health_port or None,
        standalone=standalone,
        resync_seconds=resync_seconds,
        status_refresh_seconds=status_refresh_seconds,
        status_figure_writes_per_second=status_figure_writes_per_second,
        webhooks=webhooks,
        webhook_listen=webhook_listen,
        webhook_port=webhook_port,
        webhook_host=webhook_host,
        webhook_service=webhook_service,
        webhook_config_name=webhook_config_name,
        webhook_cert=webhook_cert,
        webhook_key=webhook_key,
        webhook_ca=webhook_ca,
        leader_election=leader_election,
        lease_name=lease_name,
        lease_namespace=lease_namespace,
        leader_identity=leader_identity,
        lease_duration=lease_duration,
        lease_renew_deadline=lease_renew_deadline,
        lease_retry_period=lease_retry_period,
        read_cache=read_cache,
    )
    try:
        prometheus_allowlist(opts)
        if leader_election and (problems := opts.lease_settings().problems()):
            raise ValueError("; ".join(problems))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    run_operator(opts)


# Commands that come with the test kit (a distribution of its own, never in the operator image):
# it registers them under this entry-point group, so the product never imports it.
KIT_COMMANDS = {
    "demo": "Run the operator on the local closed loop (needs the test kit).",
    "simulate": "Compare strategies on scenarios, faster than real time (needs the test kit).",
}


def _kit_missing(name: str) -> Callable[[], None]:
    def command() -> None:
        typer.echo(
            f"error: `specops {name}` comes with the SpecOps test kit, which is not installed here "
            "(the operator image never contains it). From a checkout: ./hack/setup-python.sh, or "
            "pip install -e ./testkit",
            err=True,
        )
        raise typer.Exit(2)

    return command


def _add_kit_commands() -> None:
    found = {ep.name: ep for ep in entry_points(group="specops.commands")}
    for name, help_text in KIT_COMMANDS.items():
        if name in found:
            app.command(name)(found[name].load())
        else:
            app.command(
                name,
                help=help_text,
                context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
            )(_kit_missing(name))


_add_kit_commands()


@app.command()
def docs() -> None:
    """Print the API field reference as Markdown (docs/api.md)."""
    typer.echo(api_reference(), nl=False)


@app.command()
def version() -> None:
    """Print the SpecOps version."""
    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
