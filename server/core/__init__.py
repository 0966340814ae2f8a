"""The ground floor: settings, database, column types and time; imports no other room."""
