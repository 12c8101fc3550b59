"""Provider adapters: one module per query style behind the `Provider` protocol."""
