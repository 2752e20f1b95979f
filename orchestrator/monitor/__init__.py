"""GPU and host monitoring: the GpuProbe protocol, its NVML implementation, and the pure pieces
(device mapping, detection, summaries) the per-node monitors and the driver share."""
