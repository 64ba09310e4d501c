"""KubeSerial monitor."""
