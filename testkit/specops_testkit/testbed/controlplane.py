"""A real local control plane: etcd + kube-apiserver + kube-controller-manager on loopback.

Binaries are looked up, in order, in ``$SPECOPS_KUBE_BIN_DIR``, ``$KUBEBUILDER_ASSETS`` (a
setup-envtest directory: etcd and kube-apiserver, no controller-manager), the build cache
(``$SPECOPS_CACHE/kube/bin``, filled by ``hack/build-kube-binaries.sh`` from Debian's source
package, v1.20.2) and ``$PATH`` (Debian's ``etcd-server`` gives etcd).  Ports are chosen free at
start.  Token authentication and RBAC are on; the admin token is in the written kubeconfig.  An
audit log at level Metadata records every create/update/patch/delete, so tests can count writes.

There is no scheduler and no kubelet: ``specops_testkit.testbed.podrunner`` binds and "runs" pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from specops_testkit.testbed.processes import start_process, stop_process

OPERATOR_USER = "specops-operator"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "etcd")
# Controllers the test world does not need (no cloud, no node lifecycle without kubelets).
_KCM_CONTROLLERS = (
    "*,-serviceaccount-token,-nodeipam,-nodelifecycle,-csrsigning,-csrapproving,-csrcleaner,"
    "-bootstrapsigner,-tokencleaner,-cloud-node-lifecycle,-route,-service,-attachdetach,"
    "-persistentvolume-binder,-persistentvolume-expander,-pvc-protection,-pv-protection,-ttl"
)
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
"""


class ControlPlaneError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("SPECOPS_CACHE", Path.home() / ".cache" / "specops"))


def find_binary(name: str) -> Path | None:
    """First executable ``name`` in the configured directories, then $PATH."""
    dirs = [os.environ.get("SPECOPS_KUBE_BIN_DIR"), os.environ.get("KUBEBUILDER_ASSETS")]
    candidates = [Path(d) / name for d in dirs if d]
    candidates.append(cache_dir() / "kube" / "bin" / name)
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    return next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    return start_process(cmd, log)


# The name the rest of the kit knows; one implementation, in processes.py.
stop_pid = stop_process


@dataclass
class ControlPlaneState:
    """What a later ``down`` needs; written to ``state.json`` in the run directory."""

    run_dir: str
    api_port: int
    etcd_port: int
    token: str
    operator_token: str
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def kubeconfig(self) -> Path:
        return Path(self.run_dir) / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return Path(self.run_dir) / "kubeconfig-operator"

    @property
    def audit_log(self) -> Path:
        return Path(self.run_dir) / "audit.log"


class LocalControlPlane:
    """Start and stop the control plane in ``run_dir`` (created; old etcd data is discarded)."""

    def __init__(self, run_dir: Path, with_controller_manager: bool = True) -> None:
        self.run_dir = run_dir
        self.with_controller_manager = with_controller_manager
        self.state: ControlPlaneState | None = None

    def binaries(self) -> dict[str, Path]:
        wanted = [b for b in KUBE_BINARIES if self.with_controller_manager or b != "kube-controller-manager"]
        found = {name: find_binary(name) for name in wanted}
        missing = [n for n, p in found.items() if p is None]
        if missing:
            raise ControlPlaneError(
                f"missing {', '.join(missing)}: run hack/setup-testbed.sh (builds kube binaries "
                "from Debian's source package, installs etcd), or point SPECOPS_KUBE_BIN_DIR or "
                "KUBEBUILDER_ASSETS at a directory holding them"
            )
        return {n: p for n, p in found.items() if p is not None}

    def start(self, timeout: float = 60.0, crds: list[dict[str, Any]] | None = None) -> ControlPlaneState:
        """Start everything; ``crds`` are installed before the controller-manager starts, so its
        garbage collector knows their kinds from the first discovery (it refreshes every 30 s)."""
        bins = self.binaries()
        run = self.run_dir
        pki = run / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(run / "etcd-data", ignore_errors=True)
        if not (pki / "sa.key").exists():
            subprocess.run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], check=True,
                           capture_output=True)  # fmt: skip
            subprocess.run(["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out",
                            str(pki / "sa.pub")], check=True, capture_output=True)  # fmt: skip
        token = secrets.token_hex(16)
        operator_token = secrets.token_hex(16)
        # A separate identity for the operator, so the audit log tells its writes apart.
        (pki / "tokens.csv").write_text(
            f"{token},admin,admin,system:masters\n{operator_token},{OPERATOR_USER},operator,system:masters\n"
        )
        (run / "audit-policy.yaml").write_text(AUDIT_POLICY)
        state = ControlPlaneState(
            run_dir=str(run),
            api_port=free_port(),
            etcd_port=free_port(),
            token=token,
            operator_token=operator_token,
        )
        peer = free_port()
        etcd = _start(
            [
                str(bins["etcd"]), "--name", "specops", "--data-dir", str(run / "etcd-data"),
                "--listen-client-urls", f"http://127.0.0.1:{state.etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{state.etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", f"specops=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync", "--log-level", "warn",
            ],
            run / "etcd.log",
        )  # fmt: skip
        state.pids["etcd"] = etcd.pid
        self.state = state
        self._save()
        apiserver = _start(self._apiserver_command(bins["kube-apiserver"]), run / "apiserver.log")
        state.pids["kube-apiserver"] = apiserver.pid
        self._save()
        self._wait_ready(timeout, apiserver)
        self._write_kubeconfig()
        if crds:
            install_crds(state.kubeconfig, crds, timeout)
        if self.with_controller_manager:
            kcm = _start(
                [
                    str(bins["kube-controller-manager"]), f"--kubeconfig={state.kubeconfig}",
                    "--bind-address=127.0.0.1", "--secure-port=0", "--port=0",
                    "--leader-elect=false", f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--controllers={_KCM_CONTROLLERS}", "--concurrent-deployment-syncs=10",
                    "--logtostderr=true", "--v=1",
                ],
                run / "controller-manager.log",
            )  # fmt: skip
            state.pids["kube-controller-manager"] = kcm.pid
            self._save()
        return state

    def _apiserver_command(self, binary: Path) -> list[str]:
        assert self.state is not None
        state, run = self.state, self.run_dir
        pki = run / "pki"
        return [
            str(binary),
            f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={state.api_port}", "--insecure-port=0",
            f"--cert-dir={pki}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            f"--audit-policy-file={run / 'audit-policy.yaml'}",
            f"--audit-log-path={state.audit_log}", "--audit-log-format=json",
            "--logtostderr=true", "--v=1",
        ]  # fmt: skip

    def restart_apiserver(self, hard: bool = False, down_seconds: float = 0.0, timeout: float = 60.0) -> None:
        """Stop kube-apiserver (SIGTERM, or SIGKILL when ``hard``) and start it again on the same
        port, certificates, tokens and etcd: clients see connections drop, then the same server."""
        assert self.state is not None
        pid = self.state.pids["kube-apiserver"]
        if hard:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        stop_pid(pid)
        time.sleep(down_seconds)
        binary = self.binaries()["kube-apiserver"]
        proc = _start(self._apiserver_command(binary), self.run_dir / "apiserver.log")
        self.state.pids["kube-apiserver"] = proc.pid
        self._save()
        self._wait_ready(timeout, proc)

    def _save(self) -> None:
        assert self.state is not None
        (self.run_dir / "state.json").write_text(json.dumps(asdict(self.state), indent=2))

    def _write_kubeconfig(self) -> None:
        """A kubeconfig that verifies the apiserver against the CA of its self-signed cert."""
        assert self.state is not None
        s = self.state
        pki = Path(s.run_dir) / "pki"
        pem = (pki / "apiserver.crt").read_text()
        blocks = [b + "-----END CERTIFICATE-----\n" for b in pem.split("-----END CERTIFICATE-----")[:-1]]
        (pki / "ca.crt").write_text(blocks[-1].lstrip())
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "specops-local",
                    "cluster": {"server": s.server, "certificate-authority": str(pki / "ca.crt")},
                }
            ],
            "users": [{"name": "admin", "user": {"token": s.token}}],
            "contexts": [
                {
                    "name": "specops-local",
                    "context": {"cluster": "specops-local", "user": "admin", "namespace": "default"},
                }
            ],
            "current-context": "specops-local",
        }
        s.kubeconfig.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))
        kubeconfig["users"] = [{"name": "admin", "user": {"token": s.operator_token}}]
        s.operator_kubeconfig.write_text(yaml.safe_dump(kubeconfig, sort_keys=False))

    def _wait_ready(self, timeout: float, proc: subprocess.Popen[bytes]) -> None:
        assert self.state is not None
        # The certificate does not exist until the apiserver has written it.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(
            f"{self.state.server}/readyz", headers={"Authorization": f"Bearer {self.state.token}"}
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(self._tail("apiserver.log", "kube-apiserver exited"))
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise ControlPlaneError(self._tail("apiserver.log", f"not ready after {timeout:.0f} s"))

    def _tail(self, log: str, what: str) -> str:
        lines = (self.run_dir / log).read_text(errors="replace").splitlines()[-25:]
        return f"{what}; last lines of {self.run_dir / log}:\n" + "\n".join(lines)

    def stop(self) -> None:
        stop_from_state(self.run_dir)
        self.state = None


def install_crds(kubeconfig: Path, crds: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """Create (or replace) CRDs and wait until the API server serves them."""
    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.client.exceptions import ApiException

    with kube_config.new_client_from_config(config_file=str(kubeconfig)) as api:
        ext = client.ApiextensionsV1Api(api)
        for crd in crds:
            name = crd["metadata"]["name"]
            try:
                ext.create_custom_resource_definition(crd)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                live = ext.read_custom_resource_definition(name)
                ext.replace_custom_resource_definition(
                    name,
                    {
                        **crd,
                        "metadata": {**crd["metadata"], "resourceVersion": live.metadata.resource_version},
                    },
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                conds = ext.read_custom_resource_definition(name).status.conditions or []
                if any(c.type == "Established" and c.status == "True" for c in conds):
                    break
                time.sleep(0.1)
            else:
                raise ControlPlaneError(f"CRD {name} not established after {timeout:.0f} s")


def stop_from_state(run_dir: Path) -> None:
    """Stop whatever ``state.json`` in ``run_dir`` lists (controller-manager first, etcd last)."""
    path = run_dir / "state.json"
    if not path.exists():
        return
    pids = json.loads(path.read_text()).get("pids", {})
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        if name in pids:
            stop_pid(int(pids[name]))
    path.unlink()
