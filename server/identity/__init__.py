"""Who may call the admin API: users, sites, projects and their API tokens."""
