"""The web dashboard served at `/` (server-rendered pages over the domain services)."""
