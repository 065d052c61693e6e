"""The register: durable store of tasks and instructions, the effective state, the audit chain."""
