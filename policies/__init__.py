"""Access policies (Cedar) and their schema, and the default site policy: data, not code."""
