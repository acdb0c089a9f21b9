"""Users, roles, tokens and the audit trail."""
