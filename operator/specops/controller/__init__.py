"""The running operator: Kopf handlers, Kubernetes I/O and the reconcile loop around the pure core."""
