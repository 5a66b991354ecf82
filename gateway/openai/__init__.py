"""The OpenAI-compatible API surface: protocol, serving, api_router."""
