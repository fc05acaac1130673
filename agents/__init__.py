"""The agent of `textbook build`: from a goal to a textbook, every decision traced in the store.

build       ``run_build(store, BuildSpec(...))``: the entry point (the CLI's build and batch call it); sets up the
            store, sources, LLM gateway and DuckDB checkpointer, and resumes a killed run by its id
graph       ``BuildAgent``: the LangGraph graph (goal -> taxonomy -> queries -> search per point -> videos ->
            coverage -> assemble); nodes only, no per-video work
stages      the build's stages on the pipeline's contract (metadata judge, download, transcript judges,
            clips with rewrite and clip judge) and ``BuildLedger``; run by pipeline.flow.Flow, as ``process``
slots       the per-point slot rule (which candidates start), ``retry_failed``; deps: ``Deps``
llm         ``Gateway``: the one place a model is called (prompt files, response cache, validated answers,
            requests in flight per endpoint, re-sends honouring Retry-After, failures with a kind)
standin     an OpenAI-compatible stand-in server (fixed latency, injected faults) for tests and benchmarks
schemas     the pydantic answers the gateway validates; config: ``AgentConfig``; budget: ``BudgetTracker``
assign      which knowledge point each video serves; review: human review of the taxonomy and borderline judgments
local_llm, llama_server   the embedded llama.cpp server and its GGUF; interrupts: SIGINT/SIGTERM that keep paid answers
"""
