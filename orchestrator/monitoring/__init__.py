"""GPU and host monitoring: probes, samplers, detectors and summaries.

The per-node monitor actors that use them live in `launchers.monitoring`."""
