"""The models: the pool of OpenAI-compatible servers (and the file queue), their probe,
accounting, and the PM/PG agents' prompts.
"""
