"""Adapters: the SDK partners use to connect their back office to the hub."""
