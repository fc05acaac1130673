"""The agent of `textbook build`: the LangGraph build graph (graph.py), the LLM gateway (llm.py),
video-to-knowledge-point assignment (assign.py), budgets, interrupts and the embedded model."""
