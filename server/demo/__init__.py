"""`fedvault demo`: a whole local federation over TLS with node authentication."""
