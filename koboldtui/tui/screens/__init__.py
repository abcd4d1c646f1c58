"""Screens and modal forms of the panel; each talks to the backend only through the app."""
