"""The runtime: the Kubernetes client with typed errors, informers, the work queue, leases, Events,
health, logging and the process runner. Uses kubeserial_common.core, never the services.
"""
