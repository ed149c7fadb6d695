#!/usr/bin/env bash
# The reliability and security suite at full size: faults in the closed loop (Prometheus down,
# failing, slow, NaN/empty; the operator SIGKILLed and the kube-apiserver restarted mid-switch;
# conflicting writers; pools deleted or edited), acceptance noise around the threshold for a
# simulated hour, 10,000 hostile resources (hypothesis), PromQL injection, the Hugging Face token,
# TLS, the read-only root filesystem and least-privilege RBAC.  Prints the figures docs/reliability.md
# reports.  `.ci/run` runs the same tests with a smaller fuzz sample (250 examples).
# Usage: hack/reliability.sh [pytest args...]      (SPECOPS_FUZZ_EXAMPLES overrides 10000)
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
t0=$(date +%s)
step 1/3 "python environment"
hack/setup-python.sh
step 2/3 "test world binaries (built once, cached)"
hack/setup-testbed.sh
step 3/3 "reliability and security tests (about 25 minutes on 2 cores)"
export SPECOPS_FUZZ_EXAMPLES=${SPECOPS_FUZZ_EXAMPLES:-10000}
set +e
"$VENV/bin/pytest" -s -ra \
  tests/reliability \
  tests/integration/test_faults_prometheus.py \
  tests/integration/test_faults_kube.py \
  tests/integration/test_failover.py \
  tests/integration/test_security.py \
  tests/integration/test_hostile_resources.py \
  "tests/integration/test_operator.py::test_drift_is_restored" \
  "tests/integration/test_operator.py::test_no_op_reconcile_writes_nothing_and_restart_resumes" \
  "tests/integration/test_policy_loop.py::test_prometheus_outage_holds_then_recovers" \
  tests/packaging/test_chart.py tests/packaging/test_install.py tests/packaging/test_image.py \
  "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
echo "hack/reliability.sh finished in $(( $(date +%s) - t0 )) s with exit code $rc"
exit "$rc"
