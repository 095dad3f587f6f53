"""tidings: a self-hosted, multi-tenant, real-time notification server (the domain)."""
