"""A plugin whose import fails, as a broken third-party package would."""

raise ImportError("cellscape_broken needs a library that is not installed (on purpose)")
