"""The admin API: FastAPI routes over the model store, audit log, identity and federation."""
