"""Dashboard widgets: each one draws one panel from immutable views."""
