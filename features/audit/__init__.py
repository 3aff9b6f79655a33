"""The audit trail: who read or changed what, when, and with what outcome."""
