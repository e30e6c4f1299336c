"""DayDreaming: declarative LLM idea-generation experiments on Luigi."""

__version__ = "0.1.0"
