"""What a campaign is, as data: the config, the kernel specs (kernel.yaml), the frozen record
of both, and ``new-kernel``.
"""
