# PyInstaller runtime hook, run before PyInstaller's own hooks (which import inspect and pkgutil)
# and before the entry script: block the signals cfgsup handles as early as Python code can, so
# a TERM to PID 1 during start-up stays pending instead of being dropped (see supervisor/start.py).
from supervisor.start import block_signals

block_signals()
