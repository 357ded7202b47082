"""Every state change lives here. Services flush, never commit: the request commits once."""
