"""Hardware drivers: one module per hardware kind, each behind a small typed interface.

Drivers speak in plain values. They know nothing of MQTT, config files or the gateway.
"""
