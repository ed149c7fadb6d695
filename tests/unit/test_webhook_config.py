"""How the operator registers its webhook: by Service reference in a cluster, by URL outside."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from specops.controller.main import OperatorOptions, ServiceWebhookServer, _webhook_server, parse_service_ref
from specops_testkit.testbed.controlplane import free_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ops/specops-webhook:9443", ("ops", "specops-webhook", 9443)), ("ops/hook", ("ops", "hook", 443))],
)
def test_parse_service_ref(text: str, expected: tuple[str, str, int]) -> None:
    assert parse_service_ref(text) == expected


@pytest.mark.parametrize("text", ["hook", "ops/", "/hook", "ops/hook:https"])
def test_parse_service_ref_errors_name_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="--webhook-service"):
        parse_service_ref(text)


def first_config(server: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async def fn(**_: Any) -> None:
            return None

        gen = server(fn)
        config: dict[str, Any] = await gen.__anext__()
        await gen.aclose()
        return config

    return asyncio.run(main())


def test_service_reference_with_ca_bundle_and_matching_certificate(tmp_path: Path) -> None:
    opts = OperatorOptions(
        webhook_service="ops/specops-webhook:9443", webhook_listen="127.0.0.1", webhook_port=free_port()
    )
    server = _webhook_server(opts)
    assert isinstance(server, ServiceWebhookServer)
    config = first_config(server)
    assert config["service"] == {"namespace": "ops", "name": "specops-webhook", "port": 9443, "path": ""}
    assert "url" not in config
    assert config["caBundle"]
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(Path(server.certfile).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert "specops-webhook.ops.svc" in names


def test_url_registration_outside_a_cluster() -> None:
    opts = OperatorOptions(webhook_listen="127.0.0.1", webhook_port=free_port())
    config = first_config(_webhook_server(opts))
    assert config["url"].startswith("https://127.0.0.1:")
