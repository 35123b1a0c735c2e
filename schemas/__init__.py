"""msgspec structs for each provider's webhooks: one module per provider."""
