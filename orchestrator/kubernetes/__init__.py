"""Kubernetes: a validated job rendered as a KubeRay RayJob (pure)."""
