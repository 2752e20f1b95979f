"""Typed configuration: schema, ConfigStore registration, loading and validation."""
