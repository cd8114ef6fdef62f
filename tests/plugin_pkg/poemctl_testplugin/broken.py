"""An entry point whose import fails, to test that poemctl names it and keeps working."""

raise ImportError("this plugin is broken on purpose")
