"""Side-by-side benchmark: meshproxy against Envoy, HAProxy, nginx and a direct connection,
each proxy with one worker on a core of its own. `python bench/run.py --help` for the options."""
