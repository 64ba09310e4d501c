"""KubeSerial shared library: CRD models, Kubernetes helpers, logging and metrics."""
