"""What `fedvault server start` runs: supervisor, SuperLink, fleet gateway, Control client, TLS."""
