"""Stages: what joins the layers below — training a VQ-VAE level or a prior, encoding shards, codes files, the demo.

Nothing below imports a stage; the CLI imports one stage per command, inside the command.
"""
