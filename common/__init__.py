"""Shared by site and server: settings, errors, models, data, PKI and privacy math."""
