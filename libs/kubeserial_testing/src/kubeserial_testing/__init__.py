"""Development-only helpers: a real local control plane and simulated serial devices."""
