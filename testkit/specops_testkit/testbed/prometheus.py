"""A real Prometheus (Debian's package) on loopback, with targets managed through file_sd.

Each target is one JSON file in ``targets/``; Prometheus notices new, changed and removed files
through inotify within a scrape interval or so.  Files are written atomically (temp + rename) so
Prometheus never reads half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

from specops_testkit.testbed.controlplane import ControlPlaneError, free_port
from specops_testkit.testbed.processes import start_process, stop_process


def prometheus_config(scrape_interval: str, targets_dir: Path) -> str:
    return (
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  evaluation_interval: {scrape_interval}\n"
        "scrape_configs:\n"
        "- job_name: vllm\n"
        "  file_sd_configs:\n"
        f"  - files: ['{targets_dir}/*.json']\n"
        "    refresh_interval: 5s\n"
    )


class LocalPrometheus:
    def __init__(self, run_dir: Path, scrape_interval: str = "1s") -> None:
        self.run_dir = run_dir
        self.scrape_interval = scrape_interval
        self.targets_dir = run_dir / "targets"
        self.port = 0
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        """Start (or restart on the same port, keeping its data, for outage tests)."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise ControlPlaneError("prometheus not found: run hack/setup-testbed.sh (apt package)")
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            shutil.rmtree(self.run_dir / "data", ignore_errors=True)
            self.port = free_port()
        config = self.run_dir / "prometheus.yml"
        config.write_text(prometheus_config(self.scrape_interval, self.targets_dir))
        proc = start_process(
            [
                binary, f"--config.file={config}", f"--storage.tsdb.path={self.run_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h",
                "--web.enable-lifecycle", "--log.level=warn",
            ],
            self.run_dir / "prometheus.log",
        )  # fmt: skip
        self.pid = proc.pid
        (self.run_dir / "prometheus.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ControlPlaneError(f"prometheus exited; see {self.run_dir / 'prometheus.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.05)
        raise ControlPlaneError(f"prometheus not ready after {timeout:.0f} s")

    def set_target(self, key: str, address: str, labels: dict[str, str]) -> None:
        path = self.targets_dir / f"{key}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [address], "labels": labels}]))
        os.replace(tmp, path)

    def remove_target(self, key: str) -> None:
        (self.targets_dir / f"{key}.json").unlink(missing_ok=True)

    def stop(self) -> None:
        pid_file = self.run_dir / "prometheus.pid"
        if pid_file.exists():
            stop_process(int(pid_file.read_text()))
            pid_file.unlink()
        self.pid = None
