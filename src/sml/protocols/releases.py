"""The public releases' names and frame lists: moved to :mod:`sml.data.releases` (the data sets own them);
every name stays importable from here."""
from sml.data.releases import *  # noqa: F401,F403
from sml.data.releases import __all__  # noqa: F401
