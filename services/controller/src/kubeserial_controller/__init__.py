"""KubeSerial controller."""
