"""The web dashboard at /ui: a static page that reads the /v1 API with its user's key."""
