"""KubeSerial injector."""
