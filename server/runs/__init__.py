"""Runs submitted through the admin API and started on the Flower SuperLink."""
