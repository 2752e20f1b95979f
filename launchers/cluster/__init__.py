"""Connecting to a Ray cluster and describing it for the planner."""
