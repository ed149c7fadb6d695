"""Bring the whole test world up and down in one run directory, showing progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import config as kube_config

from specops_testkit.testbed.controlplane import ControlPlaneState, LocalControlPlane, stop_from_state
from specops_testkit.testbed.podrunner import PodRunner
from specops_testkit.testbed.prometheus import LocalPrometheus

Progress = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


class Testbed:
    """etcd + kube-apiserver + kube-controller-manager, Prometheus and the pod runner."""

    STEPS = 4
    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        run_dir: Path,
        scrape_interval: str = "1s",
        gpu_type: str = "H100-80GB",
        emulator_env: dict[str, str] | None = None,
        progress: Progress = _print,
        crds: list[dict[str, Any]] | None = None,
    ) -> None:
        self.crds = crds
        self.run_dir = run_dir = run_dir.resolve()  # kubeconfigs name files by absolute path
        self.control_plane = LocalControlPlane(run_dir / "cluster")
        self.prometheus = LocalPrometheus(run_dir / "prometheus", scrape_interval=scrape_interval)
        self.gpu_type = gpu_type
        self.emulator_env = emulator_env or {}
        self.progress = progress
        self.state: ControlPlaneState | None = None
        self.api: Any = None
        self.runner: PodRunner | None = None

    def _step(self, n: int, what: str, t0: float) -> None:
        self.progress(f"[{n}/{self.STEPS}] {what} ({time.monotonic() - t0:.1f} s)")

    def up(self) -> Testbed:
        t0 = time.monotonic()
        (self.run_dir / "cluster").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "prometheus").mkdir(parents=True, exist_ok=True)
        # A previous run killed hard may have left processes behind.
        stop_from_state(self.run_dir / "cluster")
        self.prometheus.stop()
        try:
            self.state = self.control_plane.start(crds=self.crds)
            self._step(1, f"kube-apiserver ready at {self.state.server}", t0)
            self.api = kube_config.new_client_from_config(config_file=str(self.state.kubeconfig))
            url = self.prometheus.start()
            self._step(2, f"Prometheus ready at {url}", t0)
            self.runner = PodRunner(
                self.api,
                self.run_dir / "runner",
                self.prometheus,
                self.gpu_type,
                emulator_env=self.emulator_env,
            )
            self.runner.start()
            self._step(3, f"pod runner up (fake node with {self.gpu_type} GPUs)", t0)
            self._wait_default_service_account(t0)
        except BaseException:
            self.down()
            raise
        return self

    def _wait_default_service_account(self, t0: float) -> None:
        # Namespaces are usable once the controller-manager has started its controllers.
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if core.list_namespaced_service_account("default").items:
                    self._step(4, "controller-manager running", t0)
                    return
            except Exception:
                pass
            time.sleep(0.2)
        raise RuntimeError("kube-controller-manager did not start its controllers within 60 s")

    @property
    def kubeconfig(self) -> Path:
        assert self.state is not None
        return self.state.kubeconfig

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    def down(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        self.prometheus.stop()
        self.control_plane.stop()
        if self.api is not None:
            self.api.close()
            self.api = None
