"""The HTTPS intake: aiohttp routes, TLS, limits and the one error mapping."""
