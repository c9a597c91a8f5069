"""The HTTP API: the app, its routers, request dependencies and error mapping."""
