"""The admin API surface: adapters, aliases, events (Bearer $TUNELOOP_ADMIN_TOKEN)."""
