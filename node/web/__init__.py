"""The web front end: node/web/app.py create_app; see docs/web.md."""
