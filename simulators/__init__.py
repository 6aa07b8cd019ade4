"""Simulated device fleet: sans-IO LwM2M clients, behaviours, network emulation."""
