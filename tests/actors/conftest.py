# The `ray_cluster` fixture (three simulated hosts) lives in tests/conftest.py, so that every test
# directory shares one Ray cluster per pytest process.
