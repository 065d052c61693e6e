"""The built-in resolver: a sans-IO engine on raw bytes, and thin asyncio edges."""
