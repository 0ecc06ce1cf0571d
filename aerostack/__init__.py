"""Aerostack: a self-hostable MCP workspace gateway."""
