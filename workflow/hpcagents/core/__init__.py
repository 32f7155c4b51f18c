"""The base every layer stands on: atomic, schema-validated JSON artifacts and the process tree
of a campaign.
"""
