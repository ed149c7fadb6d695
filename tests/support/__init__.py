"""What the test suites share, imported by them and never by the product: test modules import
helpers from here, not from each other (or from a conftest).

- ``paths``: the repository's files the tests read (examples, chart, manifests, the CRD).
- ``resources``: SpeculativeInference documents: a base patched per test, the shipped examples,
  the object as the API server stores it.
- ``fake_kube``: ``FakeKube``, the one in-memory Kubernetes the reconciler runs on in unit and
  reliability tests (it implements ``specops.controller.kube.KubeApi``).
- ``strategies``: Hypothesis strategies for resources the models accept.
- ``policy_states``: policy states read back from status and the observations each mode runs
  with, for the policy's rule and decision tests.
- ``hostile``: hostile input: Hypothesis strategies for documents users might apply, hostile
  label values, and which stage refuses a document.
- ``k8s``: an oracle for rendered manifests (Kubernetes' schemas and the apiserver's own rules).
- ``live_cluster``: plain helpers for tests on a real API server (``tests/cluster.py`` keeps the
  fixtures).
- ``closed_loop``: the policy-loop scenario the integration tests share (the demo resource, load).
- ``tools``: the command-line tools the packaging tests run (helm, kubectl, promtool, hadolint).
"""
