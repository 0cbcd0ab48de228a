"""The application: the `sentinel` command and what it runs (demo, replay, evaluate, bench,
soak, tune, sizing, the local mesh). It imports the roles and the shared core; nothing imports
it."""
