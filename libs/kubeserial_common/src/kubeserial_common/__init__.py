"""KubeSerial shared library: a pure `core` (models, registry, vocabulary, decisions' helpers) below a
`runtime` (client, informer, work queue, leases, events, health, runner); see .importlinter."""
