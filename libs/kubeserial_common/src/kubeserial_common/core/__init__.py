"""The pure core: models, the resource registry, the vocabulary of conditions, decisions' helpers and
the gateway's argument builders. Imports no I/O library (no Kubernetes client, HTTP, metrics or
logging set-up): enforced by import-linter (.importlinter).
"""
