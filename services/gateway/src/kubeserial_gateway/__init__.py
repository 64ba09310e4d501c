"""KubeSerial gateway."""
