"""Read a campaign and show it: status, summary, timeline, the HTML report, the node-type
table, the PG study and the kernel suite.
"""
