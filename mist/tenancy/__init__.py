"""mist.tenancy: tenants, API keys and roles, who may do what, and the audit log."""
