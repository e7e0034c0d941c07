"""The HTTP edge: aiohttp routes for webhooks, media WebSockets, health and admin."""
