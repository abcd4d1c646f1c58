"""AI Horde: HTTP client, the worker loop, and the local-priority gate."""
