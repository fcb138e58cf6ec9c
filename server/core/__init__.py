"""The sans-I/O core: decoded events in, pushes and effects out. Plain synchronous code:
no asyncio, no store, no Starlette; it imports nothing from the rest of popin."""
