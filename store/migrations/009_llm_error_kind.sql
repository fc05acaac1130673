-- Failed LLM calls say why (issue 10): invalid_output, timeout, rate_limited, server_error, bad_request
-- (the item failed), connection, refused, down, error (the endpoint is down), interrupted.
ALTER TABLE llm_calls ADD COLUMN error_kind VARCHAR;
