"""kubectl serial: a kubectl plugin for people (not a service; no service imports it)."""
