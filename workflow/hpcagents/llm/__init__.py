"""The models: the pool of servers, one backend per server kind (OpenAI-compatible HTTP,
the file queue) behind one interface, the response cache, the servers' probe,
accounting, and the PM/PG agents' prompts.
"""
