"""The gateway: one address for every instance on the box, routing by model name (issue 17)."""
