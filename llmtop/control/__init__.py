"""Things that change the world: launch spec, child supervisor, systemd unit, tuning.

Nothing in this package imports Textual.
"""
