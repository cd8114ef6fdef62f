"""Model plugins. Every model subclasses poemctl.models.base.PoemModel and so shares its parameter layout."""
