"""A handler that never reads its stdin (and never answers)."""

import time

while True:
    time.sleep(3600)
