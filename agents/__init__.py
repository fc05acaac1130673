"""The LangGraph agent (issue 3): not built yet. Nothing here is used by `textbook process`."""
